"""Runs on a Slurm cluster through submitit: one Slurm job per run, resumable end to end.

    backend = SlurmBackend("OUT/slurm", load_profile("gpu.yaml"))
    results = run_jobs(jobs, backend)

- Found, not remembered: each job is named after its run (``birth-<config hash>-<tag of the runs
  folder>``), so a later command (after the submitting shell died, or from another shell) finds the
  runs already queued or running with ``squeue`` and waits for those instead of submitting them
  again. Submitting holds a lock on OUT/slurm, so two commands never both submit one run; a job
  also holds a lock on its run while it trains, so a duplicate that slipped through trains nothing.
- Resumed, not restarted: a job trains through ``launch.execute``. SIGTERM (scancel, preemption)
  stops training at the next step with a checkpoint (summary 'interrupted'), and the next job of
  that run resumes from it. Before the time limit Slurm sends USR2 (submitit's ``--signal``): the
  job stops the same way and requeues itself (submitit's checkpointing), ``requeues`` times at most.
- Results come from the run directories: completed, failed (error.txt from the run, or the job's
  own stderr when it died before it could write one), diverged or interrupted.
- Logs: OUT/slurm/logs/<job id>_0_log.out|err, with each job's sbatch script beside them.
"""
from __future__ import annotations

import fcntl
import getpass
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from birth.training.config import ConfigError
from birth.launching.jobs import ERROR_FILE, Job, Result, record_failure, execute, is_complete
from birth.training.runs import RunDir
from birth.launching.slurm_profile import SlurmProfile
from birth.launching.slurm_profile import load_profile, options_from_args

ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "TIMEOUT", "SPECIAL_EXIT", "REVOKED"}
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD"}


def job_name(job: Job) -> str:
    """The Slurm job name of a run: its config hash and a tag of the folder it lives in."""
    where = hashlib.sha1(str(Path(job.run_dir).parent.resolve()).encode()).hexdigest()[:6]
    return f"birth-{job.key}-{where}"


