"""What every recipe shares: the recipe interface, scales and seeds, reading the runs of a recipe
back as per-seed curves, mean-and-band plotting, figure and CSV writing.

A recipe (one module per paper figure) is data plus three functions:

- ``specs(scale, seeds)``: the runs it needs, as ``RunSpec``s (a condition label, a seed index,
  a preset and dotted overrides);
- ``plot(results, out)``: figures into ``out.figures`` and the plotted numbers into ``out.data``;
- ``claims(results)``: rows of the claims table (``birth.experiments.claims``).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from birth.config import ConfigError

SCALES = ("tiny", "quick", "paper")
DEFAULT_SEEDS = 3

# The simplified model trained on the in-context loss only (the quick preset's model and optimiser),
# at each scale. Recipes add their task and their variants on top.
#   tiny:  tests only (seconds); nothing is expected to be learned reliably
#   quick: sized so that `birth reproduce all` fits in 30 minutes on 2 CPU cores (AdamW: SGD is far
#          slower at this size, see the optim recipe)
#   paper: SPEC §6: batch 512, T = 256, d = 128, SGD + momentum lr 0.03, wd 1e-4 (README command)
SIMPLIFIED: dict[str, tuple[str, dict]] = {
    "tiny": ("quick", {"data_args.seq_length": 32, "model_args.max_length": 32, "model_args.dim": 32,
                       "optim_args.batch_size": 32, "eval_batch_size": 32, "max_iters": 30, "eval_delta": 10}),
    "quick": ("quick", {"model_args.dim": 64, "optim_args.batch_size": 64, "eval_batch_size": 128,
                        "max_iters": 400, "eval_delta": 10}),
    "paper": ("paper-readme", {"data_args.seq_length": 256, "model_args.max_length": 256, "model_args.dim": 128,
                               "optim_args.batch_size": 512, "eval_batch_size": 512, "max_iters": 1000,
                               "eval_delta": 5, "device": "auto"}),
}


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"--scale: unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return scale


def base(scale: str, **extra) -> tuple[str, dict]:
    """(preset, overrides) of the simplified head-only model at ``scale``, plus ``extra`` overrides
    (keys may use ``__`` for ``.``: ``data_args__k=5``)."""
    preset, overrides = SIMPLIFIED[check_scale(scale)]
    merged = dict(overrides)
    merged.update({k.replace("__", "."): v for k, v in extra.items()})
    return preset, merged


def seed_overrides(index: int) -> dict:
    """Seed ``index`` varies both the data stream and the initialisation (the evaluation batch stays)."""
    return {"seed": 42 + index, "init_seed": index}


@dataclass(frozen=True)
class RunSpec:
    """One run of a recipe: ``group`` is the condition (one curve), ``seed`` the seed index."""

    group: str
    seed: int
    preset: Optional[str]
    overrides: dict

    def all_overrides(self) -> dict:
        return {**self.overrides, **seed_overrides(self.seed)}


def grid(groups: dict[str, tuple[str, dict]], seeds: int) -> list[RunSpec]:
    """Every condition (label -> (preset, overrides)) times ``seeds`` seeds."""
    return [RunSpec(g, s, preset, dict(ov)) for g, (preset, ov) in groups.items() for s in range(seeds)]


@dataclass
class Output:
    """Where a reproduction writes: ``root/figures``, ``root/data``, ``root/runs``."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


@dataclass
class Recipe:
    name: str
    figure: str                 # the paper figure it reproduces
    title: str
    specs: Callable[[str, int], list[RunSpec]]
    plot: Callable[["Results", Output], list[Path]]
    claims: Callable[["Results"], list]
    notes: Callable[[str], str] = lambda scale: ""


# ---------------------------------------------------------------------------------------------
# Reading runs back

