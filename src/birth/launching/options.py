"""The launcher's command-line options, shared by every command that trains many runs
(``birth reproduce``, ``birth sweep``): local workers (``--jobs``, ``--threads``, ``--stack``) or
``--backend slurm`` with its profile options, and the backend built from them.

    add_arguments(parser)                  # on the subcommand's parser
    backend = backend_from_args(args)      # after parsing: LocalBackend or SlurmBackend
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from birth.training.config import ConfigError
from birth.launching.jobs import Backend, Job, Result, is_complete
from birth.launching.local import LocalBackend
from birth.launching.slurm import backend_from_args as slurm_backend
from birth.launching.slurm_profile import add_arguments as add_slurm_arguments, reject_slurm_options

# Runs per stack on a GPU: many runs of equal shapes fill the device in stacks rather than one by one.
STACK_ON_CUDA = 8


def add_arguments(parser) -> None:
    """--jobs, --threads, --stack, --backend and the Slurm options (``slurm_profile.add_arguments``)."""
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel worker processes (default: CPUs / threads per run; birth reproduce at paper "
                             "scale on a GPU: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default %(default)s)")
    parser.add_argument("--stack", type=int, default=None, metavar="N",
                        help="train up to N runs of equal shapes as one stacked model, each still in its own "
                             f"directory (default: {STACK_ON_CUDA} with CUDA; 1, no stacks, on a CPU; docs/runs.md)")
    parser.add_argument("--backend", choices=("local", "slurm"), default="local",
                        help="local: worker processes here (default); slurm: one Slurm job per run, through "
                             "submitit; rerunning the command picks up the jobs still queued or running "
                             "(docs/cluster.md)")
    add_slurm_arguments(parser)


def stack_size(requested: Optional[int]) -> int:
    """``--stack``: as given (>= 1), else ``STACK_ON_CUDA`` with CUDA and 1 (no stacks) on a CPU."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--stack: must be >= 1, got {requested}")
        return requested
    import torch
    return STACK_ON_CUDA if torch.cuda.is_available() else 1


def backend_from_args(args, default_jobs: Optional[int] = None) -> Backend:
    """The backend the options ask for; ``default_jobs`` stands in for a ``--jobs`` not given.
    Every bad option is a one-line ConfigError naming it, raised before anything starts."""
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, got {args.jobs}")
    if args.threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
    if args.backend == "slurm":
        if args.stack not in (None, 1):
            raise ConfigError("--stack: stacks train on the local backend; Slurm runs one job per run")
        return slurm_backend(args)
    reject_slurm_options(args)
    jobs = args.jobs if args.jobs is not None else default_jobs
    return LocalBackend(jobs=jobs, threads_per_run=args.threads, stack=stack_size(args.stack))


def progress(jobs: Sequence[Job], log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
             ) -> Callable[[Result], None]:
    """A ``run_jobs`` callback that logs each trained run as it ends: [i/n] label: status in seconds (acc)."""
    todo = sum(not is_complete(d) for d in {j.run_dir for j in jobs})
    counter = {"n": 0}

    def report(res: Result) -> None:
        if res.status == "cached":
            return
        counter["n"] += 1
        summary = res.summary or {}
        key = summary.get("transition", {}).get("metric", "eval_acc_end")  # the task's in-context accuracy
        acc = summary.get("final_metrics", {}).get(key)
        detail = f"{key} {acc:.3f}" if isinstance(acc, float) else (res.error.strip().splitlines() or [""])[-1]
        log(f"  [{counter['n']}/{todo}] {res.job.label}: {res.status} in {res.seconds:.1f}s ({detail})")
    return report
