"""The ``birth`` command: parses arguments and dispatches; no logic of its own."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from birth.training.config import PRESETS, ConfigError
from birth.training.exits import EXIT_NO_SPACE, EXIT_USAGE, NoSpace


class _Parser(argparse.ArgumentParser):
    """Usage errors as one stderr line with exit code 2, like config errors (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"birth: error: {message}; see {self.prog} --help\n")


def _train_epilog() -> str:
    from birth.training.validation import config_fields_help
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
    p.set_defaults(func=cmd_train)


def _run_dir(args, cfg) -> Path:
    if args.out:
        return Path(args.out)
    if cfg.save_dir:
        return Path(cfg.root_dir) / cfg.save_dir
    return Path("runs") / (args.preset or "run")


def cmd_train(args) -> int:
    from birth.training.lock import check_free, clear_directory, directory_lock
    from birth.training.runs import RunDir
    from birth.training.loop import train
    from birth.training.validation import resolve_config, validate
    if args.resume:
        run = RunDir(args.resume)
        if not run.holds_run():
            raise ConfigError(f"--resume: {args.resume} holds no run (no config.yaml)")
        if args.overrides or args.preset or args.out or args.overwrite:
            raise ConfigError("--resume: takes no overrides, --preset, --out or --overwrite; "
                              "the run's own config.yaml and directory are used")
        cfg = run.read_config()
        validate(cfg)
        if args.print_config:
            return _print_config(cfg)
        check_free(run.path, "--resume")  # not while another process trains it
        before = run.read_summary()
        if before.get("status") == "completed":
            print(f"birth: {run.path} is already complete", file=sys.stderr)
            return _plot(run.path) if args.plot else 0
        # the thread count of the run so far, unless told otherwise: float sums stay in the same order
        _set_threads(args.threads or before.get("threads"), cfg)
        with directory_lock(run.path, what="--resume"):
            summary = train(cfg, run.path, resume=True, quiet=args.quiet)
    else:
        cfg = resolve_config(args.preset, args.overrides)
        if args.print_config:
            return _print_config(cfg)
        run = RunDir(_run_dir(args, cfg))
        run.check_writable()
        check_free(run.path)
        if run.holds_run() and not args.overwrite:
            raise ConfigError(f"--out: {run.path} already holds a run; use --resume {run.path} to continue it "
                              "or --overwrite to replace it")
        _set_threads(args.threads, cfg)
        with directory_lock(run.path):
            if run.holds_run():  # --overwrite
                clear_directory(run.path)
            if getattr(cfg.data_args, "k", None) == 0:  # the paper's task only
                print("birth: note: data_args.k=0 (the official default) means no triggers", file=sys.stderr)
            summary = train(cfg, run.path, resume=False, quiet=args.quiet)
    fm = summary.get("final_metrics", {})
    if summary["status"] == "completed":
        print(f"birth: {run.path}: {summary['steps']} steps in {summary['wall_seconds']:.1f}s; "
              f"{_accuracy(fm, run.read_task())}")
        if args.plot:
            _plot(run.path)
    elif args.plot:
        print(f"birth: no plots: the run ended with status {summary['status']!r}; "
              f"birth train --resume {run.path} --plot draws them once it completes", file=sys.stderr)
    return summary["exit_code"]


def _set_threads(requested, cfg) -> None:
    import torch
    from birth.training.threads import choose_threads
    if requested is not None and int(requested) < 1:
        raise ConfigError(f"--threads: must be >= 1, got {requested}")
    work = cfg.optim_args.batch_size * cfg.data_args.seq_length * cfg.model_args.dim ** 2
    threads, _ = choose_threads(requested, work)
    torch.set_num_threads(threads)


def _print_config(cfg) -> int:
    from birth.training.config import dump_yaml
    print(dump_yaml(cfg), end="")
    return 0


def _plot(run_dir: Path) -> int:
    from birth.analysis.plots import plot_run
    from birth.training.runs import RunDir
    from birth.training.wandb_log import log_figures
    if not RunDir(run_dir).read_metrics():
        print(f"birth: no plots: {run_dir} has no metrics yet", file=sys.stderr)
        return 1
    paths = plot_run(run_dir)
    for path in paths:
        print(f"birth: wrote {path}")
    log_figures(run_dir, paths)  # to the run's W&B run, when its config sets wandb
    return 0


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _accuracy(fm: dict, task: dict) -> str:
    """The final in-context accuracy (``headline_accuracy``) with its loss on the fixed evaluation
    batch, then the paper task's induction and W_O2 probes, or another task's best induction head."""
    from birth.analysis.plots import metric_names
    from birth.training.loop import headline_accuracy
    names = metric_names(task)["in_context"]
    key = headline_accuracy(fm, names["acc"])
    text = (f"{names['acc']} (eval batch) {_fmt(fm.get(key))}, {names['loss']} {_fmt(fm.get('eval_' + names['loss']))}"
            if key.startswith("eval_") else f"{key} {_fmt(fm.get(key))}")
    if "wo1_acc" in fm:
        return f"{text}, score2_acc {_fmt(fm.get('score2_acc'))}, wo1_acc {_fmt(fm.get('wo1_acc'))}"
    return f"{text}, head_induction_max {_fmt(fm.get('head_induction_max'))}"


