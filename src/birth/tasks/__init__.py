"""The task registry (``TASKS``), keyed by ``data_args.task``.

Each built-in task is a module of this package that registers its ``Task`` subclass (the paper's
``triggers``, ``markov``, ``repeat``): adding one is adding a module. A task of your own is named
``MODULE:CLASS`` in the config (``data_args.task=mylab.tasks:Parity``), which worker processes and
Slurm jobs import for themselves, or registered with ``TASKS.register(name, cls)`` in a module that
the config's ``plugins`` key imports in every process. Its ``data_args.*`` keys are checked once
the task is known, with the same one-line errors as the built-in ones.
"""
from __future__ import annotations

from typing import Optional

import torch

from birth.plugins import Registry, UnknownPlugin
from birth.tasks.base import Batch, Task, TaskArgs, stream_generator, STREAMS  # noqa: F401

UnknownTask = UnknownPlugin  # a data_args.task that names no task


def _is_task(item) -> None:
    if not (isinstance(item, type) and issubclass(item, Task)):
        raise TypeError("not a birth.tasks.Task subclass")


TASKS = Registry("task", builtins="birth.tasks", check=_is_task, first=("triggers",))


def register(cls: type[Task]) -> type[Task]:
    """Registers a Task subclass under ``cls.name`` (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a task needs a name")
    return TASKS.register(cls.name, cls)


def names() -> list[str]:
    return TASKS.names()


def task_class(name: str) -> type[Task]:
    """The Task class of ``name``: a registered name, or ``MODULE:CLASS``."""
    return TASKS.get(name)


def args_class(name: str) -> type:
    """The dataclass of the ``data_args`` of task ``name``."""
    return task_class(name).Args


def make_task(args: TaskArgs, device: Optional[torch.device | str] = "cpu") -> Task:
    """The training distribution of ``args.task`` with those arguments, on ``device``."""
    return task_class(args.task)(args, device)