class Results:
    """The completed runs of a recipe, by condition; curves are per seed on common iterations."""

    def __init__(self, scale: str, runs: dict[str, list[tuple[int, Path]]], order: Sequence[str]):
        self.scale = scale
        self._runs = runs            # group -> [(seed index, run dir)] of completed runs
        self.order = list(order)     # groups in the order the recipe lists them
        self._metrics: dict[Path, list[dict]] = {}

    @classmethod
    def from_specs(cls, scale: str, pairs: Sequence[tuple[RunSpec, Path]],
                   complete: Callable[[Path], bool]) -> "Results":
        """``pairs``: (spec, its run directory); runs for which ``complete`` is false are left out."""
        runs: dict[str, list[tuple[int, Path]]] = {}
        order: list[str] = []
        for spec, path in pairs:
            if spec.group not in order:
                order.append(spec.group)
            if complete(Path(path)):
                runs.setdefault(spec.group, []).append((spec.seed, Path(path)))
        return cls(scale, runs, order)

    def groups(self) -> list[str]:
        return [g for g in self.order if self._runs.get(g)]

    def seeds(self, group: str) -> list[int]:
        return [s for s, _ in self._runs.get(group, [])]

    def run_dirs(self, group: str) -> list[Path]:
        return [p for _, p in self._runs.get(group, [])]

    def metrics(self, path: Path) -> list[dict]:
        if path not in self._metrics:
            from birth.runs import RunDir
            self._metrics[path] = RunDir(path).read_metrics()
        return self._metrics[path]

    def curve(self, group: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(iters, values (n_seeds, n_iters)): NaN where a run has no value at an iteration."""
        runs = [self.metrics(p) for p in self.run_dirs(group)]
        iters = sorted({r["iter"] for rows in runs for r in rows})
        index = {it: i for i, it in enumerate(iters)}
        values = np.full((len(runs), len(iters)), np.nan)
        for s, rows in enumerate(runs):
            for r in rows:
                v = r.get(key)
                if isinstance(v, (int, float)) and v is not None:
                    values[s, index[r["iter"]]] = float(v)
        return np.asarray(iters, dtype=float), values

    def final(self, group: str, key: str) -> np.ndarray:
        """The last logged value of ``key`` for each seed."""
        _, values = self.curve(group, key)
        out = []
        for row in values:
            finite = row[~np.isnan(row)]
            out.append(finite[-1] if finite.size else np.nan)
        return np.asarray(out)

    def task(self, group: str) -> dict:
        from birth.runs import RunDir
        return RunDir(self.run_dirs(group)[0]).read_task()

    def floors(self, group: str) -> dict:
        return self.task(group)["floors"]

    def config(self, group: str):
        from birth.runs import RunDir
        return RunDir(self.run_dirs(group)[0]).read_config()


# ---------------------------------------------------------------------------------------------
# Plotting and writing

COLORS = ["#c0392b", "#2471a3", "#229954", "#7d3c98", "#d68910", "#17a589", "#566573", "#a04000"]


def style():
    """The paper style of ``birth.plots`` (serif, small readable sizes)."""
    from birth.plots import paper_style
    return paper_style()


def band(ax, iters: np.ndarray, values: np.ndarray, label: str, color: str, ls: str = "-") -> None:
    """Mean over seeds as a line, min..max over seeds as a shaded band."""
    if values.size == 0:
        return
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
    ax.plot(iters, mean, ls, color=color, label=label)
    if values.shape[0] > 1:
        ax.fill_between(iters, lo, hi, color=color, alpha=0.2, linewidth=0)


def floor_line(ax, value: float, label: str, color: str = "0.4") -> None:
    """A dotted horizontal reference line labelled at the left end."""
    if value is not None and math.isfinite(value):
        ax.axhline(value, color=color, ls=":", lw=0.8)
        ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), ha="left", va="bottom",
                    fontsize=6, color=color)


def save(fig, out: Output, name: str) -> list[Path]:
    """``name``.png and .pdf under out.figures; closes the figure."""
    import matplotlib.pyplot as plt
    out.figures.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, kw in (("png", {"dpi": 200}), ("pdf", {})):
        path = out.figures / f"{name}.{ext}"
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
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
        n = (~np.isnan(values)).sum(0)
        for i, it in enumerate(iters):
            self.rows.append([panel, condition, metric, int(it), _num(mean[i]), _num(lo[i]), _num(hi[i]), int(n[i])])

    def plot(self, ax, results: Results, panel: str, group: str, key: str, label: str, color: str,
             ls: str = "-") -> None:
        """Draws the band of ``key`` for ``group`` and records its numbers."""
        iters, values = results.curve(group, key)
        band(ax, iters, values, label, color, ls)
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


# ---------------------------------------------------------------------------------------------
# Shared conditions: recipes that ask for the same config share its runs (same hash, one run).

TRIGGERS_K = {"tiny": 3, "quick": 3, "paper": 5}
RANDOM_STEPS = {"tiny": 30, "quick": 600, "paper": 1000}  # random triggers need longer than fixed ones


def fixed_triggers(scale: str, k: Optional[int] = None, **extra) -> tuple[str, dict]:
    """The simplified model on K fixed triggers (the most frequent tokens), in-context loss."""
    return base(scale, data_args__k=k or TRIGGERS_K[scale], data_args__fixed_special_toks=True, **extra)


def random_triggers(scale: str, k: Optional[int] = None, **extra) -> tuple[str, dict]:
    """The simplified model on K random triggers per sequence (drawn from pi_u), in-context loss."""
    extra.setdefault("max_iters", RANDOM_STEPS[scale])
    return base(scale, data_args__k=k or TRIGGERS_K[scale], data_args__fixed_special_toks=False, **extra)


def load_model(run_dir: Path):
    """The run's Setup on CPU with its final weights loaded."""
    from birth.setup import trained_setup
    return trained_setup(run_dir)


def resolved(spec: RunSpec):
    """The validated TrainConfig of a spec (for notes and labels)."""
    from birth.validation import resolve_config
    return resolve_config(spec.preset, spec.all_overrides())


def describe(spec: RunSpec) -> str:
    """One line of a spec's main settings: triggers, sizes, steps, optimiser."""
    cfg = resolved(spec)
    d, m, o = cfg.data_args, cfg.model_args, cfg.optim_args
    opt = f"SGD + momentum {o.momentum:g} lr {o.learning_rate:g}" if o.use_sgd else f"AdamW lr {o.learning_rate:g}"
    return (f"K = {d.k} {'fixed' if d.fixed_special_toks else 'random'} triggers, T = {d.seq_length}, "
            f"d = {m.dim}, batch {o.batch_size}, {cfg.max_iters} steps, {opt}")
