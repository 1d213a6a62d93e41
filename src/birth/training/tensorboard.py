"""TensorBoard output of a run (``tensorboard=True``; optional extra ``birth[tensorboard]``).

Owns RUN/tensorboard/: every numeric value of each metrics.jsonl record as a scalar (tag = the
metric key, step = ``iter``), and at each evaluation the attention of every layer (head 1) on one
fixed evaluation sequence as an image ``attention/layer{i}`` (white 0 .. black 1). On resume, events
after the resumed step are purged, so the file holds one value per step as metrics.jsonl does.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from birth.training.config import ConfigError
from birth.tasks.base import pick_sequence


class TensorBoardLog:
    """Writes the records of one run; ``log(record)`` after each evaluation, ``close()`` at the end."""

    def __init__(self, run_path: Path, setup, start_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError("tensorboard=True needs the tensorboard package "
                              f"(pip install 'birth[tensorboard]'): {err}") from None
        self.path = run_path / "tensorboard"
        self.writer = SummaryWriter(str(self.path), purge_step=start_step or None)
        self.setup = setup
        batch = setup.eval_batches()["eval"]
        length = min(64, batch.x.shape[1])
        self.x = batch.x[pick_sequence(batch, length)][None, :length]

    def log(self, record: dict) -> None:
        step = int(record["iter"])
        for key, value in record.items():
            if (key != "iter" and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value)):
                self.writer.add_scalar(key, value, step)
        with torch.no_grad():
            _, patterns = self.setup.model(self.x, return_attn=True)
        for i, attn in enumerate(patterns):
            self.writer.add_image(f"attention/layer{i + 1}", 1.0 - attn[0, 0].float().cpu()[None], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_log(cfg, run_path: Path, setup, start_step: int = 0) -> Optional[TensorBoardLog]:
    """A TensorBoardLog when ``cfg.tensorboard``, else None."""
    return TensorBoardLog(Path(run_path), setup, start_step) if cfg.tensorboard else None


def read_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] read back from the event files under ``path`` with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
