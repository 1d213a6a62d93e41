"""Documented config fields: every key of a config (the run's, the model's, each task's) carries its
one-line description, which ``birth train --help`` lists, and, where it has a closed set of values,
its ``choices``."""
from __future__ import annotations

from dataclasses import field
from typing import Any


def documented(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its one-line description (and e.g. ``choices``) in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})
