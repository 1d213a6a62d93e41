"""``birth reproduce NAME|all [--scale tiny|quick|laptop|paper] [--seeds N] [--first-seed S] [--held-out H]
[--jobs J] [--stack N] [--out DIR] [--show-config]``."""
from __future__ import annotations

import argparse

SCALE_HELP = ("laptop (default): every claim checked, 'all' within the hour on 2 CPU cores (docs/laptop-scale.md); "
              "quick: a preview in minutes, too short for several claims; "
              "paper: the paper's sizes (batch 512, T = 256), meant for a GPU; tiny: seconds, a smoke test")


def register(subparsers) -> None:
    from birth.experiments import all_recipes
    from birth.experiments.recipe import (
        DEFAULT_FIRST_SEED, DEFAULT_HELD_OUT, DEFAULT_SCALE, DEFAULT_SEEDS, SCALES)
    names = list(all_recipes())
    p = subparsers.add_parser(
        "reproduce", help="run the experiments of a paper figure, plot them and check the paper's claims",
        description="Expands a recipe into runs (one directory per distinct config, named by its hash), trains the "
                    "missing ones in parallel worker processes, then writes figures, CSV data and the claims table.",
        epilog="recipes: " + ", ".join(f"{n} ({r.figure})" for n, r in all_recipes().items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help=f"recipe: all, {', '.join(names)}")
    p.add_argument("--scale", default=DEFAULT_SCALE, choices=SCALES, help=SCALE_HELP)
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help="published seeds per configuration (default %(default)s): their values make the figures "
                        "and the claims table")
    p.add_argument("--first-seed", type=int, default=DEFAULT_FIRST_SEED,
                   help="index of the first seed (default %(default)s); seed i sets seed = 42 + i, init_seed = i "
                        "and eval_seed = i")
    p.add_argument("--held-out", type=int, default=DEFAULT_HELD_OUT,
                   help="held-out seeds after the published ones, judged by the same rules (default %(default)s; "
                        "a claim whose two sets disagree is INCONCLUSIVE)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="every run's training step: float32 (default) or bf16 autocast (probes stay float32; "
                        "use another --out than the float32 results)")
    p.add_argument("--out", default="reproduce_out", help="output folder (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are complete; train nothing")
    p.add_argument("--show-config", action="store_true",
                   help="print the resolved config of every condition the recipe trains at --scale (YAML); "
                        "train nothing")
    from birth.launching.options import add_arguments
    add_arguments(p)  # --jobs, --threads, --stack, --backend and the Slurm options, as birth sweep
    p.set_defaults(func=handler)


def handler(args) -> int:
    from birth.experiments.recipe import Seeds
    from birth.experiments.reproduce import reproduce, show_config
    seeds = Seeds.of(args.seeds, args.first_seed, args.held_out)
    if args.show_config:
        print(show_config(args.name, args.scale, seeds), end="")
        return 0
    from birth.launching.options import backend_from_args
    jobs = None
    if args.scale == "paper":
        import torch
        jobs = 1 if torch.cuda.is_available() else None
    backend = backend_from_args(args, default_jobs=jobs)
    try:
        report = reproduce(args.name, scale=args.scale, seeds=seeds, out=args.out,
                           backend=backend, dry_run=args.dry_run, precision=args.precision)
    except KeyboardInterrupt as stop:  # SIGINT or SIGTERM (birth.launching.stopping.Stopped)
        from birth.launching.local import report_stopped
        return report_stopped(stop)
    return report.exit_code
