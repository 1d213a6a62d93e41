"""Running many runs: each job is a resolved config trained into its own directory, named by a
stable hash of that config, so that a rerun finds finished work and skips it.

    jobs = [make_job(root, {"data_args.k": 5}, preset="quick")]
    results = run_jobs(jobs, LocalBackend(jobs=2))

A backend only runs jobs (``Backend.run``); ``run_jobs`` does the bookkeeping around it:
deduplication, skipping completed runs, and turning failures into results. ``LocalBackend`` runs
them in worker processes on this machine; a cluster backend can stand behind the same interface.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from birth.training.config import TrainConfig, from_dict, to_dict
from birth.training.lock import clear_directory, directory_lock
from birth.training.naming import config_hash, legacy_hash
from birth.launching import stopping
from birth.launching.stacked import stack_key, train_stacked
from birth.training.loop import train
from birth.training.runs import RunDir, atomic_write_bytes
from birth.training.validation import resolve_config

ERROR_FILE = "error.txt"
# a run that stopped with its checkpoints intact: killed (summary still 'running'), interrupted, or out of space
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


def make_job(root: str | Path, overrides: dict, preset: Optional[str] = None, label: str = "") -> Job:
    """Resolves (and validates) ``preset`` + ``overrides``; the run lives in ``root/<hash>``."""
    cfg = resolve_config(preset, dict(overrides))
    return Job(config=to_dict(cfg), run_dir=str(run_dir_of(root, cfg)), label=label)


def run_dir_of(root: str | Path, cfg: TrainConfig) -> Path:
    """``root/<config_hash>``, or the directory a run of ``cfg`` was saved in under its name of
    before (``birth.training.naming.legacy_hash``), so that existing runs are found, not retrained."""
    path = Path(root) / config_hash(cfg)
    old = legacy_hash(cfg)
    if not path.exists() and old and RunDir(Path(root) / old).holds_run():
        return Path(root) / old
    return path


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


def default_workers(threads_per_run: int = 1) -> int:
    """As many workers as the CPUs this process may use can take without oversubscribing threads."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, threads_per_run))


class LocalBackend:
    """Worker processes on this machine (``spawn``: no torch state is inherited by fork).

    ``jobs=1`` with ``in_process=True`` trains in this process instead (no start-up cost; tests).
    """

    def __init__(self, jobs: Optional[int] = None, threads_per_run: int = 1, in_process: bool = False,
                 stack: int = 1):
        self.threads = max(1, threads_per_run)
        self.workers = jobs if jobs else default_workers(self.threads)
        self.in_process = in_process
        self.stack = max(1, stack)  # at most this many runs of equal shapes per stacked training

    def run(self, jobs: Sequence[Job], on_result: Optional[Callable[[Result], None]] = None) -> list[Result]:
        """Trains the units of ``jobs``. SIGINT/SIGTERM raise ``stopping.Stopped`` once every run in
        progress is saved (checkpoint, status ``interrupted``) and no other has started."""
        units = stack_units(jobs, self.stack, self.workers)
        with stopping.launching() as guard:
            if self.in_process or self.workers == 1 and len(units) <= 1:
                return self._run_here(units, on_result)
            return self._run_pool(units, guard, on_result)

    def _run_here(self, units: list[list[Job]], on_result) -> list[Result]:
        # a unit that a signal stopped raises stopping.Stopped (stopping.Guard.unit): no unit after it starts
        return [self._report(res, on_result) for unit in units for res in execute_unit(unit, self.threads)]

    def _run_pool(self, units: list[list[Job]], guard: "stopping.Guard", on_result) -> list[Result]:
        import multiprocessing
        results: list[Result] = []
        ctx = multiprocessing.get_context("spawn")
        with stopping.pool_link(ctx) as (shared, initargs):
            pool = ProcessPoolExecutor(max_workers=min(self.workers, len(units)), mp_context=ctx,
                                       initializer=stopping.init_worker, initargs=initargs)
            try:
                futures = {pool.submit(execute_unit, unit, self.threads): unit for unit in units}
                self._collect(futures, results, on_result)
            except stopping.Stopped as stop:
                guard.stopping = stop.signum  # a second Ctrl-C now waits with the first
                # the pool's processes: no public name for them (a dict pid -> Process since Python 3.2)
                processes = list((getattr(pool, "_processes", None) or {}).values())
                stopping.stop_workers(processes, shared, stop.signum)
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return results

    def _collect(self, futures: dict, results: list, on_result) -> None:
        from concurrent.futures.process import BrokenProcessPool
        for fut in as_completed(futures):
            unit = futures[fut]
            try:
                done = fut.result()
            except BrokenProcessPool as err:  # a worker died (killed, out of memory): record, go on
                done = [_failed(job, f"worker process died: {err}", 0.0) for job in unit]
            except Exception as err:  # noqa: BLE001 - anything the worker could not report itself
                done = [_failed(job, f"{type(err).__name__}: {err}", 0.0) for job in unit]
            results += [self._report(res, on_result) for res in done]

    @staticmethod
    def _report(res: Result, on_result) -> Result:
        if on_result:
            on_result(res)
        return res


def _failed(job: Job, error: str, seconds: float) -> Result:
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


