"""The ``birth`` command: parses arguments and dispatches to ``birth.commands``; nothing else."""
from __future__ import annotations

import argparse
import sys

from birth import commands
from birth.experiments import ORDER as RECIPE_ORDER
from birth.experiments.theory import NAMES as THEORY_NAMES
from birth.launching.options import add_arguments as add_launch_arguments
from birth.launching.plan import MAX_RUNS
from birth.launching.sweep import syntax_help
from birth.experiments.recipe import DEFAULT_FIRST_SEED, DEFAULT_HELD_OUT, DEFAULT_SCALE, DEFAULT_SEEDS, SCALES
from birth.measures.llc import LLCSettings
from birth.training.config import PRESETS, ConfigError
from birth.training.exits import EXIT_DAMAGED, EXIT_NO_SPACE, EXIT_USAGE, NoSpace, NoWholeCheckpoint
from birth.training.validation import config_fields_help

SCALE_HELP = ("laptop (default): every claim checked, 'all' in under an hour on 2 CPU cores (docs/laptop-scale.md); "
              "quick: a preview in minutes, too short for several claims; "
              "paper: the paper's sizes (batch 512, T = 256), meant for a GPU; tiny: seconds, a smoke test")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one stderr line with exit code 2, like config errors (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"birth: error: {message}; see {self.prog} --help\n")


def _train_epilog() -> str:
    rows = config_fields_help()
    width = max(len(k) for k, _, _ in rows)
    lines = ["configuration keys (KEY=VALUE; official names accepted verbatim, also data./model./optim. prefixes):"]
    lines += [f"  {k:<{width}}  {d:<12} {h}" for k, d, h in rows]
    lines.append(f"presets: {', '.join(PRESETS)}")
    return "\n".join(lines)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one run", epilog=_train_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train one run: birth train [--preset NAME] [KEY=VALUE ...] [--out DIR]")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data_args.k=5")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset (default: official defaults)")
    p.add_argument("--out", help="run directory (default: save_dir, else runs/<preset or 'run'>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in the output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--plot", action="store_true",
                   help="write the figures of the run when it ends (with --resume on a complete run: now)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads (default: OMP_NUM_THREADS, else the cores free at the start, 1 for small "
                        "models; --resume: the run's own)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (preset and overrides applied) as YAML, and exit")
    p.set_defaults(func=commands.cmd_train)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="train a grid of configs (inline or from a YAML spec) into one folder",
                       description="birth sweep [SPEC.yaml] [KEY=V1,V2,... ...] [--preset NAME] [--seeds N] "
                                   "[--first-seed S] [--out DIR]: one run per point of the grid and seed, on the "
                                   "launcher of birth reproduce (workers or Slurm, stacks, skip-done, resume)",
                       epilog=syntax_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="SPEC.yaml | KEY=VALUE[,VALUE...]",
                   help="a spec file and/or keys: one value sets the key in every run, several sweep it")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start every run from a preset (over the spec's)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per point (default: the spec's, else 1)")
    p.add_argument("--first-seed", type=int, default=None,
                   help="index of the first seed (default: the spec's, else 0); seed i sets seed = 42 + i, "
                        "init_seed = i, eval_seed = i")
    p.add_argument("--out", default="sweep_out", help="output folder (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are complete; train nothing")
    p.add_argument("--show-config", action="store_true", help="print the resolved config of every run (YAML); "
                                                               "train nothing")
    p.add_argument("--max-runs", type=int, default=MAX_RUNS,
                   help="refuse a grid of more runs than this, before planning it (default %(default)s)")
    add_launch_arguments(p)  # --jobs, --threads, --stack, --backend and the Slurm options, as birth reproduce
    p.set_defaults(func=commands.cmd_sweep)


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures of a run directory, or of a sweep by one key")
    p.add_argument("run_dir", metavar="RUN_OR_SWEEP")
    p.add_argument("--out", help="folder for the PNG files (default: RUN_OR_SWEEP/figures)")
    p.add_argument("--by", metavar="KEY", help="a sweep or reproduction output (or a folder of runs): one curve per "
                                               "value of KEY, mean and min-max over seeds (default: the first "
                                               "swept key)")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="with a sweep: a metric to draw, one panel each (repeatable; default: the in-context "
                        "accuracy and loss of the evaluation batch, with their floors)")
    p.set_defaults(func=commands.cmd_plot)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="sampler and training-step benchmarks (ratios side by side)")
    p.add_argument("what", nargs="?", choices=("all", "sampler", "step", "stack", "induction"), default="all")
    p.add_argument("--json", action="store_true", help="sampler: print one JSON object with tokens_per_s")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runs", type=int, default=6, help="stack: how many runs")
    p.add_argument("--steps", type=int, default=100, help="stack: steps per run")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper-readme",
                   help="stack: the runs' preset (default %(default)s, sized by --batch, --seq-len, --dim; "
                        "another keeps its own sizes, e.g. markov-quick, repeat-quick)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the process's own; the sampler ratio is meant for 1)")
    p.add_argument("--official", metavar="PATH",
                   help="induction: also time the official ihead_basic_main.py of this checkout of "
                        "albietz/transformer-birth on the same settings (needs omegaconf), side by side")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="induction: wall seconds each run may take to reach acc_end_test 0.9 (default 600)")
    p.add_argument("--official-workers", type=int, default=None, metavar="N",
                   help="induction --official: its num_data_workers (default: the official 60, at most the "
                        "cores beside the training process, at least 1)")
    p.set_defaults(func=commands.cmd_bench)


