"""What the progress measures of the workbench cost: one default-scale run trained with every metric
function, and the same run without the new ones (the KL to each strategy, the ICL score, the head
scores, the loss by position), alternately, in this process; prints the wall times and their ratio.

    python benchmarks/measures_cost.py [--recipe fig3] [--condition "all trained"] [--steps 300] [--repeats 3]

The baseline is the same trainer with those functions left out of the list (and the strategies'
probabilities not computed), so the difference is exactly their cost.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from birth.experiments import all_recipes
from birth.experiments.recipe import PILOT_SEEDS
from birth.training.config import seed_overrides
from birth.training import evaluation as E
from birth.training import loop as T
from birth.training.validation import resolve_config

NEW = (E.strategies, E.in_context_score, E.heads)


class WithoutMeasures(E.Evaluator):
    """The evaluator of before the progress measures: no strategies' probabilities, no new functions."""

    def __init__(self, setup, callbacks=(), metrics=tuple(m for m in E.METRICS if m not in NEW)):
        super().__init__(dataclasses.replace(setup, cfg=dataclasses.replace(setup.cfg, eval_fixed_batch=False)),
                         callbacks, metrics)
        self.setup = setup  # the evaluation batch still evaluated: only the strategies are skipped


def _strip_positions(ev):
    ev.vectors.clear()


def timed(cfg, evaluator_class, extra=()) -> float:
    T.Evaluator = evaluator_class
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            T.train(cfg, Path(tmp) / "run", quiet=True, callbacks=extra)
            return time.perf_counter() - t0
    finally:
        T.Evaluator = E.Evaluator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fig3")
    p.add_argument("--condition", default="all trained")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    overrides = {**all_recipes()[a.recipe].conditions("laptop")[a.condition], **seed_overrides(PILOT_SEEDS),
                 "max_iters": a.steps}
    cfg = resolve_config(None, overrides)
    times = {"with": [], "without": []}
    for _ in range(a.repeats):
        times["with"].append(timed(cfg, E.Evaluator))
        times["without"].append(timed(cfg, WithoutMeasures, (_strip_positions,)))
    w, wo = (statistics.median(times[k]) for k in ("with", "without"))
    print(f"{a.recipe} / {a.condition}, {a.steps} steps, eval every {cfg.eval_delta}, {a.threads} thread(s), "
          f"median of {a.repeats}")
    print(f"  every metric:                {w:7.1f} s")
    print(f"  without the progress measures: {wo:5.1f} s")
    print(f"  the measures cost {100 * (w / wo - 1):+.1f}% of the run's wall time")


if __name__ == "__main__":
    main()