def _slurm(args: list[str], timeout: float = 60) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def active_jobs(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """job name -> (job id, state) for this user's jobs of those names that have not ended."""
    if not names:
        return {}
    out = _slurm(["squeue", "-h", "-u", getpass.getuser(), "-n", ",".join(names), "-o", "%i|%j|%T"])
    found: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        job_id, _, rest = line.partition("|")
        name, _, state = rest.partition("|")
        if state and state not in ENDED and (name not in found or state == "RUNNING"):
            found[name] = (job_id.strip(), state.strip())
    return found


def final_state(job_id: str, tries: int = 5) -> str:
    """What sacct says became of a job (e.g. 'CANCELLED by 0', 'TIMEOUT'); '' where it cannot say.

    The accounting database may lag squeue by a moment: asks again while the job looks unfinished."""
    state = ""
    for _ in range(tries):
        try:
            state = " ".join(_slurm(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State"], timeout=30).split())
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            return ""
        if state.split(" ")[0] in ENDED:
            break
        time.sleep(0.5)
    return state


@contextmanager
def _flock(path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on ``path`` (made if missing); yields False if ``wait`` is off and it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _StopOnCheckpointSignal:
    """While a run trains, submitit's checkpoint signal (USR2) stops it at the next step, as SIGTERM does."""

    def __init__(self):
        self.signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        self.signalled = False
        self.previous = None

    def __enter__(self) -> "_StopOnCheckpointSignal":
        self.previous = signal.signal(self.signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(self.signum, self.previous)

    def _handle(self, signum, frame) -> None:
        self.signalled = True
        stop = signal.getsignal(signal.SIGTERM)  # train's handler while it trains
        if callable(stop):
            stop(signal.SIGTERM, frame)

    def requeue(self) -> None:
        """submitit's own handler: dumps ``checkpoint()``, runs ``scontrol requeue`` and exits."""
        if callable(self.previous):
            self.previous(self.signum, None)


@dataclass
class RunTask:
    """What one Slurm job runs: train one run (resuming it if it was interrupted), once at a time."""

    job: Job
    threads: int
    lock_dir: str

    def __call__(self) -> str:
        stop = _StopOnCheckpointSignal()
        with _flock(Path(self.lock_dir) / f"{self.job.key}.lock", wait=False) as held:
            if not held:
                print(f"birth: {self.job.run_dir} is being trained by another job; nothing to do", file=sys.stderr)
                return "busy"
            if is_complete(self.job.run_dir):
                return "cached"
            with stop:
                result = execute(self.job, self.threads)
        if result.status == "failed":
            print(result.error, file=sys.stderr)
        if stop.signalled and result.status == "interrupted":
            stop.requeue()
        return result.status

    def checkpoint(self):
        """submitit's checkpointing hook: requeue the same task (the run resumes from its checkpoint)."""
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self)


def require_slurm(option: str = "--backend slurm") -> None:
    """A one-line ConfigError where this machine cannot submit to Slurm."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError(f"{option}: needs submitit; install it with: pip install 'birth[slurm]'") from None
    missing = [c for c in ("sbatch", "squeue", "srun") if shutil.which(c) is None]
    if missing:
        raise ConfigError(f"{option}: {', '.join(missing)} not found on PATH; run on a Slurm login node "
                          "(or start a local one: eval \"$(scripts/local-slurm up)\")")


class SlurmBackend:
    """One Slurm job per run; waits for them, showing progress, and returns one Result per run.

    ``folder`` (OUT/slurm) holds the job logs, the submission lock and the runs' training locks.
    Stopping the wait (Ctrl-C) leaves the jobs to the cluster: the same command picks them up again.
    """

    workers = "slurm"

    def __init__(self, folder: str | Path, profile: Optional[SlurmProfile] = None, *, poll_s: float = 5.0,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr), check: bool = True):
        self.folder = Path(folder)
        self.profile = profile or SlurmProfile()
        self.poll_s = poll_s
        self.log = log
        if check:
            require_slurm()

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    def run(self, jobs: Sequence[Job], on_result: Optional[Callable[[Result], None]] = None) -> list[Result]:
        results: list[Result] = []

        def report(res: Result) -> None:
            results.append(res)
            if on_result:
                on_result(res)

        watch = self._submit_missing(jobs, report)
        self._wait(watch, report)
        return results

    def _submit_missing(self, jobs: Sequence[Job], report) -> dict[str, tuple[Job, str]]:
        """Under the submission lock: adopt the jobs already queued or running, submit the rest."""
        watch: dict[str, tuple[Job, str]] = {}
        submitted = 0
        with _flock(self.folder / "submit.lock", wait=False) as free:
            if not free:
                self.log(f"slurm: another command is submitting to {self.folder}; waiting for it")
        with _flock(self.folder / "submit.lock", wait=True):
            try:
                active = active_jobs([job_name(j) for j in jobs])
            except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
                raise ConfigError(f"--backend slurm: cannot list the queued jobs: {err}") from None
            executor = None
            for job in jobs:
                name = job_name(job)
                if name in active:
                    watch[name] = (job, active[name][0])
                elif is_complete(job.run_dir):
                    report(Result(job, "cached", RunDir(job.run_dir).read_summary()))
                else:
                    executor = executor or self._executor()
                    try:
                        watch[name] = (job, self._submit(executor, job))
                        submitted += 1
                    except Exception as err:  # noqa: BLE001 - sbatch refused it: that run fails, the others go on
                        why = "; ".join(line.removeprefix("sbatch: error: ") for line in str(err).splitlines()
                                        if line.strip()) or type(err).__name__
                        if not submitted:  # nothing went in: a profile the cluster refuses, not a failed run
                            raise ConfigError(f"--backend slurm: sbatch refused the first job: {why}") from None
                        report(record_failure(job, f"sbatch refused the job: {err}", 0.0))
        ids = sorted((i for _, i in watch.values()), key=lambda i: (len(i), i))
        self.log(f"slurm: {submitted} job(s) submitted, {len(watch) - submitted} already queued or running"
                 + (f" (job ids {', '.join(ids[:8])}{', ...' if len(ids) > 8 else ''})" if ids else "")
                 + f"; logs in {self.logs}")
        return watch

    def _executor(self):
        import submitit
        executor = submitit.SlurmExecutor(folder=self.logs, max_num_timeout=self.profile.requeues)
        executor.update_parameters(**self.profile.sbatch_parameters())
        return executor

    def _submit(self, executor, job: Job) -> str:
        executor.update_parameters(job_name=job_name(job))
        with redirect_stderr(io.StringIO()):  # submitit prints sbatch's errors; they are in the exception too
            return str(executor.submit(RunTask(job, self.profile.cpus, str(self.folder / "locks"))).job_id)

    def _wait(self, watch: dict[str, tuple[Job, str]], report) -> None:
        total, shown, last_shown = len(watch), None, 0.0
        try:
            while watch:
                try:
                    active = active_jobs(list(watch))
                except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
                    self.log(f"slurm: squeue failed ({err}); trying again")
                    time.sleep(max(self.poll_s, 5.0))
                    continue
                for name, (job, job_id) in list(watch.items()):
                    if name in active:
                        watch[name] = (job, active[name][0])  # a requeued or duplicate job: keep waiting
                    else:
                        del watch[name]
                        report(self._outcome(job, job_id))
                counts = (sum(s == "RUNNING" for _, s in active.values()), sum(s in QUEUED for _, s in active.values()))
                if watch and (counts != shown or time.monotonic() - last_shown > 300):
                    self.log(f"slurm: {counts[0]} running, {counts[1]} queued, {total - len(watch)}/{total} finished")
                    shown, last_shown = counts, time.monotonic()
                if watch:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self.log(f"slurm: stopped waiting; {len(watch)} job(s) go on in the cluster: rerun the same command to "
                     "pick them up, or scancel them")
            raise

    def _outcome(self, job: Job, job_id: str) -> Result:
        """What became of a run whose job has ended, read from its run directory."""
        run = RunDir(job.run_dir)
        try:
            summary = run.read_summary()
        except (OSError, ValueError):
            summary = {}
        status, seconds = summary.get("status"), float(summary.get("wall_seconds") or 0.0)
        if status == "completed":
            return Result(job, status, summary, "", seconds)
        if status == "failed":
            error = run.path / ERROR_FILE
            return Result(job, status, summary, error.read_text() if error.exists() else summary.get("error", ""),
                          seconds)
        if status == "diverged":
            return Result(job, status, summary, summary.get("reason", ""), seconds)
        state = final_state(job_id) or "ended"
        if status == "interrupted":
            return Result(job, status, summary, f"Slurm job {job_id} {state}: stopped at step {summary.get('step')} "
                          "with a checkpoint; rerun to resume it", seconds)
        log = self.logs / f"{job_id}_0_log.err"
        tail = log.read_text(errors="replace").strip().splitlines()[-20:] if log.exists() else []
        why = f"Slurm job {job_id} {state} before the run finished (log: {log})"
        return record_failure(job, "\n".join(tail + [why]), seconds)


def backend_from_args(args) -> SlurmBackend:
    """The backend of ``birth reproduce --backend slurm``: logs and locks in OUT/slurm."""
    if args.jobs is not None:
        raise ConfigError("--jobs: not with --backend slurm (every run is its own Slurm job)")
    if args.threads != 1:
        raise ConfigError("--threads: with --backend slurm, use --cpus (a run's threads are its job's CPUs)")
    profile = load_profile(args.slurm_profile, options_from_args(args))
    return SlurmBackend(Path(args.out) / "slurm", profile, check=not args.dry_run)
