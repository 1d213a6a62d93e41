"""Figures of a run directory, and the drawing pieces the experiment figures reuse."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

if "ipykernel" not in sys.modules:  # headless files by default; a notebook keeps its inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from birth.training.runs import RunDir  # noqa: E402
from birth.training.build import parse_freeze_until, trained_setup
from birth.training.interventions import parse
from birth.tasks.base import pick_sequence

# The one map from the official probe keys to the paper's matrices (docs/metrics.md)
PROBE_LABELS = {"wo1_acc": "$W_O^2$", "wk1_acc": "$W_K^2$", "wk0_acc": "$W_K^1$", "wk0_64_acc": "$W_K^1$, t<64"}
PROBE_KEYS = {k: f"{v} ({k.removesuffix('_acc')})" for k, v in PROBE_LABELS.items()}
GLYPHS = {"\n": "\u23ce", " ": "\u2423", "\t": "\u21e5"}  # ⏎ ␣ ⇥: visible newline, space, tab
COLUMN_WIDTH = 3.25  # inches, one column of a two-column paper


@contextmanager
def paper_style():
    """Serif fonts and small, readable sizes for column-width figures."""
    with plt.rc_context({"font.family": "serif", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                         "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
                         "figure.dpi": 150, "savefig.bbox": "tight", "axes.spines.top": False,
                         "axes.spines.right": False}):
        yield


def repeat_boxes(x: Sequence[int], in_context: Sequence[bool]) -> list[tuple[int, int, bool]]:
    """(query t, key s, is_target) for every key s that follows an earlier occurrence of x_t.

    Those are the positions an induction head should attend to; ``is_target`` marks the queries
    that are in-context targets of the task (the paper's: a trigger at its second or later
    occurrence, outs >= 2).
    """
    boxes = []
    for t in range(len(x)):
        for s in range(1, t + 1):
            if x[s - 1] == x[t]:
                boxes.append((t, s, bool(in_context[t])))
    return boxes


def glyph(char: str) -> str:
    """A one-character, visible label of a vocabulary character (⏎ for newline, ␣ for space)."""
    return GLYPHS.get(char, char if char.isprintable() else "\u00bf")


BOX_COLORS = {True: "red", False: "limegreen"}
BOX_LABELS = {True: "trigger \u2192 output (outs \u2265 2)", False: "other repeated token"}
TARGET_LABEL = "in-context target: the token after an earlier occurrence"  # another task's red boxes


def draw_attention(ax, attn: np.ndarray, chars: Sequence[str], in_context: Sequence[bool], x: Sequence[int],
                   title: str, boxes: bool = True, fontsize: float = 5):
    """Heatmap of attention (queries = rows, keys = columns) with characters on both axes; returns
    the image (for a colorbar).

    With ``boxes``, keys following an earlier occurrence of the query token are outlined: red for
    in-context targets (the paper's task: trigger -> output, outs >= 2), green for other repeats.
    """
    t = len(chars)
    image = ax.imshow(attn[:t, :t], cmap="Blues", vmin=0, vmax=max(float(attn[:t, :t].max()), 1e-6),
                      interpolation="nearest")
    labels = [glyph(c) for c in chars]
    ax.set_xticks(range(t), labels, fontsize=fontsize, family="DejaVu Sans Mono")
    ax.set_yticks(range(t), labels, fontsize=fontsize, family="DejaVu Sans Mono")
    ax.tick_params(length=1.5, pad=1)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title)
    if boxes:
        for q, s, trig in repeat_boxes(x[:t], in_context[:t]):
            ax.add_patch(Rectangle((s - 0.5, q - 0.5), 1, 1, fill=False, lw=0.7, ec=BOX_COLORS[trig]))
    return image


# ---------------------------------------------------------------------------------------------
# What the curves of a run are: shared by the PNGs here and the HTML report (birth.analysis.report)

# task.json of runs made before the task plug-ins has no metric names: those of the paper's task
PAPER_KEYS = {"in_context": {"loss": "loss_head", "acc": "acc_end"},
              "global": {"loss": "loss_bigram", "acc": "acc_bigram"}}
MASK_LABELS = {"in_context": "in-context", "global": "global", "first": "first occurrence"}


@dataclass
class Panel:
    """One chart: (metric key, label) series, (value, label) horizontal lines, (start, end, label)
    shaded windows of steps (freezes, interventions), a note, and the y scale."""

    name: str
    title: str
    ylabel: str
    series: list[tuple[str, str]]
    lines: list[tuple[float, str]] = field(default_factory=list)
    note: str = ""
    ylim: Optional[tuple[float, float]] = None
    windows: list[tuple[int, int, str]] = field(default_factory=list)
    log: bool = False


def metric_names(task: dict) -> dict[str, dict[str, str]]:
    """mask -> {'loss': key, 'acc': key} of a run's task.json, in-context first, then global."""
    names = task.get("masks") or PAPER_KEYS
    order = list(MASK_LABELS)
    return dict(sorted(names.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def run_windows(cfg) -> list[tuple[int, int, str]]:
    """The steps in which something was frozen or intervened on: (start, end, what)."""
    out: dict[int, list[str]] = {}
    for step, name in parse_freeze_until(cfg.freeze_until):
        out.setdefault(step, []).append(name)
    windows = [(0, step, f"{', '.join(names)} frozen") for step, names in sorted(out.items())]
    for iv in parse(cfg.interventions):
        windows.append((iv.start, iv.end if iv.end is not None else cfg.max_iters, iv.text().rsplit("@", 1)[0]))
    return windows


def _ood_label(cfg, name: str) -> str:
    d = cfg.data_args
    if name == "split_test":
        return "held-out output tokens (OOD split)"
    if name == "test" and hasattr(d, "bigram_outs_test"):  # the paper's task: the official ds_test
        if d.bigram_outs_test != d.bigram_outs_train:
            return ("test batch: outputs from the bigram (OOD)" if d.bigram_outs_test
                    else "test batch: uniform outputs (OOD)")
        return "second fixed batch (same distribution)"
    return f"{name} batch"


def run_panels(cfg, task: dict, rows: Sequence[dict] = ()) -> list[Panel]:
    """The charts of a run with config ``cfg``, ``task.json`` ``task`` and metrics ``rows``: in-context
    accuracy, the paper task's memory probes, head scores, the loss per mask against each
    strategy's, and the KL from each strategy to the model."""
    n, names = task["num_tokens"], metric_names(task)
    acc_key = names["in_context"]["acc"]
    strategies = task.get("strategies", {})
    refs = [s for s in task.get("reference_strategies") or strategies if s in strategies]
    windows = run_windows(cfg)
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    ood = [k[len(acc_key) + 1:] for k in sorted(present) if k.startswith(acc_key + "_") and not k.startswith("eval_")]
    if not rows:  # no metrics yet: the distributions the config evaluates
        ood = ["test"] + (["split_test"] if getattr(cfg.data_args, "output_split", False) else [])
    acc = Panel("accuracy", f"in-context accuracy ({acc_key})", "accuracy",
                [(f"eval_{acc_key}", "fixed evaluation batch"), (acc_key, "training batch of the step")]
                + [(f"{acc_key}_{name}", _ood_label(cfg, name)) for name in ood],
                [(1.0 / n, f"chance (1/N, N={n})")]
                + [(strategies[s]["in_context"]["acc"], f"strategy {s}") for s in refs[:2]],
                ylim=(-0.02, 1.02), windows=windows)
    panels = [acc]
    if not rows or "wo1_acc" in present:  # the paper's task: its memory-recall probes
        k_way = len(task.get("fixed_triggers") or []) or n
        probes = Panel("probes", "memory recall probes", "recall accuracy",
                       [(k, PROBE_KEYS[k]) for k in ("wo1_acc", "wk1_acc", "wk0_acc")],
                       [(1.0 / k_way, f"chance of $W_K^2$ (1/{k_way})")], ylim=(-0.02, 1.02), windows=windows)
        if cfg.model_args.max_length > 64:
            probes.series.append(("wk0_64_acc", PROBE_KEYS["wk0_64_acc"]))
        else:
            probes.note = (f"$W_K^1$ t<64 (wk0_64) equals $W_K^1$ here "
                           f"(max_length = {cfg.model_args.max_length} \u2264 64).")
        probes.series.append(("score2_acc", "induction attention (score2)"))
        panels.append(probes)
    panels.append(Panel("heads", "head scores on repeated random tokens (best head)", "score",
                        [("head_previous_max", "previous token"), ("head_induction_max", "induction (prefix matching)"),
                         ("head_duplicate_max", "duplicate token")], ylim=(-0.02, 1.02), windows=windows))
    masks = [m for m in names if m in MASK_LABELS]
    untrained = cfg.loss_head_only and "global" in names
    floors = task.get("floors", {})
    losses = Panel("losses", "loss on the evaluation batch", "cross-entropy (nats)",
                   [(f"eval_{names[m]['loss']}",
                     MASK_LABELS[m] + (", not trained" if m != "in_context" and untrained else ""))
                    for m in masks],
                   [(strategies[s]["in_context"]["loss"], f"strategy {s}, in-context") for s in refs]
                   + ([(floors["floor_loss_bigram"], "Bayes floor, global")] if "floor_loss_bigram" in floors else []),
                   windows=windows)
    if untrained:
        losses.note = ("loss_head_only=True: only in-context targets are trained, so the global loss is "
                       "left to drift (its rise is expected, not a bug).")
    kl = Panel("kl", "KL(strategy || model), in-context targets", "nats (log scale)",
               [(f"eval_kl_{s}_in_context", s) for s in refs], windows=windows, log=True)
    return panels + [losses, kl]


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["iter"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "iter" in r]
    if not pts:
        return np.array([]), np.array([])
    it, v = zip(*pts)
    return np.asarray(it), np.asarray(v, dtype=float)


STYLES = [dict(ls="-", lw=2.2, alpha=0.55), dict(ls="--", lw=1.3), dict(ls=":", lw=1.6),
          dict(ls="-.", lw=1.1), dict(ls="-", lw=0.8, marker=".", ms=3)]
LINE_COLORS = ["0.45", "#b9770e", "#7d3c98", "#17a589", "#a04000", "0.7"]
WINDOW_COLORS = ["#5dade2", "#f5b041", "#58d68d", "#ec7063"]


def draw_panel(ax, panel: Panel, rows: list[dict]) -> None:
    """One chart, curves in distinct styles (the widest first, so none hides another), the
    horizontal lines in muted colours, the windows shaded, and the legend below the axes."""
    for (key, label), style in zip(panel.series, STYLES):
        it, v = _series(rows, key)
        if len(it) and (v >= 0).any():
            ax.plot(it, np.clip(v, 1e-6, None) if panel.log else v, label=label, **style)
    for i, (value, label) in enumerate(panel.lines):
        if value is None or not np.isfinite(value):  # e.g. a strategy that gives the target no mass: infinite loss
            continue
        ax.axhline(value, color=LINE_COLORS[i % len(LINE_COLORS)], ls=("--", ":", "-.", "-")[i % 4], lw=0.8,
                   label=label)
    for (start, end, label), color in zip(panel.windows, WINDOW_COLORS * 4):
        ax.axvspan(start, end, color=color, alpha=0.12, lw=0, label=label)
    ax.set(title=panel.title, xlabel="iteration", ylabel=panel.ylabel)
    if panel.log:
        ax.set_yscale("log")
    if panel.ylim:
        ax.set_ylim(*panel.ylim)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.22), ncol=1, frameon=False)
    if panel.note:
        entries = len(panel.series) + len(panel.lines) + len(panel.windows)
        ax.text(0.0, -0.3 - 0.105 * entries, panel.note, transform=ax.transAxes, fontsize=6, style="italic",
                va="top", wrap=True)


def plot_run(run_dir: str | Path, out: Optional[str | Path] = None) -> list[Path]:
    """Writes probes.png (accuracy, probes, head scores), losses.png (losses against the strategies,
    KL to each), positions.png (the loss at each position over training) and attention.png."""
    run = RunDir(run_dir)
    # the weights first: a run whose checkpoints are all damaged gets no figure at all (exit 5)
    setup = trained_setup(run.path) if run.checkpoints() else None
    out = Path(out) if out else run.path / "figures"
    out.mkdir(parents=True, exist_ok=True)
    rows = run.read_metrics()
    cfg, task = run.read_config(), run.read_task()
    panels = {p.name: p for p in run_panels(cfg, task, rows)}
    paths = []
    with paper_style():
        paths.append(_plot_panels([p for n, p in panels.items() if n in ("accuracy", "probes", "heads")], rows,
                                  out / "probes.png"))
        paths.append(_plot_panels([panels["losses"], panels["kl"]], rows, out / "losses.png"))
        iters, losses = run.read_positions(cfg.data_args.seq_length)
        if len(iters):
            paths.append(_plot_positions(iters, losses, out / "positions.png"))
        if setup is not None:
            paths.append(_plot_attention(setup, out / "attention.png"))
    return paths


def _plot_positions(iters: np.ndarray, losses: np.ndarray, path: Path) -> Path:
    """The evaluation batch's loss at each position (columns) at each evaluation (rows)."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.4, 2.6))
    image = ax.imshow(losses, aspect="auto", origin="lower", cmap="magma_r", interpolation="nearest",
                      extent=(-0.5, losses.shape[1] - 0.5, iters[0], iters[-1]))
    fig.colorbar(image, ax=ax, label="loss (nats)")
    ax.set(title="loss at each position of the evaluation batch", xlabel="position t", ylabel="iteration")
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_panels(panels: list[Panel], rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(panels), figsize=(COLUMN_WIDTH * max(len(panels), 1.4) * 1.1, 2.4), squeeze=False)
    fig.subplots_adjust(wspace=0.3)
    for ax, panel in zip(axes[0], panels):
        draw_panel(ax, panel, rows)
    fig.savefig(path)
    plt.close(fig)
    return path


def attention_example(setup, length: int = 64) -> dict:
    """The evaluation sequence the attention views show (first ``length`` positions): tokens,
    characters, which positions are in-context targets, and (the paper's task) that sequence's
    triggers."""
    batch = setup.eval_batches()["eval"]
    length = min(length, batch.x.shape[1])
    i = pick_sequence(batch, length)
    tokens = batch.x[i, :length].tolist()
    vocab = setup.vocab
    triggers = batch.latents.get("triggers")
    return {"x": batch.x[i:i + 1, :length], "tokens": tokens, "chars": [vocab[t] for t in tokens],
            "in_context": batch.masks["in_context"][i, :length].tolist(), "seq_length": batch.x.shape[1],
            "triggers": None if triggers is None else [vocab[t] for t in triggers[i].tolist()],
            "fixed": setup.triggers is not None,
            "box_label": BOX_LABELS[True] if triggers is not None else TARGET_LABEL}


def _plot_attention(setup, path: Path, length: int = 64) -> Path:
    fig = attention_figure(setup, length)
    fig.savefig(path)
    plt.close(fig)
    return path


def attention_figure(setup, length: int = 64):
    """Both layers' attention on one evaluation sequence, with a colorbar, the box legend, the
    triggers and the positions shown in the title."""
    import torch

    ex = attention_example(setup, length)
    with torch.no_grad():
        _, patterns = setup.model(ex["x"], return_attn=True)
    t = len(ex["tokens"])
    shown = f"all {t} positions" if t == ex["seq_length"] else f"positions 1\u2013{t} of {ex['seq_length']}"
    kind = "fixed" if ex["fixed"] else "random, this sequence's"
    fig, axes = plt.subplots(1, len(patterns), figsize=(13, 7.4), squeeze=False, layout="constrained")
    image = None
    heads = patterns[0].shape[1]
    for layer, (ax, attn) in enumerate(zip(axes[0], patterns)):
        image = draw_attention(ax, attn[0, 0].numpy(), ex["chars"], ex["in_context"], ex["tokens"],
                               f"layer {layer + 1}" + (f" (head 1 of {heads})" if heads > 1 else ""),
                               boxes=layer > 0, fontsize=6.5)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, pad=0.01, label="attention weight")
    labels = {True: ex["box_label"], False: BOX_LABELS[False]}
    handles = [Rectangle((0, 0), 1, 1, fill=False, ec=BOX_COLORS[k], lw=1.2, label=labels[k]) for k in (True, False)]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    trig = f"; triggers ({kind}): {' '.join(glyph(c) for c in ex['triggers'])}" if ex["triggers"] is not None else ""
    fig.suptitle(f"attention on one evaluation sequence ({shown}){trig}   "
                 f"\u23ce newline, \u2423 space", fontsize=9, family="DejaVu Sans")
    return fig
