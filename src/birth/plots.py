"""Figures of a run directory, and the drawing pieces the experiment figures reuse."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from birth.runs import RunDir  # noqa: E402

PROBE_KEYS = {"wo1_acc": "$W_O^2$ (wo1)", "wk1_acc": "$W_K^2$ (wk1)", "wk0_acc": "$W_K^1$ (wk0)",
              "wk0_64_acc": "$W_K^1$, t<64 (wk0_64)"}
COLUMN_WIDTH = 3.25  # inches, one column of a two-column paper


@contextmanager
def paper_style():
    """Serif fonts and small, readable sizes for column-width figures."""
    with plt.rc_context({"font.family": "serif", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                         "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
                         "figure.dpi": 150, "savefig.bbox": "tight", "axes.spines.top": False,
                         "axes.spines.right": False}):
        yield


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["iter"], r[key]) for r in rows if r.get(key) is not None and "iter" in r]
    if not pts:
        return np.array([]), np.array([])
    it, v = zip(*pts)
    return np.asarray(it), np.asarray(v, dtype=float)


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


def draw_attention(ax, attn: np.ndarray, chars: Sequence[str], outs: Sequence[int], x: Sequence[int],
                   title: str, boxes: bool = True) -> None:
    """Heatmap of attention (queries = rows, keys = columns) with characters on both axes.

    With ``boxes``, keys following an earlier occurrence of the query token are outlined: red for
    trigger -> output positions (outs >= 2), green for other repeated tokens.
    """
    t = len(chars)
    ax.imshow(attn[:t, :t], cmap="Blues", vmin=0, vmax=max(float(attn[:t, :t].max()), 1e-6), interpolation="nearest")
    labels = ["_" if c == " " else repr(c)[1:-1] for c in chars]
    ax.set_xticks(range(t), labels, fontsize=5, family="monospace")
    ax.set_yticks(range(t), labels, fontsize=5, family="monospace")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title)
    if boxes:
        for q, s, trig in repeat_boxes(x[:t], outs[:t]):
            ax.add_patch(Rectangle((s - 0.5, q - 0.5), 1, 1, fill=False, lw=0.7, ec="red" if trig else "green"))


def plot_run(run_dir: str | Path, out: Optional[str | Path] = None) -> list[Path]:
    """Writes probes.png, losses.png and attention.png for a run; returns their paths."""
    run = RunDir(run_dir)
    out = Path(out) if out else run.path / "figures"
    out.mkdir(parents=True, exist_ok=True)
    rows = run.read_metrics()
    floors = run.read_task()["floors"]
    paths = []
    with paper_style():
        paths.append(_plot_probes(rows, out / "probes.png"))
        paths.append(_plot_losses(rows, floors, out / "losses.png"))
        if run.latest_checkpoint() is not None:
            paths.append(_plot_attention(run, out / "attention.png"))
    return paths


def _plot_probes(rows: list[dict], path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH, 2.2))
    for key, label in (("eval_acc_end", "eval batch"), ("acc_end", "training batch"), ("acc_end_test", "OOD batch")):
        it, v = _series(rows, key)
        if len(it):
            a1.plot(it, v, label=label)
    a1.set(title="in-context accuracy (outs $\\geq$ 2)", xlabel="iteration", ylim=(-0.02, 1.02))
    a1.legend()
    for key, label in PROBE_KEYS.items():
        it, v = _series(rows, key)
        if len(it) and (v >= 0).any():
            a2.plot(it, v, label=label)
    it, v = _series(rows, "score2_acc")
    if len(it):
        a2.plot(it, v, "k:", label="induction attention (score2)")
    a2.set(title="memory recall probes", xlabel="iteration", ylim=(-0.02, 1.02))
    a2.legend()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_losses(rows: list[dict], floors: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.3))
    for key, style, label in (("eval_loss_bigram", "--", "global (outs=0)"), ("eval_loss_head", "-", "in-context (outs$\\geq$2)")):
        it, v = _series(rows, key)
        if len(it):
            ax.plot(it, v, style, label=label)
    if floors.get("floor_loss_bigram") is not None:
        ax.axhline(floors["floor_loss_bigram"], color="gray", ls="--", lw=0.8, label="Bayes global floor")
    if floors.get("nocontext_loss_head") is not None:
        ax.axhline(floors["nocontext_loss_head"], color="gray", ls=":", lw=0.8, label="no-context in-context loss")
    ax.axhline(floors.get("floor_loss_head", 0.0), color="gray", ls="-", lw=0.8, label="Bayes in-context floor")
    ax.set(title="loss on the evaluation batch", xlabel="iteration", ylabel="cross-entropy (nats)")
    ax.legend()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_attention(run: RunDir, path: Path, length: int = 48) -> Path:
    import torch

    from birth.setup import trained_setup
    setup = trained_setup(run.path)
    batch = setup.eval_batches()["eval"]
    # a varied evaluation sequence (most distinct characters) with at least 3 in-context targets,
    # rather than one caught in a trigger -> output cycle that repeats two tokens forever
    distinct = torch.tensor([len(set(row.tolist())) for row in batch.x[:, :length]])
    enough = (batch.outs[:, :length] >= 2).sum(1).cpu() >= 3
    i = int(torch.where(enough, distinct, -1).argmax())
    x = batch.x[i:i + 1, :length]
    with torch.no_grad():
        _, patterns = setup.model(x, return_attn=True)
    tokens = x[0].tolist()
    chars = [setup.stats.vocab[t] for t in tokens]
    outs = batch.outs[i, :length].tolist()
    fig, axes = plt.subplots(1, len(patterns), figsize=(2 * COLUMN_WIDTH, COLUMN_WIDTH))
    for layer, (ax, attn) in enumerate(zip(np.atleast_1d(axes), patterns)):
        draw_attention(ax, attn[0, 0].numpy(), chars, outs, tokens, f"layer {layer + 1} (head 1)", boxes=layer > 0)
    fig.savefig(path)
    plt.close(fig)
    return path
