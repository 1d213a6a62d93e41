"""What each ``birth`` subcommand does once its arguments are parsed (``birth.cli``): glue from the
arguments to the layers that do the work, and the exit code. Imports of the analysis and the
experiments (matplotlib, pandas) wait for the commands that need them: ``birth train`` starts in
the time torch takes to import.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from birth.launching import sweep
from birth.launching.jobs import report_stopped
from birth.launching.options import backend_from_args
from birth.measures.llc import LLCSettings
from birth.training.config import ConfigError, dump_yaml
from birth.training.lock import check_free, clear_directory, directory_lock
from birth.training.loop import headline_accuracy, train
from birth.training.runs import RunDir, steps_of
from birth.training.threads import choose_threads
from birth.training.validation import resolve_config, validate
from birth.training.wandb_log import log_figures


def _run_dir(args, cfg) -> Path:
    if args.out:
        return Path(args.out)
    if cfg.save_dir:
        return Path(cfg.root_dir) / cfg.save_dir
    return Path("runs") / (args.preset or "run")


def cmd_train(args) -> int:
    if args.resume:
        run = RunDir(args.resume)
        if not run.holds_run():
            raise ConfigError(f"--resume: {args.resume} holds no run (no config.yaml)")
        if args.overrides or args.preset or args.out or args.overwrite:
            raise ConfigError("--resume: takes no overrides, --preset, --out or --overwrite; "
                              "the run's own config.yaml and directory are used")
        try:
            cfg = run.read_config()
        except ConfigError as err:  # the option the user wrote, then the file
            raise ConfigError(f"--resume: {err}") from None
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
    if requested is not None and int(requested) < 1:
        raise ConfigError(f"--threads: must be >= 1, got {requested}")
    work = cfg.optim_args.batch_size * cfg.data_args.seq_length * cfg.model_args.dim ** 2
    threads, _ = choose_threads(requested, work)
    torch.set_num_threads(threads)


def _print_config(cfg) -> int:
    print(dump_yaml(cfg), end="")
    return 0


def _plot(run_dir: Path) -> int:
    from birth.analysis.plots import plot_run  # deferred: matplotlib, pandas
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
    from birth.analysis.plots import metric_names  # deferred: matplotlib, pandas
    names = metric_names(task)["in_context"]
    key = headline_accuracy(fm, names["acc"])
    text = (f"{names['acc']} (eval batch) {_fmt(fm.get(key))}, {names['loss']} {_fmt(fm.get('eval_' + names['loss']))}"
            if key.startswith("eval_") else f"{key} {_fmt(fm.get(key))}")
    if "wo1_acc" in fm:
        return f"{text}, score2_acc {_fmt(fm.get('score2_acc'))}, wo1_acc {_fmt(fm.get('wo1_acc'))}"
    return f"{text}, head_induction_max {_fmt(fm.get('head_induction_max'))}"


def cmd_sweep(args) -> int:
    spec = sweep.from_command_line(args.overrides, args.preset, args.seeds, args.first_seed)
    if args.max_runs < 1:
        raise ConfigError(f"--max-runs: must be >= 1, got {args.max_runs}")
    if args.show_config:
        print(sweep.show_config(spec, args.out, args.max_runs), end="")
        return 0
    backend = backend_from_args(args)
    try:
        report = sweep.run_sweep(spec, args.out, backend, dry_run=args.dry_run, max_runs=args.max_runs)
    except KeyboardInterrupt as stop:  # SIGINT or SIGTERM, as birth reproduce
        return report_stopped(stop, sweep.command_line(spec, args.out))
    return report.exit_code


def cmd_plot(args) -> int:
    from birth.analysis.plots import plot_run  # deferred: matplotlib, pandas
    if args.by is not None or not RunDir(args.run_dir).holds_run():
        from birth.analysis.sweep_plots import plot_sweep  # deferred: matplotlib, pandas
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


def cmd_bench(args) -> int:
    from birth import bench  # deferred: matplotlib, pandas
    return bench.main(args)


def cmd_export(args) -> int:
    if args.format == "hf":
        from birth.analysis.hf_checkpoints import export_hf  # deferred: safetensors, matplotlib
        if args.step is not None:
            raise ConfigError("--step: for transformer-lens; hf exports --steps all|S,S,...")
        for folder in export_hf(args.run_dir, args.out, steps_of(args.run_dir, args.steps)):
            print(folder)
        return 0
    from birth.analysis.run import load_run  # deferred: matplotlib, pandas
    from birth.analysis.transformer_lens import save_transformer_lens  # deferred: matplotlib, pandas
    run = load_run(args.run_dir)
    print(save_transformer_lens(run.model(args.step), args.out, run.vocab))
    return 0


def cmd_report(args) -> int:
    from birth.analysis.report import write_report  # deferred: matplotlib, pandas
    print(write_report(args.path, args.out))
    return 0


def cmd_llc(args) -> int:
    from birth.analysis.llc_curve import run_llc  # deferred: matplotlib, pandas
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()] if args.steps else None
    except ValueError:
        raise ConfigError(f"--steps: {args.steps!r} is not a comma-separated list of steps") from None
    settings = LLCSettings(chains=args.chains, draws=args.draws, burnin=args.burnin, lr=args.lr, gamma=args.gamma,
                           nbeta=args.nbeta, batch_size=args.batch_size, seed=args.seed)
    for path in run_llc(args.run_dir, settings, steps, args.out, log=lambda s: print(s, file=sys.stderr)):
        print(path)
    return 0


def cmd_patch(args) -> int:
    from birth.analysis.patching_figures import patch_run  # deferred: matplotlib, pandas
    if args.sequence < 0:
        raise ConfigError(f"--sequence: must be >= 0, got {args.sequence}")
    for path in patch_run(args.run_dir, steps_of(args.run_dir, args.steps), args.sequence, args.points, args.out):
        print(path)
    return 0


def cmd_reproduce(args) -> int:
    from birth.experiments.recipe import Seeds  # deferred: matplotlib, pandas
    from birth.experiments.reproduce import reproduce, show_config  # deferred: matplotlib, pandas
    seeds = Seeds.of(args.seeds, args.first_seed, args.held_out)
    if args.show_config:
        print(show_config(args.name, args.scale, seeds), end="")
        return 0
    jobs = 1 if args.scale == "paper" and torch.cuda.is_available() else None
    backend = backend_from_args(args, default_jobs=jobs)
    try:
        report = reproduce(args.name, scale=args.scale, seeds=seeds, out=args.out,
                           backend=backend, dry_run=args.dry_run, precision=args.precision, profile=args.profile)
    except KeyboardInterrupt as stop:  # SIGINT or SIGTERM (birth.launching.stopping.Stopped)
        return report_stopped(stop)
    return report.exit_code


def _three_step_overrides(args) -> dict:
    over = {"seq_length": args.seq_length, "k": args.k, "corpus": args.corpus, "n_seqs": args.n_seqs,
            "step_norms": args.step_norms, "criterion": args.criterion, "precision": args.precision}
    over = {k: v for k, v in over.items() if v is not None}
    if args.random_triggers:
        over["fixed_triggers"] = False
    if args.allow_repeat:
        over["no_repeat"] = False
    return over


def cmd_theory(args) -> int:
    """Runs the chosen theory computation(s); returns the exit code."""
    from birth.experiments.theory import NAMES  # deferred: matplotlib
    from birth.experiments.theory.computations import run_experiment  # deferred: matplotlib
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
