"""Many runs as one table: ``birth.load_sweep(DIR)`` and ``birth.events(df, metric, threshold)``.

    df = birth.load_sweep("S")      # a sweep (sweep.json), a reproduction (reproduce.json), a run,
                                    # or a folder of runs: one row per (run, line of metrics.jsonl)
    df.groupby(["data_args.k", "iter"]).eval_acc_end.mean()
    ev = birth.events(df, "eval_acc_end", 0.9)   # per run: the first iteration with acc >= 0.9

The columns before ``iter`` describe the run (``df.attrs["run_columns"]``): one per swept key
(dotted names; ``df.attrs["swept"]``), ``seed`` (the seed index i of ``seed_overrides(i)``),
``run`` (the directory's name), ``label`` and ``path``; a reproduction adds ``recipe`` and
``group``. Every column from ``iter`` on is a metric, NaN where a line has no value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from birth.training.config import ConfigError, flat_dict
from birth.training.runs import RunDir
from birth.training.config import seed_overrides
from birth.launching.sweep import read_index

SEED_KEYS = ("seed", "init_seed", "eval_seed")  # set by the seed index: never a swept key of their own


@dataclass
class Entry:
    """One run of an output folder and the columns that describe it."""

    path: Path
    label: str = ""
    seed: int | None = None
    values: dict = field(default_factory=dict)   # swept key -> value
    extra: dict = field(default_factory=dict)    # recipe, group (a reproduction)


def load_sweep(path: str | Path) -> pd.DataFrame:
    """The long table of every run under ``path``: one row per (run, evaluation). Runs without
    metrics yet add no row; a run still training adds the lines it has written."""
    path = Path(path)
    if (path / "sweep.json").exists():
        entries, swept = _sweep(path)
    elif (path / "reproduce.json").exists():
        entries, swept = _varying(_reproduction(path))
    elif RunDir(path).holds_run():
        entries, swept = [Entry(path, path.name, _seed_index(path))], []
    elif path.is_dir() and any(RunDir(p).holds_run() for p in path.iterdir()):
        entries, swept = _varying([Entry(p, p.name, _seed_index(p)) for p in sorted(path.iterdir())
                                   if RunDir(p).holds_run()])
    else:
        raise ConfigError(f"load_sweep: {path} holds no sweep (sweep.json), reproduction (reproduce.json) or run "
                          "(config.yaml)")
    return _table(entries, swept)


def _sweep(root: Path) -> tuple[list[Entry], list[str]]:
    index = read_index(root)
    entries = [Entry(root / r["run_dir"], r["label"], r["seed"], dict(r["values"])) for r in index["runs"]]
    return entries, list(index["swept"])


def _reproduction(root: Path) -> list[Entry]:
    import json
    state = json.loads((root / "reproduce.json").read_text())
    return [Entry(root / r["run_dir"], r["label"], r["seed"], extra={"recipe": name, "group": r["group"]})
            for name, recipe in state.get("recipes", {}).items() for r in recipe.get("runs", [])]


def _varying(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """The runs with a column for every config key whose value differs between them (seed keys aside)."""
    configs = {e.path: flat_dict(RunDir(e.path).read_config()) for e in entries if RunDir(e.path).holds_run()}
    keys: list[str] = []
    for cfg in configs.values():
        keys += [k for k in cfg if k not in keys and k not in SEED_KEYS]
    swept = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
    for e in entries:
        e.values = {k: configs[e.path].get(k) for k in swept} if e.path in configs else {}
    return [e for e in entries if e.path in configs], swept


def _seed_index(run_dir: Path) -> int | None:
    """The index i whose ``seed_overrides(i)`` the run's seeds are, or None."""
    cfg = RunDir(run_dir).read_config()
    i = cfg.init_seed
    return i if seed_overrides(i) == {k: getattr(cfg, k) for k in SEED_KEYS} else None


def _table(entries: list[Entry], swept: list[str]) -> pd.DataFrame:
    extra = [k for k in ("recipe", "group") if any(k in e.extra for e in entries)]
    run_columns = [*swept, "seed", *extra, "run", "label", "path"]
    rows, metrics = [], ["iter"]
    for e in entries:
        described = {**{k: e.values.get(k) for k in swept}, "seed": e.seed, **e.extra, "run": e.path.name,
                     "label": e.label, "path": str(e.path)}
        for line in RunDir(e.path).read_metrics():
            metrics += [k for k in line if k not in metrics and k not in described]
            rows.append({**described, **line})
    df = pd.DataFrame(rows, columns=run_columns + metrics)
    for key in metrics:  # a metric that was null on every line stays a float column of NaN
        if df[key].dtype == object and df[key].map(lambda v: v is None or isinstance(v, (int, float))).all():
            df[key] = df[key].astype(float)
    df.attrs.update(run_columns=run_columns, swept=list(swept))
    return df


def run_columns(df: pd.DataFrame) -> list[str]:
    """The columns of ``df`` that describe a run (``load_sweep``'s, else those before ``iter``)."""
    cols = df.attrs.get("run_columns") or list(df.columns[:list(df.columns).index("iter")])
    return [c for c in cols if c in df.columns]


def events(df: pd.DataFrame, metric: str, threshold: float, below: bool = False) -> pd.DataFrame:
    """Per run, the first iteration (column ``iter``) at which ``metric`` is at or above ``threshold``
    (at or below with ``below=True``, for losses), NaN if never; one row per run with its run columns."""
    if metric not in df.columns:
        known = [c for c in df.columns if c not in run_columns(df) and c != "iter"]
        raise ConfigError(f"events: no metric {metric!r} in the table; it has {', '.join(known[:12])}"
                          + (", ..." if len(known) > 12 else ""))
    cols = run_columns(df)
    reached = df[metric] <= threshold if below else df[metric] >= threshold
    rows = []
    for _, group in df.groupby([c for c in ("recipe", "path") if c in cols] or ["run"], sort=False):
        hits = group.loc[reached.loc[group.index], "iter"]
        rows.append({**group.iloc[0][cols].to_dict(), "iter": float(hits.min()) if len(hits) else math.nan})
    out = pd.DataFrame(rows, columns=[*cols, "iter"])
    out.attrs.update(run_columns=cols, swept=df.attrs.get("swept", []), metric=metric, threshold=threshold,
                     below=below)
    return out
