"""Figures of many runs: ``birth plot DIR --by KEY [--metric NAME ...]``.

One curve per value of KEY (mean over seeds, band from min to max), one panel per metric. Where
another swept key varies among the runs of one value of KEY (``--by data_args.k`` on a k x dim
grid), each of its values gets a row of panels, so that no curve averages different configs. The
default metrics are the task's in-context accuracy and loss on the fixed evaluation batch (their
names read from each run's task.json), drawn against the task's floors and, dotted, the
in-context losses of its exact strategies.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from birth.analysis.plots import COLUMN_WIDTH, paper_style, plt
from birth.analysis.table import load_sweep, run_columns
from birth.training.config import ConfigError
from birth.training.runs import RunDir

MAX_ROWS = 8  # rows of panels (combinations of the other swept keys) in one figure
# Two reference values this close are one line: a strategy's loss is measured in float32 on the
# evaluation batch, the floor it equals is exact.
TOLERANCE, DIGITS = 1e-4, 4


def in_context_keys(task: dict, columns: Sequence[str]) -> tuple[str, str]:
    """(accuracy, loss) metric names of the in-context mask of a task.json: the fixed evaluation
    batch's (``eval_`` prefix) where the table has them, else the training batch's."""
    names = task["masks"]["in_context"]
    return tuple(f"eval_{names[k]}" if f"eval_{names[k]}" in columns else names[k] for k in ("acc", "loss"))


def reference_lines(task: dict, metric: str, columns: Sequence[str]) -> list[tuple[float, str, str]]:
    """(value, label, line style) of the floors of ``metric`` when it is the in-context accuracy or
    loss: chance for the accuracy; the floors of the loss (dashed) and each strategy's in-context
    loss (dotted) that no floor already marks."""
    acc, loss = in_context_keys(task, columns)
    floors, lines = task.get("floors", {}), []
    if metric == acc and isinstance(floors.get("chance_acc"), (int, float)):
        lines.append((float(floors["chance_acc"]), "chance", "--"))
    if metric == loss:
        name = task["masks"]["in_context"]["loss"]
        lines += [(float(v), k, "--") for k, v in floors.items() if name in k and _finite(v)]
        for strategy, scores in task.get("strategies", {}).items():
            v = scores.get("in_context", {}).get("loss")
            if _finite(v) and all(abs(v - w) > TOLERANCE for w, _, _ in lines):
                lines.append((float(v), f"strategy: {strategy}", ":"))
    return lines


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rows(df, by: str) -> tuple[list[str], list[tuple]]:
    """The other keys that vary among the runs of one value of ``by``, and their combinations."""
    candidates = [k for k in df.attrs.get("swept", []) + ["recipe"] if k in df.columns and k != by]
    others = [k for k in candidates if (df.groupby(by, dropna=False)[k].nunique(dropna=False) > 1).any()]
    combos = sorted({tuple(r) for r in df[others].drop_duplicates().itertuples(index=False)}, key=repr) \
        if others else [()]
    return others, combos


def plot_sweep(path: str | Path, by: Optional[str] = None, metrics: Optional[Sequence[str]] = None,
               out: Optional[str | Path] = None) -> list[Path]:
    """Draws the runs under ``path`` by ``by`` (default: the first swept key) into
    ``out`` (default ``path/figures``) as ``sweep_<by>.png``; returns the files written."""
    path = Path(path)
    df = load_sweep(path)
    swept = df.attrs.get("swept", [])
    by = by or (swept[0] if swept else None)
    if by is None:
        raise ConfigError(f"--by: give the key to draw one curve per value of; {path} sweeps no key")
    if by not in run_columns(df):
        raise ConfigError(f"--by: {by!r} does not describe the runs of {path}; choose from "
                          f"{', '.join(c for c in run_columns(df) if c not in ('run', 'label', 'path'))}")
    if df.empty:
        raise ConfigError(f"plot: the runs of {path} have no metrics yet")
    tasks = {p: RunDir(p).read_task() for p in df["path"].unique()}
    first_task = tasks[df["path"].iloc[0]]
    metrics = list(metrics or in_context_keys(first_task, df.columns))
    for m in metrics:
        if m not in df.columns or m in run_columns(df) or m == "iter":
            raise ConfigError(f"--metric: no metric {m!r} in the runs of {path} (see docs/metrics.md)")
    others, combos = _rows(df, by)
    if len(combos) > MAX_ROWS:
        raise ConfigError(f"--by: {len(combos)} combinations of the other keys ({', '.join(others)}) would each "
                          f"need a row of panels (at most {MAX_ROWS}); plot a part of the table in Python")
    values = sorted(df[by].dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.78, max(len(values), 2)))
    with paper_style():
        fig, axes = plt.subplots(len(combos), len(metrics), squeeze=False, sharex=True,
                                 figsize=(COLUMN_WIDTH * len(metrics), 2.3 * len(combos)))
        for r, combo in enumerate(combos):
            rows = df
            for k, v in zip(others, combo, strict=True):
                rows = rows[rows[k] == v]
            where = ", ".join(f"{k}={v}" for k, v in zip(others, combo, strict=True))
            for c, metric in enumerate(metrics):
                ax = axes[r][c]
                _panel(ax, rows, by, values, colors, metric, tasks)
                ax.set_title(metric + (f" ({where})" if where else ""))
                if r == len(combos) - 1:
                    ax.set_xlabel("iteration")
        handles, labels = axes[0][0].get_legend_handles_labels()
        lines = any(reference_lines(first_task, m, df.columns) for m in metrics)
        fig.suptitle(f"{path.name}: one curve per {by}; mean over seeds, band min..max"
                     + ("; dashed: floors, dotted: the exact strategies' in-context losses" if lines else ""), y=1.0)
        fig.tight_layout()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False,
                   bbox_to_anchor=(0.5, -0.06 / len(combos)))
        target = Path(out) if out else path / "figures"
        target.mkdir(parents=True, exist_ok=True)
        file = target / f"sweep_{by}.png"
        fig.savefig(file)
        plt.close(fig)
    return [file]


def _panel(ax, rows, by: str, values: list, colors, metric: str, tasks: dict) -> None:
    """One metric: a curve (mean) and band (min..max over runs) per value of ``by``, and the floors,
    each labelled at the right edge: in grey when every value of ``by`` shares it, else in the
    colour of its value."""
    groups = [(i, rows[rows[by] == value]) for i, value in enumerate(values)]
    groups = [(i, g) for i, g in groups if not g.empty]
    lines = {i: _group_lines([tasks[p] for p in g["path"].unique()], metric, rows.columns) for i, g in groups}
    shared = set.intersection(*(set(d) for d in lines.values())) if lines else set()
    marks: dict[tuple, object] = {}  # (value, label) -> colour
    for i, group in groups:
        table = group.pivot_table(index="iter", columns="path", values=metric, aggfunc="first", dropna=False)
        x = table.index.to_numpy(dtype=float)
        ax.plot(x, table.mean(axis=1), color=colors[i], lw=1.2, label=f"{by}={values[i]} (n={table.shape[1]})")
        ax.fill_between(x, table.min(axis=1), table.max(axis=1), color=colors[i], alpha=0.2, lw=0)
        for key, style in lines[i].items():
            if key not in marks:
                marks[key] = "0.45" if key in shared else colors[i]
                ax.axhline(key[0], color=marks[key], ls=style, lw=0.8)
    _label_lines(ax, marks)


def _group_lines(tasks: list[dict], metric: str, columns) -> dict[tuple, str]:
    """(value, label) -> line style of the reference lines of a group of runs: each the mean over
    the runs (a strategy's loss is measured on each seed's evaluation batch), kept only where every
    run has it finite (a strategy that gives a target no probability has an infinite loss)."""
    per_run = [{label: (v, style) for v, label, style in reference_lines(t, metric, columns)} for t in tasks]
    common = [label for label in per_run[0] if all(label in r for r in per_run)]
    return {(round(float(np.mean([r[label][0] for r in per_run])), DIGITS), label): per_run[0][label][1]
            for label in common}


def _label_lines(ax, marks: dict[tuple, str], gap: float = 0.055) -> None:
    """The labels of horizontal lines at the right edge of ``ax``, nudged apart so they stay readable."""
    if not marks:
        return
    low, high = ax.get_ylim()
    placed = []
    for (v, label), color in sorted(marks.items()):
        y = (v - low) / (high - low)
        placed.append([max(y, placed[-1][0] + gap) if placed else y, label, color])
    for y, label, color in placed:
        ax.text(1.01, y, label.removeprefix("strategy: "), transform=ax.transAxes, color=color, fontsize=5.5,
                va="center", ha="left", clip_on=False)