def _add_interop(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to another toolkit, or as Hugging Face checkpoints",
                       description="transformer-lens: one file for TransformerLens; hf: a folder per step, "
                                   "config.json and model.safetensors each (docs/interop.md)")
    p.add_argument("format", choices=("transformer-lens", "hf"), help="target")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True,
                   help="transformer-lens: the file to write (birth.analysis.transformer_lens.load_transformer_lens); "
                        "hf: the folder (birth.from_pretrained)")
    p.add_argument("--step", type=int, help="transformer-lens: checkpoint step (default: the newest whole one)")
    p.add_argument("--steps", default="all", help="hf: the checkpoint steps, all (the default) or S,S,...")
    p.set_defaults(func=commands.cmd_export)
    p = sub.add_parser("report", help="self-contained HTML report of a run or a reproduction output")
    p.add_argument("path", metavar="RUN_OR_OUT")
    p.add_argument("--out", help="HTML file to write (default: RUN_OR_OUT/report.html)")
    p.set_defaults(func=commands.cmd_report)


def _add_llc(sub) -> None:
    d = LLCSettings()
    p = sub.add_parser("llc", help="local learning coefficient at each checkpoint (devinterp's SGLD; the llc extra)",
                       description="Estimate the LLC of a run at each saved checkpoint on its own training loss "
                                   "(fresh batches of its task, only the parameters it trains), with devinterp's "
                                   "SGLD sampler; writes RUN/llc.csv, RUN/llc.json and RUN/figures/llc.png. "
                                   "Needs pip install 'birth[llc]'.")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--steps", help="checkpoint steps to measure, e.g. 100,300 (default: every saved checkpoint)")
    p.add_argument("--chains", type=int, default=d.chains, help="SGLD chains (default %(default)s)")
    p.add_argument("--draws", type=int, default=d.draws,
                   help="draws per chain, one SGLD step each (default %(default)s)")
    p.add_argument("--burnin", type=int, default=d.burnin,
                   help="SGLD steps before the first draw (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="SGLD step size epsilon (default %(default)s)")
    p.add_argument("--gamma", type=float, default=d.gamma, help="localization strength (default %(default)s)")
    p.add_argument("--nbeta", type=float, default=d.nbeta,
                   help="inverse temperature n*beta (default: m / ln m, devinterp's default_nbeta)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="sequences per SGLD batch, m (default: the run's batch size)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the chains' noise (default %(default)s)")
    p.add_argument("--out", help="folder for llc.csv, llc.json and figures/llc.png (default: RUN)")
    p.set_defaults(func=commands.cmd_llc)


def _add_patch(sub) -> None:
    p = sub.add_parser("patch", help="activation patching of a trained run on its task's natural corruption",
                       description="Copies one activation of a corrupted input's run into the clean run, per hook "
                                   "point, position and head, and measures how far the in-context metric moves; "
                                   "writes RUN/patching/patching.csv and a heatmap per layer (docs/interop.md).")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--steps", help="checkpoint steps: S,S,... or all (default: the newest whole checkpoint); with "
                                   "several, patching_over_training.png shows when each component carries the answer")
    p.add_argument("--sequence", type=int, default=0,
                   help="which informative sequence of the evaluation batch (default %(default)s)")
    p.add_argument("--points", default="all",
                   help="all (every hook point but the logits, the default), patterns (every attention pattern), or "
                        "comma-separated hook point names")
    p.add_argument("--out", help="folder for the table and figures (default: RUN/patching)")
    p.set_defaults(func=commands.cmd_patch)


def _add_reproduce(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="run the experiments of a paper figure, plot them and check the paper's claims",
        description="Expands a recipe into runs (one directory per distinct config, named by its hash), trains the "
                    "missing ones in parallel worker processes, then writes figures, CSV data and the claims table.",
        epilog="recipes: " + ", ".join(RECIPE_ORDER) + ", or MODULE:ATTR (a Recipe of your own; docs/api.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help=f"recipe: all, {', '.join(RECIPE_ORDER)} or MODULE:ATTR")
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
    p.add_argument("--profile", action="store_true",
                   help="write OUT/profile.md: where the wall time went, per recipe and phase (training steps, "
                        "each evaluation measure, theory computations, figures, claims)")
    add_launch_arguments(p)  # --jobs, --threads, --stack, --backend and the Slurm options, as birth sweep
    p.set_defaults(func=commands.cmd_reproduce)


def _add_theory(subparsers) -> None:
    """Adds the ``theory`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "theory", help="associative memories, Lemma 1, noisy inputs, Theorem 3's three gradient steps",
        description="Runs one theory experiment (or all); each writes NAME.csv, NAME.png, NAME.pdf and its "
                    "section of summary.md into --out.")
    p.add_argument("experiment", choices=THEORY_NAMES + ("all",))
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
    g.add_argument("--precision", choices=("float32", "float64"), default=None,
                   help="float32 (default, as published) or float64: near-ties of the step-size search at its "
                        "top (update norms up to 1e8) decided exactly, at about twice the time")
    g.add_argument("--step-norms", type=lambda s: tuple(None if x == "auto" else float(x) for x in s.split(",")),
                   default=None, help="three update norms, e.g. 30,300,1e4 ('auto': line search; default)")
    p.set_defaults(func=commands.cmd_theory)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="birth", description="Birth of a Transformer: task, models, probes, experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sweep(sub)
    _add_plot(sub)
    _add_bench(sub)
    _add_interop(sub)
    _add_llc(sub)
    _add_patch(sub)
    _add_theory(sub)
    _add_reproduce(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line. KEY=VALUE overrides may come before or after flags; any other
    leftover is an error of the subcommand, pointing to that subcommand's --help."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    unknown = [e for e in extras if not (takes_overrides and _is_override(e))]
    if unknown:  # only what is not an override: the overrides are valid words of the command
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if extras:
        args.overrides += extras
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"birth: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NoSpace as err:
        print(f"birth: error: {err}; free space, then run the command again", file=sys.stderr)
        return EXIT_NO_SPACE
    except NoWholeCheckpoint as err:
        print(f"birth: error: {err}", file=sys.stderr)
        return EXIT_DAMAGED


if __name__ == "__main__":
    sys.exit(main())
