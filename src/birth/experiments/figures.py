"""Figure and table writing shared by every recipe and the theory: the paper style, mean-and-band
curves, reference lines, PNG + PDF output with the scale's banner, and CSV files."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from birth.analysis.plots import paper_style

COLORS = ["#c0392b", "#2471a3", "#229954", "#7d3c98", "#d68910", "#17a589", "#566573", "#a04000"]


def style():
    """The paper style of ``birth.analysis.plots`` (serif, small readable sizes)."""
    return paper_style()


def spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds (axis 0), ignoring NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


def band(ax, iters: np.ndarray, values: np.ndarray, label: str, color: str, ls: str = "-") -> None:
    """Mean over seeds as a line, min..max over seeds as a shaded band."""
    if values.size == 0:
        return
    mean, lo, hi = spread(values)
    ax.plot(iters, mean, ls, color=color, label=label)
    if values.shape[0] > 1:
        ax.fill_between(iters, lo, hi, color=color, alpha=0.2, linewidth=0)


def floor_line(ax, value: float, label: str, color: str = "0.4", ls: str = ":") -> None:
    """A horizontal reference line (dotted unless ``ls`` says otherwise) labelled at the left end."""
    if value is not None and math.isfinite(value):
        ax.axhline(value, color=color, ls=ls, lw=0.8)
        ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), ha="left", va="bottom",
                    fontsize=6, color=color)


def save(fig, folder: Path, name: str, banner: str = "", dpi: int = 200) -> list[Path]:
    """``name``.png and .pdf under ``folder``, with ``banner`` (e.g. "PREVIEW ...") written across
    the top when given; closes the figure."""
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    if banner:  # above everything, a suptitle included
        title = getattr(fig, "_suptitle", None)
        y = title.get_position()[1] + 0.08 if title is not None else 1.0
        fig.text(0.5, y, banner, ha="center", va="bottom", fontsize=7, color="#b03a2e", weight="bold",
                 transform=fig.transFigure)
    paths = []
    # no creation date in the PDF: redrawing the same data gives the same bytes (no churn in docs/results)
    for ext, kw in (("png", {"dpi": dpi}), ("pdf", {"metadata": {"CreationDate": None}})):
        path = folder / f"{name}.{ext}"
        fig.savefig(path, bbox_inches="tight", **kw)
        paths.append(path)
    plt.close(fig)
    return paths


class CurveTable:
    """The numbers behind curve plots, one row per (panel, condition, metric, iteration)."""

    HEADER = ["panel", "condition", "metric", "iter", "mean", "min", "max", "n_seeds"]

    def __init__(self):
        self.rows: list[list] = []

    def add(self, panel: str, condition: str, metric: str, iters: np.ndarray, values: np.ndarray) -> None:
        mean, lo, hi = spread(values)
        n = (~np.isnan(values)).sum(0)
        for i, it in enumerate(iters):
            self.rows.append([panel, condition, metric, int(it), _num(mean[i]), _num(lo[i]), _num(hi[i]), int(n[i])])

    def plot(self, ax, results, panel: str, group: str, key: str, label: str, color: str, ls: str = "-",
             x_scale: float = 1.0) -> None:
        """Draws the band of ``key`` for ``group`` (at x = iteration x ``x_scale``, e.g. sequences seen)
        and records its numbers (by iteration)."""
        iters, values = results.curve(group, key)
        band(ax, iters * x_scale, values, label, color, ls)
        self.add(panel, group, key, iters, values)

    def write(self, path: Path) -> Path:
        return write_csv(path, self.HEADER, self.rows)


def _num(v: float) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6g}"


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_dict_csv(path: Path, rows: list[dict]) -> Path:
    """Rows of dicts as CSV; the header is every key in order of first appearance."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return write_csv(path, keys, ([r.get(k, "") for k in keys] for r in rows))
