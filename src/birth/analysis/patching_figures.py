"""``birth patch RUN``: activation patching of a trained run (``birth.measures.patching``) on its
task's natural corruption, at one checkpoint or over several, as a table and a heatmap per layer.

    RUN/patching/patching.csv             step, point, layer, position, head, metric, change, fraction
    RUN/patching/layer<L>.png             the fractions of layer L at the last step: a row per (point,
                                          head), a column per position, the example's marks on top
    RUN/patching/over_training.png        with several steps: each row's largest drop of the metric per step

The example is one sequence of the run's fixed evaluation batch: the ``sequence``-th (from 0) of
those whose corruption moves the metric by at least ``MIN_DROP`` nats at the last step read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from birth.analysis.plots import COLUMN_WIDTH, paper_style, plt
from birth.measures.patching import MIN_DROP, informative, patch, points_named
from birth.training.config import ConfigError
from birth.analysis.run import load_run


def patch_run(run_dir: str | Path, steps: Optional[Sequence[int]] = None, sequence: int = 0,
              points: str = "all", out: Optional[str | Path] = None) -> list[Path]:
    """Patches the run at ``steps`` (default: its newest whole checkpoint); writes the table and the
    figures into ``out`` (default RUN/patching) and returns their paths."""
    run = load_run(run_dir)
    steps = sorted(steps) if steps else [run.dir.newest_whole_checkpoint()[0]]
    missing = sorted(set(steps) - set(run.steps))
    if missing:
        raise ConfigError(f"patch: no checkpoint at step {missing[0]} in {run.path} (saved: {run.steps})")
    batch = run.eval_batch()
    example = run.setup.task.patch_example(batch, torch.Generator().manual_seed(0))
    if example is None:
        raise ConfigError(f"patch: the {run.config.data_args.task} task has no natural corruption to patch")
    last = run.model(steps[-1])
    try:
        names = points_named(last, points)
    except ValueError as err:
        raise ConfigError(f"--points: {err}") from None
    chosen = informative(last, example, sequence + 1)
    if len(chosen) <= sequence:
        raise ConfigError(f"--sequence: the run at step {steps[-1]} has {len(chosen)} sequence(s) whose corruption "
                          f"moves the metric by {MIN_DROP} nat or more")
    one = example.select([chosen[sequence]])
    tables = []
    for step in steps:
        table = patch(run.model(step), one.clean, one.corrupted, one.metric, names)
        tables.append(table.assign(step=step))
    table = pd.concat(tables, ignore_index=True)
    out = Path(out) if out else run.path / "patching"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "patching.csv", index=False)
    paths = [out / "patching.csv"]
    marks = one.marks[0]
    final = table[table["step"] == steps[-1]]
    for layer in sorted(final["layer"].unique()):
        title = f"blocks.{layer} (the paper's layer {layer + 1}), step {steps[-1]}"
        paths.append(_heatmap(final[final["layer"] == layer], marks, title, out / f"layer{layer}.png"))
    if len(steps) > 1:
        paths.append(_over_training(table, out / "over_training.png"))
    return paths


def _row_label(point: str, head: int) -> str:
    return point.split(".", 2)[-1] + (f" h{head}" if head >= 0 else "")


def _heatmap(rows: pd.DataFrame, marks: dict, title: str, path: Path) -> Path:
    """Fractions (change over the corruption's change) per (point, head) and position."""
    labels = list(dict.fromkeys(_row_label(p, h) for p, h in zip(rows["point"], rows["head"])))
    positions = sorted(rows["position"].unique())
    grid = np.zeros((len(labels), len(positions)))
    index = {lab: i for i, lab in enumerate(labels)}
    column = {p: j for j, p in enumerate(positions)}
    for p, h, pos, f in zip(rows["point"], rows["head"], rows["position"], rows["fraction"]):
        grid[index[_row_label(p, h)], column[pos]] = f
    bound = max(1.0, float(np.abs(grid).max()))
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 2, 0.5 + 0.3 * len(labels)))
        image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels)
        ax.set(xlabel="position (the query row, for a pattern)")
        ax.set_title(title, pad=34)
        for k, (name, at) in enumerate(sorted(marks.items(), key=lambda kv: kv[1])):
            if at in column:  # labels staggered: neighbouring marks do not overlap
                ax.axvline(column[at], color="black", lw=0.6, ls=":")
                ax.annotate(f"{name} ({at})", (column[at], -0.5), xytext=(2, 4 + 9 * (k % 3)),
                            textcoords="offset points", fontsize=5, ha="left", va="bottom", annotation_clip=False)
        fig.colorbar(image, ax=ax, label="fraction of the corruption's effect")
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
    return path


def _over_training(table: pd.DataFrame, path: Path) -> Path:
    """Each (point, head)'s largest drop of the metric over the positions, in nats, at each step
    patched (a fraction needs the corruption to matter; a drop is comparable across steps)."""
    rows = [p.replace("attn.", "") + (f" h{h}" if h >= 0 else "") for p, h in zip(table["point"], table["head"])]
    drop = table.assign(row=rows, drop=-table["change"]).groupby(["row", "step"])["drop"].max().unstack("row")
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.6, 2.6))
        for k, row in enumerate(drop.columns):
            ax.plot(drop.index, drop[row], marker="o", ms=3, label=row, ls="-" if "pattern" in row else ":",
                    color=f"C{k % 10}")
        ax.set(xlabel="checkpoint step", ylabel="largest drop of the metric (nats)",
               title="when each component carries the in-context answer")
        ax.legend(frameon=False, fontsize=5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
    return path
