"""``birth theory capacity|lemma|noisy|three-steps|all``: run the theory experiments into a folder."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

NAMES = ("capacity", "lemma", "noisy", "three-steps")


def register(subparsers) -> None:
    """Adds the ``theory`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "theory", help="associative memories, Lemma 1, noisy inputs, Theorem 3's three gradient steps",
        description="Runs one theory experiment (or all); each writes NAME.csv, NAME.png, NAME.pdf and its "
                    "section of summary.md into --out.")
    p.add_argument("experiment", choices=NAMES + ("all",))
    p.add_argument("--out", default="theory_out", help="output folder (default: theory_out/)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in a minute or two")
    p.add_argument("--dims", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="comma-separated widths d (default: per experiment, up to 1024)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    g = p.add_argument_group("three-steps (Theorem 3) settings")
    g.add_argument("--seq-length", type=int, default=None, help="T (default 64)")
    g.add_argument("--k", type=int, default=None, help="number of triggers K (default 3)")
    g.add_argument("--random-triggers", action="store_true", help="random triggers (default: fixed, most frequent)")
    g.add_argument("--allow-repeat", action="store_true", help="allow output == trigger (self-loop sequences)")
    g.add_argument("--corpus", choices=("shakespeare", "uniform"), default=None, help="token statistics")
    g.add_argument("--n-seqs", type=int, default=None, help="sequences per population-gradient estimate (4096)")
    g.add_argument("--criterion", choices=("loss", "acc"), default=None,
                   help="line search of the model as coded: minimise the held-out loss (default) or maximise "
                        "its accuracy (the idealised model chooses its step sizes jointly, for the accuracy)")
    g.add_argument("--step-norms", type=lambda s: tuple(None if x == "auto" else float(x) for x in s.split(",")),
                   default=None, help="three update norms, e.g. 30,300,1e4 ('auto': line search; default)")
    p.set_defaults(func=main)


def _three_step_overrides(args: argparse.Namespace) -> dict:
    over = {"seq_length": args.seq_length, "k": args.k, "corpus": args.corpus, "n_seqs": args.n_seqs,
            "step_norms": args.step_norms, "criterion": args.criterion}
    over = {k: v for k, v in over.items() if v is not None}
    if args.random_triggers:
        over["fixed_triggers"] = False
    if args.allow_repeat:
        over["no_repeat"] = False
    return over


def main(args: argparse.Namespace) -> int:
    """Runs the chosen experiment(s); returns the exit code."""
    from birth.experiments.theory.computations import run_experiment  # matplotlib only when a command runs

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = NAMES if args.experiment == "all" else (args.experiment,)
    for name in names:
        start = time.time()
        kwargs = {"seed": args.seed, "quick": args.quick}
        if name in ("capacity", "noisy", "three-steps") and args.dims:
            kwargs["dims"] = args.dims
        if name == "three-steps":
            kwargs.update(_three_step_overrides(args))
        run_experiment(name, out, **kwargs)
        print(f"[theory] {name}: {time.time() - start:.0f} s -> {out / (name + '.png')}",
              flush=True)
    print(f"[theory] summary: {out / 'summary.md'}")
    return 0
