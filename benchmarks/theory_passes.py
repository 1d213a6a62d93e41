"""The theory's three-steps pieces with layer 2 at the in-context targets only, against the naive pass
over every position (the logits of all B x T positions, then the targets picked out), one thread,
the two alternately in this process; prints the wall seconds, their ratio and the largest
differences of the rows they publish.

    python benchmarks/theory_passes.py [--pieces ideal:256 coded:1024] [--seed 20] [--repeats 1]

Each piece is what ``birth reproduce theory`` computes in one worker: every order at width d, the
model as coded (greedy line search) or idealised (steps 2 and 3 searched together).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from birth.experiments.theory.computations import three_steps_part
from birth.experiments.theory.three_steps import ReducedModel

TARGETS_ONLY = ReducedModel.target_logits


def timed(ideal: bool, d: int, seed: int, naive: bool) -> tuple[float, list[dict]]:
    ReducedModel.target_logits = ReducedModel.every_position_logits if naive else TARGETS_ONLY
    try:
        t0 = time.perf_counter()
        rows = three_steps_part(ideal, d, seed, log=lambda s: None)
        return time.perf_counter() - t0, rows
    finally:
        ReducedModel.target_logits = TARGETS_ONLY


def differences(ours: list[dict], naive: list[dict]) -> str:
    same_steps = [(r["order"], r["step"], r["update_norm"]) for r in ours] == \
        [(r["order"], r["step"], r["update_norm"]) for r in naive]
    acc = max(abs(a["acc"] - b["acc"]) for a, b in zip(ours, naive))
    loss = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(ours, naive))
    return f"same step sizes: {same_steps}; max |acc diff| {acc:.2g}; max relative loss diff {loss:.2g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pieces", nargs="+", default=["ideal:256", "coded:1024"],
                   help="KIND:D, KIND 'ideal' or 'coded' (default %(default)s)")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)  # as in the recipe's workers
    for piece in args.pieces:
        kind, d = piece.split(":")
        ideal = {"ideal": True, "coded": False}[kind]
        ours, naive = [], []
        for _ in range(args.repeats):
            t, rows = timed(ideal, int(d), args.seed, naive=False)
            ours.append(t)
            t, naive_rows = timed(ideal, int(d), args.seed, naive=True)
            naive.append(t)
        a, b = statistics.median(ours), statistics.median(naive)
        print(f"three-steps {kind} d={d} seed {args.seed}: targets only {a:.1f} s, every position {b:.1f} s: "
              f"{b / a:.2f}x; {differences(rows, naive_rows)}", flush=True)


if __name__ == "__main__":
    main()
