"""Many jobs on this machine: worker processes (``LocalBackend``), and jobs of equal shapes trained
as one stack (``stack_units``, ``birth.launching.stacked``)."""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import itertools
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Optional, Sequence

from birth.launching import stopping
from birth.launching.jobs import (ERROR_FILE, Job, Result, train_job,
                                   record_failure, locked, prepare_run_dir, torch_threads, is_complete)
from birth.launching.stacked import StackKey, stack_key, train_stacked
from birth.training.config import ConfigError, from_dict
from birth.training.exits import NoSpace
from birth.training.runs import RunDir



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
                self._collect(pool, units, results, on_result)
            except stopping.Stopped as stop:
                guard.stopping = stop.signum  # a second Ctrl-C now waits with the first
                # the pool's processes: no public name for them (a dict pid -> Process since Python 3.2)
                processes = list((getattr(pool, "_processes", None) or {}).values())
                stopping.stop_workers(processes, shared, stop.signum)
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return results

    def _collect(self, pool: ProcessPoolExecutor, units: list[list[Job]], results: list, on_result) -> None:
        """Hands out one unit per free worker, and the next only once a result is collected: a
        worker never holds a queued unit that it could start after this process died."""
        pending = iter(units)
        futures = {pool.submit(execute_unit, unit, self.threads): unit
                   for unit in itertools.islice(pending, self.workers)}
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                unit = futures.pop(fut)
                try:
                    done = fut.result()
                except BrokenProcessPool as err:  # a worker died (killed, out of memory): record, go on
                    done = [record_failure(job, f"worker process died: {err}", 0.0) for job in unit]
                except Exception as err:  # noqa: BLE001 - anything the worker could not report itself
                    done = [record_failure(job, f"{type(err).__name__}: {err}", 0.0) for job in unit]
                results += [self._report(res, on_result) for res in done]
                following = next(pending, None)
                if following is not None:
                    futures[pool.submit(execute_unit, following, self.threads)] = following

    @staticmethod
    def _report(res: Result, on_result) -> Result:
        if on_result:
            on_result(res)
        return res


def stack_units(jobs: Sequence[Job], size: int, workers: int,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> list[list[Job]]:
    """The jobs in units of work: single jobs, or up to ``size`` jobs of one stack key trained as one
    stack. A key's jobs are dealt round-robin into as many stacks as keep every worker busy; the
    jobs that cannot stack train alone, and ``log`` says why, once per reason."""
    if size <= 1:
        return [[job] for job in jobs]
    groups: dict[Optional[str], list[Job]] = {}
    alone: dict[str, list[Job]] = {}
    for job in jobs:
        try:
            key = stack_key(from_dict(job.config))
        except ConfigError as err:  # a hand-made job: it fails alone, with this error
            key = StackKey(None, f"its config does not resolve ({err})")
        if key.key is None:
            alone.setdefault(key.why, []).append(job)
        else:
            groups.setdefault(key.key, []).append(job)
    for why, group in alone.items():
        log(f"birth: {len(group)} run(s) train alone, not in a stack: {why}")
    units = [[job] for group in alone.values() for job in group]
    for group in groups.values():
        n = max(min(workers, len(group)), -(-len(group) // size))
        units += [group[i::n] for i in range(n)]
    return units


def execute_unit(unit: Sequence[Job], threads: int = 1) -> list[Result]:
    """Trains one unit of work (``stack_units``); never raises for a failed run. In a worker of a
    stopped launch it starts nothing, and its process exits when the unit is saved (``stopping``)."""
    with stopping.unit():
        try:
            with torch_threads(threads):
                done = [train_job(unit[0])] if len(unit) == 1 else _execute_stack(unit)
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


def _execute_stack(unit: Sequence[Job]) -> list[Result]:
    t0 = time.perf_counter()
    results, todo = [], []
    try:
        with locked([job.run_dir for job in unit]):
            for job in sorted(unit, key=lambda j: j.run_dir):
                run = RunDir(job.run_dir)
                if is_complete(run.path):
                    results.append(Result(job, "cached", run.read_summary(), "", 0.0))
                else:
                    todo.append((job, prepare_run_dir(run)))
            if todo:
                summaries = train_stacked([from_dict(job.config) for job, _ in todo], [job.run_dir for job, _ in todo],
                                          [resume for _, resume in todo])
                seconds = time.perf_counter() - t0
                for (job, _), summary in zip(todo, summaries):
                    (Path(job.run_dir) / ERROR_FILE).unlink(missing_ok=True)
                    results.append(Result(job, summary["status"], summary, summary.get("reason", ""), seconds))
        return results
    except NoSpace as err:  # before the stack could start: nothing more can be written
        reported = {r.job.run_dir for r in results}
        return results + [Result(job, "no_space", {"status": "no_space", "reason": str(err)}, str(err),
                                 time.perf_counter() - t0) for job in unit if job.run_dir not in reported]
    except Exception:  # noqa: BLE001 - a failed stack is recorded, the other units carry on
        error, reported = traceback.format_exc(), {r.job.run_dir for r in results}
        seconds = time.perf_counter() - t0
        return results + [record_failure(job, error, seconds) for job in unit if job.run_dir not in reported]
