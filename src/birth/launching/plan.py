"""One planner and one launcher for every command that trains many runs. ``birth sweep`` plans a
grid; ``birth reproduce`` plans each recipe's conditions (a recipe is a sweep plus a figure and
rules) and then checks its claims. Both go through here:

    planned = plan(Sweep(preset="quick", grid={"data_args.k": [1, 3]}, seeds=2), out)
    show_config(planned, "sweep")                          # --show-config
    results = launch(planned, backend, "sweep", out)       # --dry-run, progress, failures

``plan`` resolves and validates every run's config and names its directory (``OUT/runs/<hash>``);
``launch`` announces what is done and what is to train, trains the rest on the backend (local
workers, stacks or Slurm) with one progress line per run, and names each failure in one line.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from birth.launching.jobs import Backend, Job, Result, is_complete, make_job, run_jobs
from birth.launching.options import progress
from birth.training.config import ConfigError, seed_overrides
from birth.training.exits import EXIT_NO_SPACE

Log = Callable[[str], None]


def stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class Sweep:
    """What a launch trains: ``preset`` + ``base`` + a condition + one point of the axes + seed i,
    for every condition, point and seed. ``conditions`` are (label, overrides) pairs (a recipe's
    curves); without them (None) there is one, unnamed. ``name``, when set, heads every run's label
    (``NAME/CONDITION/seed S``: a recipe's runs)."""

    preset: Optional[str] = None
    base: dict = field(default_factory=dict)     # canonical key -> value, set in every run
    grid: dict = field(default_factory=dict)     # key -> values: the product
    zips: tuple = ()                             # groups {key: values} of equal lengths, paired by position
    seeds: int = 1
    first_seed: int = 0
    origin: tuple = ()                           # the command-line words that define it (spec file, items)
    conditions: Optional[tuple] = None           # (label, overrides) pairs; None: one, unnamed
    name: str = ""

    @property
    def swept(self) -> list[str]:
        return list(self.grid) + [k for group in self.zips for k in group]

    def count(self) -> int:
        """How many runs it makes, computed without making them."""
        n = len(self.conditions) if self.conditions is not None else 1
        for values in self.grid.values():
            n *= len(values)
        for group in self.zips:
            n *= len(next(iter(group.values())))
        return n * self.seeds

    def points(self) -> list[dict]:
        """Every combination of swept values (grid keys vary slowest, in the order given)."""
        axes = [[{key: v} for v in values] for key, values in self.grid.items()]
        axes += [[{k: vals[i] for k, vals in group.items()} for i in range(len(next(iter(group.values()))))]
                 for group in self.zips]
        return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


@dataclass(frozen=True)
class Planned:
    """One run of a launch: its swept values (as resolved in its config), seed index, condition
    (a recipe's curve; '' for a sweep) and job."""

    values: dict
    seed: int
    job: Job
    condition: str = ""


def label_of(sweep: Sweep, condition: str, values: dict, seed: int) -> str:
    if sweep.name:
        return f"{sweep.name}/{condition}/seed {seed}"
    return " ".join(f"{k}={v}" for k, v in values.items()) + (" " if values else "") + f"seed {seed}"


MAX_RUNS = 100_000  # a sweep plans at most this many runs unless told otherwise (--max-runs)


def plan(sweep: Sweep, out: str | Path, log: Log = stderr, max_runs: int = MAX_RUNS) -> list[Planned]:
    """Every run of the sweep, each config resolved and validated; a one-line ConfigError for the
    first bad one (naming the key and the run), and for two points of a grid that are one run (the
    same config; two conditions may share one: it trains once). A sweep of more than ``max_runs`` runs
    is refused in one line before any is made."""
    total = sweep.count()
    if total > max_runs:
        raise ConfigError(f"sweep: this grid makes {total:,} runs, more than --max-runs {max_runs:,}; sweep fewer "
                          "values, or raise --max-runs")
    planned, seen, said, memo = [], {}, set(), {}
    runs = Path(out) / "runs"
    existing = set(os.listdir(runs)) if runs.is_dir() else set()  # read once: a sweep may plan 10^5 runs

    def warn(line: str) -> None:  # a warning the runs share is said once
        if line not in said:
            said.add(line)
            log(line)
    conditions = (("", {}),) if sweep.conditions is None else sweep.conditions
    for (condition, overrides), point in itertools.product(conditions, sweep.points()):
        for seed in range(sweep.first_seed, sweep.first_seed + sweep.seeds):
            try:
                job = make_job(runs, {**seed_overrides(seed), **sweep.base, **overrides, **point},
                               sweep.preset, warn=warn, memo=memo, existing=existing)
            except ConfigError as err:
                raise ConfigError(f"{err} (run {label_of(sweep, condition, point, seed)})") from None
            values = {k: resolved(job.config, k) for k in point}  # as resolved: 0.01 whether typed 1e-2 or 0.01
            job = dataclasses.replace(job, label=label_of(sweep, condition, values, seed))
            if job.run_dir in seen and sweep.conditions is None:  # two curves of a recipe may share a run
                raise ConfigError(f"sweep: runs '{seen[job.run_dir]}' and '{job.label}' have the same config "
                                  f"({job.run_dir}); is a value given twice?")
            seen[job.run_dir] = job.label
            planned.append(Planned(values, seed, job, condition))
    return planned


def resolved(config: dict, key: str):
    """The value of dotted ``key`` in a nested config dict."""
    group, _, name = key.rpartition(".")
    return config[group][name] if group else config[name]


def show_config(planned: Sequence[Planned], title: str) -> str:
    """The resolved config of every planned run, as YAML documents headed by its label and directory."""
    parts = [f"# {title}: {len(planned)} runs"]
    for p in planned:
        body = yaml.safe_dump(p.job.config, sort_keys=False).rstrip()
        parts.append(f"--- # {p.job.label} ({p.job.run_dir})\n{body}")
    return "\n".join(parts) + "\n"


def command_line(words: Sequence[str]) -> str:
    """``birth WORDS...``, quoted for a shell: the command that makes (and, rerun, continues) a launch."""
    return "birth " + shlex.join(str(w) for w in words)


@dataclass
class Report:
    """What a launch did: its exit code, each run's result, and what it wrote (a sweep's index, a
    reproduction's figures and claims)."""

    exit_code: int
    results: list[Result] = field(default_factory=list)
    index: Optional[Path] = None
    files: list[Path] = field(default_factory=list)
    claims: list = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def trained(self) -> int:
        """Runs this command trained (or tried to: failed ones included)."""
        return sum(r.status != "cached" for r in self.results)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.ok]


