"""`birth reproduce RECIPE` against the same runs trained one by one, as a loop of `birth train`
commands would (each its own process, with the thread count `birth train` chooses), side by side
on this machine: both wall times from empty folders, and their ratio.

    python benchmarks/one_by_one.py fig4 [--scale laptop] [--seeds 3] [--out DIR]

``--out DIR`` keeps both folders (DIR/together: what `birth reproduce` wrote, claims included;
DIR/alone: the runs trained one by one); it must not exist yet, so that both start empty.

Issue 9 asks `birth reproduce all` to be at least 2x faster than its runs one by one; this is
that comparison for any recipe (`all`: 67 minutes on 2 cores). Recipes of computations
only (theory) have no runs to compare.
"""
from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from birth.experiments.recipe import Output
from birth.experiments.reproduce import plan, resolve
from birth.training.config import from_dict
from birth.training.naming import non_default


def _seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def train_commands(name: str, scale: str, seeds: int, root: Path) -> list[list[str]]:
    """One `birth train` command line per distinct run of ``name``, as `birth reproduce` plans them."""
    commands, seen = [], set()
    for planned in plan(resolve(name), scale, seeds, Output(root / "plan")).values():
        for job in (p.job for p in planned):
            if job.run_dir in seen:  # a run shared by two recipes trains once, as in `birth reproduce`
                continue
            seen.add(job.run_dir)
            cfg = from_dict(job.config)  # its task first: the task's own keys are read once it is known
            keys = {"data_args.task": cfg.data_args.task, **non_default(cfg)}
            overrides = [f"{k}={v}" for k, v in keys.items()]
            commands.append([sys.executable, "-m", "birth", "train", *overrides, "--quiet",
                             "--out", str(root / "alone" / Path(job.run_dir).name)])
    return commands


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--scale", default="laptop")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="keep both folders here (default: a temporary one)")
    a = p.parse_args(argv)
    if a.out is not None and a.out.exists():
        print(f"one_by_one: --out {a.out}: exists; both timings start from empty folders", file=sys.stderr)
        return 2
    with contextlib.nullcontext(str(a.out)) if a.out else tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        commands = train_commands(a.recipe, a.scale, a.seeds, root)
        if not commands:
            print(f"one_by_one: {a.recipe} trains no runs", file=sys.stderr)
            return 2
        together = _seconds([sys.executable, "-m", "birth", "reproduce", a.recipe, "--scale", a.scale,
                             "--seeds", str(a.seeds), "--out", str(root / "together")])
        alone = sum(_seconds(cmd) for cmd in commands)
    print(f"{a.recipe} at scale {a.scale}, {a.seeds} seeds: {len(commands)} runs")
    print(f"  birth reproduce (its workers, figures and claims included) {together:8.1f} s wall")
    print(f"  the same runs one by one (birth train each)                 {alone:8.1f} s wall")
    print(f"  ratio: {alone / together:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
