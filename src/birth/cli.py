"""The ``birth`` command: parses arguments and dispatches; no logic of its own."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from birth.running.config import PRESETS, ConfigError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors as one stderr line with exit code 2, like config errors (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"birth: error: {message}; see {self.prog} --help\n")


def _train_epilog() -> str:
    from birth.running.validation import config_fields_help
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
    p.add_argument("--plot", action="store_true", help="write the figures of the run when it ends")
    p.set_defaults(func=cmd_train)


def _run_dir(args, cfg) -> Path:
    if args.out:
        return Path(args.out)
    if cfg.save_dir:
        return Path(cfg.root_dir) / cfg.save_dir
    return Path("runs") / (args.preset or "run")


def cmd_train(args) -> int:
    from birth.running.runs import RunDir
    from birth.running.train import train
    from birth.running.validation import resolve_config
    if args.resume:
        run = RunDir(args.resume)
        if not run.holds_run():
            raise ConfigError(f"--resume: {args.resume} holds no run (no config.yaml)")
        if args.overrides or args.preset or args.out or args.overwrite:
            raise ConfigError("--resume: takes no overrides, --preset, --out or --overwrite; "
                              "the run's own config.yaml and directory are used")
        cfg = run.read_config()
        from birth.running.validation import validate
        validate(cfg)
        if run.read_summary().get("status") == "completed":
            print(f"birth: {run.path} is already complete", file=sys.stderr)
            return 0
    else:
        cfg = resolve_config(args.preset, args.overrides)
        run = RunDir(_run_dir(args, cfg))
        run.check_writable()
        if run.holds_run():
            if not args.overwrite:
                raise ConfigError(f"--out: {run.path} already holds a run; use --resume {run.path} to continue it "
                                  "or --overwrite to replace it")
            shutil.rmtree(run.path)
        if cfg.data_args.k == 0:
            print("birth: note: data_args.k=0 (the official default) means no triggers", file=sys.stderr)
    summary = train(cfg, run.path, resume=bool(args.resume), quiet=args.quiet)
    fm = summary.get("final_metrics", {})
    if summary["status"] == "completed":
        print(f"birth: {run.path}: {summary['steps']} steps in {summary['wall_seconds']:.1f}s; "
              f"acc_end (eval batch) {_fmt(fm.get('eval_acc_end'))}, loss_head {_fmt(fm.get('eval_loss_head'))}, "
              f"score2_acc {_fmt(fm.get('score2_acc'))}, wo1_acc {_fmt(fm.get('wo1_acc'))}")
        if args.plot:
            from birth.analysis.plots import plot_run
            for path in plot_run(run.path):
                print(f"birth: wrote {path}")
    return summary["exit_code"]


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", help="folder for the PNG files (default: RUN_DIR/figures)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    from birth.analysis.plots import plot_run
    from birth.running.runs import RunDir
    if not RunDir(args.run_dir).holds_run():
        raise ConfigError(f"plot: {args.run_dir} holds no run (no config.yaml)")
    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="sampler and training-step benchmarks (ratios side by side)")
    p.add_argument("what", nargs="?", choices=("all", "sampler", "step"), default="all")
    p.add_argument("--json", action="store_true", help="sampler: print one JSON object with tokens_per_s")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the process's own; the sampler ratio is meant for 1)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from birth import bench
    return bench.main(args)


def _add_interop(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to another toolkit")
    p.add_argument("format", choices=("transformer-lens",), help="target toolkit")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="file to write (load it with birth.analysis.interop.load_transformer_lens)")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("report", help="self-contained HTML report of a run or a reproduction output")
    p.add_argument("path", metavar="RUN_OR_OUT")
    p.add_argument("--out", help="HTML file to write (default: RUN_OR_OUT/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_export(args) -> int:
    from birth.api import load_run
    from birth.analysis.interop import save_transformer_lens
    run = load_run(args.run_dir)
    print(save_transformer_lens(run.model(args.step), args.out, run.vocab))
    return 0


def cmd_report(args) -> int:
    from birth.analysis.report import write_report
    print(write_report(args.path, args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="birth", description="Birth of a Transformer: task, models, probes, experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_plot(sub)
    _add_bench(sub)
    _add_interop(sub)
    for module in ("birth.analysis.theory.cli", "birth.analysis.experiments.cli"):
        try:
            __import__(module, fromlist=["register"]).register(sub)
        except ModuleNotFoundError as err:
            if err.name not in (module, module.rsplit(".", 1)[0]):
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"birth: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