def exit_code(results: Sequence[Result]) -> int:
    """4 when a run stopped for lack of space (free space, then run the command again: it resumes),
    1 when another failed, 0 when every run completed."""
    if any(r.status == "no_space" for r in results):
        return EXIT_NO_SPACE
    return 1 if any(not r.ok for r in results) else 0


def launch(planned: Sequence[Planned], backend: Backend, what: str, runs: Path, *, dry_run: bool = False,
           log: Log = stderr, status: str = "") -> Optional[list[Result]]:
    """Announces the distinct runs (``what``: 'sweep', 'fig3 at scale laptop', ...), lists them with
    ``dry_run`` (and returns None), else trains those not complete on ``backend`` with one progress
    line each and one line per failure; returns one Result per distinct run."""
    distinct = {p.job.run_dir: p.job for p in planned}
    done = {d for d in distinct if is_complete(d)}
    log(f"birth: {what}: {len(distinct)} runs ({len(done)} already complete, {len(distinct) - len(done)} to train) "
        f"with {getattr(backend, 'workers', '?')} worker(s); runs in {runs}")
    if status:
        log(f"birth: {status}")
    if dry_run:
        for d, job in distinct.items():
            log(f"  {'done' if d in done else 'todo'}  {d}  {job.label}")
        return None
    jobs = list(distinct.values())
    results = run_jobs(jobs, backend, progress(jobs, log))
    for r in results:
        if not r.ok:
            log(f"birth: run failed: {r.job.label} ({r.job.run_dir}): {r.status}: "
                f"{(r.error.strip().splitlines() or [''])[-1]}")
    full = [r for r in results if r.status == "no_space"]
    if full:
        log(f"birth: {len(full)} run(s) stopped for lack of space ({', '.join(r.job.label for r in full)}); "
            "free space, then run the same command again: they resume from their checkpoints")
    return results
