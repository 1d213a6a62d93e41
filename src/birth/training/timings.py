"""Where a run's wall time goes, by phase (summary.json's ``profile``; ``birth reproduce --profile``
adds them up per recipe): sampling the training batch, the training step, each evaluation
measure, checkpoints, and the start-up (the task, its strategies and floors, the model)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class Timings:
    """Seconds per phase, added up over a run (a resumed run starts counting again)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}
