"""Plug-ins by name: what a config or a command names (a task, a metric, an intervention kind, a
recipe) is found in a ``Registry``, by the name it was registered under, or as ``MODULE:ATTR``,
which any process imports for itself: worker processes and Slurm jobs find a user's plug-in from
the config alone.

    TASKS = Registry("task", "data_args.task")
    TASKS.register("parity", ParityTask)
    TASKS.get("mylab.tasks:Parity")       # imports mylab.tasks, returns its Parity

A registry may be given ``builtins``: a package whose modules are imported (once, on first use) so
that what they register at import time is known; adding a built-in is adding a module there (or,
for a module, a line in it).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Optional


class UnknownPlugin(ValueError):
    """A name that is neither registered nor an importable ``MODULE:ATTR``; one line."""


def import_attr(spec: str, what: str) -> Any:
    """The attribute ``ATTR`` of module ``MODULE`` for ``spec`` = ``MODULE:ATTR``."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise UnknownPlugin(f"{what} {spec!r}: expected a registered name or MODULE:ATTR")
    try:
        found = importlib.import_module(module)
    except ImportError as err:
        raise UnknownPlugin(f"{what} {spec!r}: cannot import {module!r} ({err})") from None
    try:
        return getattr(found, attr)
    except AttributeError:
        raise UnknownPlugin(f"{what} {spec!r}: module {module!r} has no {attr!r}") from None


class Registry:
    """Named plug-ins of one kind (``what``: 'task', 'metric', ...), with ``check`` applied to
    each one found (raising TypeError with the reason, e.g. 'not a Task subclass')."""

    def __init__(self, what: str, builtins: Optional[str] = None,
                 check: Optional[Callable[[Any], None]] = None, first: tuple[str, ...] = ()):
        self.what, self.builtins, self.check, self.first = what, builtins, check, first
        self._items: dict[str, Any] = {}
        self._loaded = builtins is None

    def register(self, name: str, item: Any = None):
        """Registers ``item`` under ``name``; without ``item``, a decorator."""
        if not name or ":" in name:
            raise ValueError(f"{self.what} name {name!r}: a non-empty name without ':'")
        if item is None:
            return lambda obj: self.register(name, obj)
        self._items[name] = item
        return item

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.builtins)
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):  # a module: itself alone
            importlib.import_module(f"{self.builtins}.{info.name}")

    def names(self) -> list[str]:
        self._load()
        rank = {name: i for i, name in enumerate(self.first)}
        return sorted(self._items, key=lambda n: (rank.get(n, len(rank)), n))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def get(self, name: str) -> Any:
        """The plug-in ``name``: registered, or ``MODULE:ATTR``; UnknownPlugin (one line) otherwise."""
        self._load()
        if name in self._items:
            return self._items[name]
        if ":" not in name:
            raise UnknownPlugin(f"unknown {self.what} {name!r}; choose from {', '.join(self.names())} "
                                "or MODULE:ATTR")
        item = import_attr(name, self.what)
        if self.check is not None:
            try:
                self.check(item)
            except TypeError as err:
                raise UnknownPlugin(f"{self.what} {name!r}: {err}") from None
        return item
