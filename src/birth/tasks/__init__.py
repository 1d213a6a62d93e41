"""The task registry, keyed by ``data_args.task``.

Every module of this package that defines a ``Task`` subclass with a ``name`` is a task: adding
one is adding a module (``birth.tasks.triggers.task``, ``markov``, ``repeat``). A task of your own
outside the package is named ``MODULE:CLASS`` in the config (``data_args.task=mylab.tasks:Parity``),
which worker processes import too, or registered in this process with ``register``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Optional

import torch

from birth.tasks.base import Batch, Task, TaskArgs, stream_generator, STREAMS  # noqa: F401

_REGISTRY: dict[str, type[Task]] = {}
_SCANNED = False


class UnknownTask(ValueError):
    """A ``data_args.task`` that names no task."""


def register(cls: type[Task]) -> type[Task]:
    """Registers a Task subclass under ``cls.name`` (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a task needs a name")
    _REGISTRY[cls.name] = cls
    return cls


def _scan() -> None:
    """Registers the task classes of every module of this package (once per process)."""
    global _SCANNED
    if _SCANNED:
        return
    _SCANNED = True
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Task) and value.name
                    and value.__module__.startswith(module.__name__)):
                _REGISTRY.setdefault(value.name, value)


def names() -> list[str]:
    _scan()
    return sorted(_REGISTRY, key=lambda n: (n != "triggers", n))


def task_class(name: str) -> type[Task]:
    """The Task class of ``name``: a registered name, or ``MODULE:CLASS``."""
    _scan()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise UnknownTask(f"cannot import {name!r}: {err}") from None
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise UnknownTask(f"{name!r} is not a birth.tasks.Task subclass")
        return cls
    raise UnknownTask(f"unknown task {name!r}; choose from {', '.join(names())} or MODULE:CLASS")


def args_class(name: str) -> type:
    """The dataclass of the ``data_args`` of task ``name``."""
    return task_class(name).Args


def make_task(args: TaskArgs, device: Optional[torch.device | str] = "cpu") -> Task:
    """The training distribution of ``args.task`` with those arguments, on ``device``."""
    return task_class(args.task)(args, device)
