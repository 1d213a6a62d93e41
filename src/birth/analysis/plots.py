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

from birth.running.runs import RunDir  # noqa: E402

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


def repeat_boxes(x: Sequence[int], outs: Sequence[int]) -> list[tuple[int, int, bool]]:
    """(query t, key s, is_trigger_output) for every key s that follows an earlier occurrence of x_t.

    Those are the positions an induction head should attend to; ``is_trigger_output`` marks the
    ones where x_t is a trigger at its second or later occurrence (outs >= 2).
    """
    boxes = []
    for t in range(len(x)):
        for s in range(1, t + 1):
            if x[s - 1] == x[t]:
                boxes.append((t, s, outs[t] >= 2))
    return boxes


def glyph(char: str) -> str:
    """A one-character, visible label of a vocabulary character (⏎ for newline, ␣ for space)."""
    return GLYPHS.get(char, char if char.isprintable() else "\u00bf")


BOX_COLORS = {True: "red", False: "limegreen"}
BOX_LABELS = {True: "trigger \u2192 output (outs \u2265 2)", False: "other repeated token"}


def draw_attention(ax, attn: np.ndarray, chars: Sequence[str], outs: Sequence[int], x: Sequence[int],
                   title: str, boxes: bool = True, fontsize: float = 5):
    """Heatmap of attention (queries = rows, keys = columns) with characters on both axes; returns
    the image (for a colorbar).

    With ``boxes``, keys following an earlier occurrence of the query token are outlined: red for
    trigger -> output positions (outs >= 2), green for other repeated tokens.
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
        for q, s, trig in repeat_boxes(x[:t], outs[:t]):
            ax.add_patch(Rectangle((s - 0.5, q - 0.5), 1, 1, fill=False, lw=0.7, ec=BOX_COLORS[trig]))
    return image


def pick_sequence(batch, length: int) -> int:
    """A varied evaluation sequence (most distinct characters) with at least 3 in-context targets
    in its first ``length`` positions, rather than one caught in a trigger -> output cycle."""
    import torch
    distinct = torch.tensor([len(set(row.tolist())) for row in batch.x[:, :length]])
    enough = (batch.outs[:, :length] >= 2).sum(1).cpu() >= 3
    return int(torch.where(enough, distinct, -1).argmax())


# ---------------------------------------------------------------------------------------------
# What the curves of a run are: shared by the PNGs here and the HTML report (birth.analysis.report)

@dataclass
class Panel:
    """One chart: (metric key, label) series, (value, label) horizontal lines, and a note."""

    name: str
    title: str
    ylabel: str
    series: list[tuple[str, str]]
    lines: list[tuple[float, str]] = field(default_factory=list)
    note: str = ""
    ylim: Optional[tuple[float, float]] = None


def run_panels(cfg, task: dict) -> list[Panel]:
    """The accuracy, probe and loss charts of a run with config ``cfg`` and ``task.json`` ``task``."""
    d, n = cfg.data_args, task["num_tokens"]
    shifted = d.bigram_outs_test != d.bigram_outs_train
    test_label = ("test batch: outputs from the bigram (OOD)" if d.bigram_outs_test else
                  "test batch: uniform outputs (OOD)") if shifted else "second fixed batch (same distribution)"
    acc = Panel("accuracy", "in-context accuracy (outs \u2265 2)", "accuracy",
                [("eval_acc_end", "fixed evaluation batch"), ("acc_end", "training batch of the step"),
                 ("acc_end_test", test_label)], [(1.0 / n, f"chance (1/N, N={n})")], ylim=(-0.02, 1.02))
    if d.output_split:
        acc.series.append(("acc_end_split_test", "held-out output tokens (OOD split)"))
    k_way = len(task.get("fixed_triggers") or []) or n
    probes = Panel("probes", "memory recall probes", "recall accuracy",
                   [(k, PROBE_KEYS[k]) for k in ("wo1_acc", "wk1_acc", "wk0_acc")],
                   [(1.0 / k_way, f"chance of $W_K^2$ (1/{k_way})")], ylim=(-0.02, 1.02))
    if cfg.model_args.max_length > 64:
        probes.series.append(("wk0_64_acc", PROBE_KEYS["wk0_64_acc"]))
    else:
        probes.note = f"$W_K^1$ t<64 (wk0_64) equals $W_K^1$ here (max_length = {cfg.model_args.max_length} \u2264 64)."
    probes.series.append(("score2_acc", "induction attention (score2)"))
    floors = task.get("floors", {})
    global_label = "global (outs = 0)" + (", not trained" if cfg.loss_head_only else "")
    losses = Panel("losses", "loss on the evaluation batch", "cross-entropy (nats)",
                   [("eval_loss_head", "in-context (outs \u2265 2)"), ("eval_loss_bigram", global_label)],
                   [(v, label) for key, label in (("floor_loss_bigram", "Bayes floor, global"),
                                                  ("nocontext_loss_head", "no-context in-context loss"),
                                                  ("floor_loss_head", "Bayes floor, in-context"))
                    if (v := floors.get(key)) is not None])
    if cfg.loss_head_only:
        losses.note = ("loss_head_only=True: only in-context targets are trained, so the global loss is "
                       "left to drift (its rise is expected, not a bug).")
    return [acc, probes, losses]


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["iter"], r[key]) for r in rows if r.get(key) is not None and "iter" in r]
    if not pts:
        return np.array([]), np.array([])
    it, v = zip(*pts)
    return np.asarray(it), np.asarray(v, dtype=float)


STYLES = [dict(ls="-", lw=2.2, alpha=0.55), dict(ls="--", lw=1.3), dict(ls=":", lw=1.6),
          dict(ls="-.", lw=1.1), dict(ls="-", lw=0.8, marker=".", ms=3)]


def draw_panel(ax, panel: Panel, rows: list[dict]) -> None:
    """One chart, curves in distinct styles (the widest first, so none hides another), the
    horizontal lines in gray, and the legend below the axes."""
    for (key, label), style in zip(panel.series, STYLES):
        it, v = _series(rows, key)
        if len(it) and (v >= 0).any():
            ax.plot(it, v, label=label, **style)
    for (value, label), ls in zip(panel.lines, ("--", ":", "-", "-.")):
        ax.axhline(value, color="gray", ls=ls, lw=0.8, label=label)
    ax.set(title=panel.title, xlabel="iteration", ylabel=panel.ylabel)
    if panel.ylim:
        ax.set_ylim(*panel.ylim)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.22), ncol=1, frameon=False)
    if panel.note:
        ax.text(0.0, -0.3 - 0.105 * (len(panel.series) + len(panel.lines)), panel.note, transform=ax.transAxes, fontsize=6, style="italic", va="top", wrap=True)


def plot_run(run_dir: str | Path, out: Optional[str | Path] = None) -> list[Path]:
    """Writes probes.png, losses.png and attention.png for a run; returns their paths."""
    run = RunDir(run_dir)
    out = Path(out) if out else run.path / "figures"
    out.mkdir(parents=True, exist_ok=True)
    rows = run.read_metrics()
    acc, probes, losses = run_panels(run.read_config(), run.read_task())
    paths = []
    with paper_style():
        paths.append(_plot_panels([acc, probes], rows, out / "probes.png"))
        paths.append(_plot_panels([losses], rows, out / "losses.png"))
        if run.latest_checkpoint() is not None:
            paths.append(_plot_attention(run, out / "attention.png"))
    return paths


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
    characters, outs and the triggers of that sequence."""
    batch = setup.eval_batches()["eval"]
    length = min(length, batch.x.shape[1])
    i = pick_sequence(batch, length)
    tokens = batch.x[i, :length].tolist()
    vocab = setup.vocab
    return {"x": batch.x[i:i + 1, :length], "tokens": tokens, "chars": [vocab[t] for t in tokens],
            "outs": batch.outs[i, :length].tolist(), "seq_length": batch.x.shape[1],
            "triggers": [vocab[t] for t in batch.triggers[i].tolist()],
            "fixed": setup.triggers is not None}


def _plot_attention(run: RunDir, path: Path, length: int = 64) -> Path:
    from birth.running.build import trained_setup
    fig = attention_figure(trained_setup(run.path), length)
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
        image = draw_attention(ax, attn[0, 0].numpy(), ex["chars"], ex["outs"], ex["tokens"],
                               f"layer {layer + 1}" + (f" (head 1 of {heads})" if heads > 1 else ""),
                               boxes=layer > 0, fontsize=6.5)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, pad=0.01, label="attention weight")
    handles = [Rectangle((0, 0), 1, 1, fill=False, ec=BOX_COLORS[k], lw=1.2, label=BOX_LABELS[k]) for k in (True, False)]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    trig = " ".join(glyph(c) for c in ex["triggers"])
    fig.suptitle(f"attention on one evaluation sequence ({shown}); triggers ({kind}): {trig}   "
                 f"\u23ce newline, \u2423 space", fontsize=9, family="DejaVu Sans")
    return fig