def _add_sweep(sub) -> None:
    from birth.launching.options import add_arguments
    from birth.launching.sweep import syntax_help
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
    add_arguments(p)  # --jobs, --threads, --stack, --backend and the Slurm options, as birth reproduce
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from birth.launching import sweep
    from birth.launching.options import backend_from_args
    spec = sweep.from_command_line(args.overrides, args.preset, args.seeds, args.first_seed)
    if args.show_config:
        print(sweep.show_config(spec, args.out), end="")
        return 0
    backend = backend_from_args(args)
    try:
        report = sweep.run_sweep(spec, args.out, backend, dry_run=args.dry_run)
    except KeyboardInterrupt as stop:  # SIGINT or SIGTERM, as birth reproduce
        from birth.launching.local import report_stopped
        return report_stopped(stop, sweep.command_line(spec, args.out))
    return report.exit_code


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
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    from birth.analysis.plots import plot_run
    from birth.training.runs import RunDir
    from birth.training.wandb_log import log_figures
    if args.by is not None or not RunDir(args.run_dir).holds_run():
        from birth.analysis.sweep_plots import plot_sweep
        for path in plot_sweep(args.run_dir, args.by, args.metric, args.out):
            print(path)
        return 0
    if args.metric:
        raise ConfigError("--metric: draws a sweep, with --by KEY; birth plot RUN draws the figures of one run")
    paths = plot_run(args.run_dir, args.out)
    for path in paths:
        print(path)
    log_figures(args.run_dir, paths)  # to the run's W&B run, when its config sets wandb
    return 0


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
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from birth import bench
    return bench.main(args)


def _add_interop(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to another toolkit")
    p.add_argument("format", choices=("transformer-lens",), help="target toolkit")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True,
                   help="file to write (load it with birth.analysis.transformer_lens.load_transformer_lens)")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("report", help="self-contained HTML report of a run or a reproduction output")
    p.add_argument("path", metavar="RUN_OR_OUT")
    p.add_argument("--out", help="HTML file to write (default: RUN_OR_OUT/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_export(args) -> int:
    from birth.analysis.run import load_run
    from birth.analysis.transformer_lens import save_transformer_lens
    run = load_run(args.run_dir)
    print(save_transformer_lens(run.model(args.step), args.out, run.vocab))
    return 0


def cmd_report(args) -> int:
    from birth.analysis.report import write_report
    print(write_report(args.path, args.out))
    return 0


def _add_llc(sub) -> None:
    from birth.analysis.llc import LLCSettings
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
    p.set_defaults(func=cmd_llc)


def cmd_llc(args) -> int:
    from birth.analysis.llc import LLCSettings, run_llc
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()] if args.steps else None
    except ValueError:
        raise ConfigError(f"--steps: {args.steps!r} is not a comma-separated list of steps") from None
    settings = LLCSettings(chains=args.chains, draws=args.draws, burnin=args.burnin, lr=args.lr, gamma=args.gamma,
                           nbeta=args.nbeta, batch_size=args.batch_size, seed=args.seed)
    for path in run_llc(args.run_dir, settings, steps, args.out, log=lambda s: print(s, file=sys.stderr)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="birth", description="Birth of a Transformer: task, models, probes, experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sweep(sub)
    _add_plot(sub)
    _add_bench(sub)
    _add_interop(sub)
    _add_llc(sub)
    for module in ("birth.experiments.theory.theory_cli", "birth.experiments.reproduce_cli"):
        try:
            __import__(module, fromlist=["register"]).register(sub)
        except ModuleNotFoundError as err:
            if err.name not in (module, module.rsplit(".", 1)[0]):
                raise
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
    if extras:
        if isinstance(getattr(args, "overrides", None), list) and all(map(_is_override, extras)):
            args.overrides += extras
        else:
            _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extras)}")
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


if __name__ == "__main__":
    sys.exit(main())
