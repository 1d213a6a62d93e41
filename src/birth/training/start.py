"""``birth.train``: one run trained into a directory from Python, with the checks and the lock that
``birth train`` takes (``birth.commands``), and a user's callbacks and hooks."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from birth.training.config import ConfigError, TrainConfig
from birth.training.lock import check_free, clear_directory, directory_lock
from birth.training.loop import train as train_run
from birth.training.runs import RunDir
from birth.training.validation import resolve_config, validate


def train_into(config, out: str | Path, *, preset: Optional[str] = None, callbacks=(), hooks: Optional[dict] = None,
               resume: bool = False, overwrite: bool = False, quiet: bool = True) -> dict:
    """Validates the config, takes the run directory's lock, trains; returns the run's summary."""
    cfg = config if isinstance(config, TrainConfig) else resolve_config(preset, dict(config or {}))
    validate(cfg)
    run = RunDir(out)
    run.check_writable()
    check_free(run.path)
    if run.holds_run() and not (overwrite or resume):
        raise ConfigError(f"train: {run.path} already holds a run; pass resume=True or overwrite=True")
    with directory_lock(run.path):
        if run.holds_run() and overwrite:
            clear_directory(run.path)
        return train_run(cfg, run.path, resume=resume and run.holds_run(), quiet=quiet, callbacks=callbacks,
                         hooks=hooks)