def stack_units(jobs: Sequence[Job], size: int, workers: int) -> list[list[Job]]:
    """The jobs in units of work: single jobs, or up to ``size`` jobs of one stack key trained as one
    stack. A key's jobs are dealt round-robin into as many stacks as keep every worker busy."""
    if size <= 1:
        return [[job] for job in jobs]
    groups: dict[Optional[str], list[Job]] = {}
    for job in jobs:
        try:
            key = stack_key(from_dict(job.config))
        except Exception:  # noqa: BLE001 - not a valid config: it trains alone, and fails there with its error
            key = None
        groups.setdefault(key, []).append(job)
    units = [[job] for job in groups.pop(None, [])]
    for group in groups.values():
        n = max(min(workers, len(group)), -(-len(group) // size))
        units += [group[i::n] for i in range(n)]
    return units


def execute_unit(unit: Sequence[Job], threads: int = 1) -> list[Result]:
    """Trains one unit of work (``stack_units``); never raises for a failed run. In a worker of a
    stopped launch it starts nothing, and its process exits when the unit is saved (``stopping``)."""
    with stopping.unit():
        try:
            with _torch_threads(threads):
                done = [_execute(unit[0])] if len(unit) == 1 else _execute_stack(unit)
        except stopping.Stopped as stop:  # out of a lock wait, before anything was written
            guard = stopping.current()
            if guard is None or guard.launcher:
                raise
            return [Result(job, "interrupted", {}, f"stopped by {stop} before it started") for job in unit]
        stop = _stopping_signal(done)
        if stop:  # the training loop took the signal itself: is the whole launch stopping?
            stopping.settle(stop)
        return done


def _stopping_signal(results: Sequence[Result]) -> int:
    """The signal that interrupted one of ``results`` (0: none did)."""
    for res in results:
        name = res.summary.get("signal") if res.status == "interrupted" else None
        if isinstance(name, str) and isinstance(getattr(signal, name, None), int):
            return int(getattr(signal, name))
    return 0


def report_stopped(stop: BaseException, command: Optional[str] = None) -> int:
    """After a launch stopped by ``stop`` (``stopping.Stopped``, or Ctrl-C): prints the one line that
    says how to continue (``command``, default: this process's own command line) and returns the
    exit code, 130 for SIGINT, 143 for SIGTERM."""
    import shlex
    command = command or shlex.join(["birth", *sys.argv[1:]])
    print(f"birth: stopped by {str(stop) or 'SIGINT'}; finished runs are kept and interrupted ones resume from their "
          f"checkpoints; continue with: {command}", file=sys.stderr)
    return stopping.exit_code(stop)


def _execute_stack(unit: Sequence[Job]) -> list[Result]:
    t0 = time.perf_counter()
    results, todo = [], []
    try:
        with _locked([job.run_dir for job in unit]):
            for job in sorted(unit, key=lambda j: j.run_dir):
                run = RunDir(job.run_dir)
                if is_complete(run.path):
                    results.append(Result(job, "cached", run.read_summary(), "", 0.0))
                else:
                    todo.append((job, _prepare(run)))
            if todo:
                summaries = train_stacked([from_dict(job.config) for job, _ in todo], [job.run_dir for job, _ in todo],
                                          [resume for _, resume in todo])
                seconds = time.perf_counter() - t0
                for (job, _), summary in zip(todo, summaries):
                    (Path(job.run_dir) / ERROR_FILE).unlink(missing_ok=True)
                    results.append(Result(job, summary["status"], summary, summary.get("reason", ""), seconds))
        return results
    except Exception:  # noqa: BLE001 - a failed stack is recorded, the other units carry on
        error, reported = traceback.format_exc(), {r.job.run_dir for r in results}
        return results + [_failed(job, error, time.perf_counter() - t0) for job in unit if job.run_dir not in reported]


@contextlib.contextmanager
def _locked(paths: Sequence[str | Path]):
    """Holds the locks of the run directories ``paths``, waiting for another process that trains
    one of them (a second ``birth reproduce`` on the same OUT); a stop during the wait raises
    ``stopping.Stopped`` (nothing written yet)."""
    with contextlib.ExitStack() as locks:
        with stopping.waiting():
            for path in sorted(str(p) for p in paths):  # one order for every process: no deadlock
                locks.enter_context(directory_lock(path, wait=True))
        stop = stopping.launch_stopped()
        if stop:  # the launch stopped during the wait: start nothing
            raise stopping.Stopped(stop)
        yield


@contextlib.contextmanager
def _torch_threads(threads: int):
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def execute(job: Job, threads: int = 1) -> Result:
    """Trains one job (in a worker or in this process); never raises for a failed run."""
    with _torch_threads(threads):
        return _execute(job)


def _execute(job: Job) -> Result:
    t0 = time.perf_counter()
    run = RunDir(job.run_dir)
    try:
        cfg = from_dict(job.config)
        # another process (a second `birth reproduce` on the same OUT) may be training this very run:
        # wait for it, then reuse what it made
        with _locked([run.path]):
            if is_complete(run.path):
                return Result(job, "cached", run.read_summary(), "", time.perf_counter() - t0)
            resume = _prepare(run)
            summary = train(cfg, run.path, resume=resume, quiet=True)
            (run.path / ERROR_FILE).unlink(missing_ok=True)
        return Result(job, summary["status"], summary, summary.get("reason", ""), time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 - a failed run is recorded, the others carry on
        return _failed(job, traceback.format_exc(), time.perf_counter() - t0)


def _prepare(run) -> bool:
    """Resume a run that stopped with a checkpoint (interrupted, killed, out of space) from it; start
    anything else that is not complete afresh. The caller holds the run directory's lock, so a run
    whose summary still says 'running' has no live writer."""
    if not run.holds_run():
        return False
    if run.read_summary().get("status") in RESUMABLE and run.latest_checkpoint() is not None:
        return True
    clear_directory(run.path)
    return False
