"""Jobs: a resolved config trained into its own directory, named by a stable hash of that config,
so that a rerun finds finished work and skips it.

    jobs = [make_job(root, {"data_args.k": 5}, preset="quick")]
    results = run_jobs(jobs, LocalBackend(jobs=2))          # birth.launching.local

A backend only runs jobs (``Backend.run``); ``run_jobs`` does the bookkeeping around it:
deduplication, skipping completed runs, and turning failures into results. ``execute`` trains one
job in this process, holding its directory's lock (a local worker, a Slurm job).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from birth.launching import stopping
from birth.training.config import TrainConfig, flat_dict, from_dict, to_dict
from birth.training.exits import NoSpace
from birth.training.lock import clear_directory, directory_lock
from birth.training.loop import train
from birth.training.naming import config_hash, legacy_hash
from birth.training.runs import RunDir, atomic_write_bytes
from birth.training.validation import resolve_config



ERROR_FILE = "error.txt"
RESUMABLE = ("running", "interrupted", "no_space")


@dataclass(frozen=True)
class Job:
    """One run to make: a resolved config and the directory it trains into."""

    config: dict       # to_dict(TrainConfig): plain data, so that it crosses process boundaries
    run_dir: str
    label: str = ""    # who asked for it, e.g. "fig3/W_O2 frozen/seed 1" (not part of the hash)

    @property
    def key(self) -> str:
        return Path(self.run_dir).name


def make_job(root: str | Path, overrides: dict, preset: Optional[str] = None, label: str = "",
             warn=lambda line: print(line, file=sys.stderr), memo: Optional[dict] = None,
             existing: Optional[set] = None) -> Job:
    """Resolves (and validates) ``preset`` + ``overrides``; the run lives in ``root/<hash>``.
    ``memo``: the checks of one planning, shared by its jobs (``birth.training.validation.validate``);
    ``existing``: the names in ``root`` when the planning began (see ``run_dir_of``)."""
    cfg = resolve_config(preset, dict(overrides), warn, memo)
    return Job(config=to_dict(cfg), run_dir=str(run_dir_of(root, cfg, existing)), label=label)


def run_dir_of(root: str | Path, cfg: TrainConfig, existing: Optional[set] = None) -> Path:
    """``root/<config_hash>``, or the directory a run of ``cfg`` was saved in under its name of
    before (``birth.training.naming.legacy_hash``), so that existing runs are found, not retrained.
    ``existing``: the names in ``root`` (read once for many runs), else each is looked for."""
    root = Path(root)
    flat = flat_dict(cfg)
    name = config_hash(cfg, flat)
    if existing is not None and not existing:
        return root / name  # an empty or new folder holds no run of before
    if name in existing if existing is not None else (root / name).exists():
        return root / name
    old = legacy_hash(cfg, flat)
    return root / old if old and RunDir(root / old).holds_run() else root / name


@dataclass
class Result:
    """What became of a job. ``status``: completed, cached (complete before we started), failed,
    diverged or interrupted."""

    job: Job
    status: str
    summary: dict = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "cached")


class Backend(Protocol):
    """Runs jobs whose directories are not complete; returns one Result per job, in any order."""

    def run(self, jobs: Sequence[Job], on_result: Optional[Callable[[Result], None]] = None) -> list[Result]:
        ...


def is_complete(run_dir: str | Path) -> bool:
    return RunDir(run_dir).read_summary().get("status") == "completed"


def run_jobs(jobs: Sequence[Job], backend: Backend,
             on_result: Optional[Callable[[Result], None]] = None) -> list[Result]:
    """Runs the jobs that are not complete yet; returns one Result per distinct run directory."""
    unique: dict[str, Job] = {}
    for job in jobs:
        unique.setdefault(job.run_dir, job)
    results, todo = [], []
    for job in unique.values():
        if is_complete(job.run_dir):
            res = Result(job, "cached", RunDir(job.run_dir).read_summary())
            results.append(res)
            if on_result:
                on_result(res)
        else:
            todo.append(job)
    if todo:
        # longest first: the last worker to finish then waits least
        results += backend.run(sorted(todo, key=lambda j: -estimated_cost(j.config)), on_result)
    return results


def estimated_cost(config: dict) -> float:
    """Rough relative training cost of a config: steps x tokens per step x (width + length)."""
    try:
        d, m, o = config["data_args"], config["model_args"], config["optim_args"]
    except (KeyError, TypeError):
        return 0.0  # not a config: it will fail fast
    per_token = m["dim"] * (m["dim"] + d["seq_length"]) * max(1, m.get("n_layers", 2))
    return float(config["max_iters"]) * o["batch_size"] * d["seq_length"] * per_token


def record_failure(job: Job, error: str, seconds: float) -> Result:
    """Writes the error next to the run (error.txt, summary.json status 'failed') and returns it."""
    run = RunDir(job.run_dir)
    try:
        summary = run.read_summary()
    except (OSError, json.JSONDecodeError):
        summary = {}
    summary.update(status="failed", error=error.strip().splitlines()[-1] if error.strip() else "failed",
                   label=job.label, config=job.config)
    try:
        atomic_write_bytes(run.path / ERROR_FILE, error.encode())
        run.write_summary(summary)
    except OSError:
        pass
    return Result(job, "failed", summary, error, seconds)


def report_stopped(stop: BaseException, command: Optional[str] = None) -> int:
    """After a launch stopped by ``stop`` (``stopping.Stopped``, or Ctrl-C): prints the one line that
    says how to continue (``command``, default: this process's own command line) and returns the
    exit code, 130 for SIGINT, 143 for SIGTERM."""
    import shlex
    command = command or shlex.join(["birth", *sys.argv[1:]])
    print(f"birth: stopped by {str(stop) or 'SIGINT'}; finished runs are kept and interrupted ones resume from their "
          f"checkpoints; continue with: {command}", file=sys.stderr)
    return stopping.exit_code(stop)


def execute(job: Job, threads: int = 1) -> Result:
    """Trains one job (in a worker or in this process); never raises for a failed run."""
    with torch_threads(threads):
        return train_job(job)


def train_job(job: Job) -> Result:
    t0 = time.perf_counter()
    run = RunDir(job.run_dir)
    try:
        cfg = from_dict(job.config)
        # another process (a second `birth reproduce` on the same OUT) may be training this very run:
        # wait for it, then reuse what it made
        with locked([run.path]):
            if is_complete(run.path):
                return Result(job, "cached", run.read_summary(), "", time.perf_counter() - t0)
            resume = prepare_run_dir(run)
            summary = train(cfg, run.path, resume=resume, quiet=True)
            (run.path / ERROR_FILE).unlink(missing_ok=True)
        return Result(job, summary["status"], summary, summary.get("reason", ""), time.perf_counter() - t0)
    except NoSpace as err:  # before the run could start (its lock, its config): nothing more can be written
        return Result(job, "no_space", {"status": "no_space", "reason": str(err)}, str(err), time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 - a failed run is recorded, the others carry on
        return record_failure(job, traceback.format_exc(), time.perf_counter() - t0)


@contextlib.contextmanager
def locked(paths: Sequence[str | Path]):
    """Holds the locks of the run directories ``paths``, waiting for another process that trains
    one of them (a second ``birth reproduce`` on the same OUT); a stop during the wait raises
    ``stopping.Stopped`` (nothing written yet)."""
    with contextlib.ExitStack() as locks:
        with stopping.waiting():
            for path in sorted(str(p) for p in paths):  # one order for every process: no deadlock
                stop = stopping.launch_stopped()  # right before a lock: a dead launcher's run never starts
                if stop:
                    raise stopping.Stopped(stop)
                locks.enter_context(directory_lock(path, wait=True))
        stop = stopping.launch_stopped()
        if stop:  # the launch stopped during the wait: start nothing
            raise stopping.Stopped(stop)
        yield


@contextlib.contextmanager
def torch_threads(threads: int):
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def prepare_run_dir(run) -> bool:
    """Resume a run that stopped with a checkpoint (interrupted, killed, out of space) from it; start
    anything else that is not complete afresh. The caller holds the run directory's lock, so a run
    whose summary still says 'running' has no live writer."""
    if not run.holds_run():
        return False
    if run.read_summary().get("status") in RESUMABLE and run.latest_checkpoint() is not None:
        return True
    clear_directory(run.path)
    return False
