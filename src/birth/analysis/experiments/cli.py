"""``birth reproduce NAME|all [--scale tiny|quick|laptop|paper] [--seeds N] [--jobs J] [--stack N] [--out DIR] [--show-config]``."""
from __future__ import annotations

import argparse
import sys

from birth.running.config import ConfigError

SCALE_HELP = ("laptop (default): every claim checked, 'all' within the hour on 2 CPU cores (docs/laptop-scale.md); "
              "quick: a preview in minutes, too short for several claims; "
              "paper: the paper's sizes (batch 512, T = 256), meant for a GPU; tiny: seconds, a smoke test")


def register(subparsers) -> None:
    from birth.analysis.experiments import recipes
    from birth.analysis.experiments.recipe import DEFAULT_SCALE, DEFAULT_SEEDS, SCALES
    names = list(recipes())
    p = subparsers.add_parser(
        "reproduce", help="run the experiments of a paper figure, plot them and check the paper's claims",
        description="Expands a recipe into runs (one directory per distinct config, named by its hash), trains the "
                    "missing ones in parallel worker processes, then writes figures, CSV data and the claims table.",
        epilog="recipes: " + ", ".join(f"{n} ({r.figure})" for n, r in recipes().items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help=f"recipe: all, {', '.join(names)}")
    p.add_argument("--scale", default=DEFAULT_SCALE, choices=SCALES, help=SCALE_HELP)
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per configuration (default %(default)s)")
    p.add_argument("--jobs", type=int, default=None,
                   help="parallel worker processes (default: CPUs / threads per run; 1 at paper scale on a GPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default %(default)s)")
    p.add_argument("--stack", type=int, default=None, metavar="N",
                   help="train up to N runs of equal shapes as one stacked model, each still in its own directory "
                        f"(default: {STACK_ON_CUDA} with CUDA; 1, no stacks, on a CPU; docs/runs.md)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="every run's training step: float32 (default) or bf16 autocast (probes stay float32; "
                        "use another --out than the float32 results)")
    p.add_argument("--out", default="reproduce_out", help="output folder (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are complete; train nothing")
    p.add_argument("--show-config", action="store_true",
                   help="print the resolved config of every condition the recipe trains at --scale (YAML); train nothing")
    p.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="local: worker processes here (default); slurm: one Slurm job per run, through submitit; "
                        "rerunning the command picks up the jobs still queued or running (docs/cluster.md)")
    from birth.running.slurm_profile import add_arguments
    add_arguments(p)
    p.set_defaults(func=handler)


# Runs per stack on a GPU: the paper scale's 66 runs fill the device in stacks rather than one by one.
STACK_ON_CUDA = 8


def _stack(args) -> int:
    if args.stack is not None:
        if args.stack < 1:
            raise ConfigError(f"--stack: must be >= 1, got {args.stack}")
        return args.stack
    import torch
    return STACK_ON_CUDA if torch.cuda.is_available() else 1


def handler(args) -> int:
    from birth.analysis.experiments.reproduce import reproduce, show_config
    if args.show_config:
        print(show_config(args.name, args.scale), end="")
        return 0
    from birth.running.launch import LocalBackend
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, got {args.jobs}")
    if args.threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
    jobs = args.jobs
    if jobs is None and args.scale == "paper":
        import torch
        jobs = 1 if torch.cuda.is_available() else None
    if args.backend == "slurm":
        if args.stack not in (None, 1):
            raise ConfigError("--stack: stacks train on the local backend; Slurm runs one job per run")
        from birth.running.slurm import backend_from_args
        backend = backend_from_args(args)
    else:
        from birth.running.slurm_profile import reject_slurm_options
        reject_slurm_options(args)
        backend = LocalBackend(jobs=jobs, threads_per_run=args.threads, stack=_stack(args))
    try:
        report = reproduce(args.name, scale=args.scale, seeds=args.seeds, out=args.out,
                           backend=backend, dry_run=args.dry_run, precision=args.precision)
    except KeyboardInterrupt:
        print("birth: reproduce interrupted; finished runs are kept and interrupted ones resume from their "
              "checkpoint: rerun the same command to continue", file=sys.stderr)
        return 130
    return report.exit_code
