"""The theory as a recipe: ``birth reproduce theory`` (and ``all``) runs the four computations of
``birth theory`` into ``OUT/theory/`` and checks claims 6a, 12, 13, 14 and §3.1a on their CSVs.

Nothing is trained: the computations take the place of runs. They are made once per scale and
reused by a rerun (``OUT/theory/params.json`` records what was computed).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from birth.analysis.experiments import claims as C
from birth.analysis.experiments.recipe import Output, Recipe, Results
from birth.analysis.experiments.rules import Checks
from birth.core.corpus import bundled_stats

NAME = "theory"
FIGURE = "Sec. 3, 6 (theory)"
SEED = 0
EXPERIMENTS = ("capacity", "lemma", "noisy", "three-steps")
CHANCE = 1 / bundled_stats().num_tokens  # the theory runs on the bundled corpus
# Per scale: the full sizes of `birth theory all`, the smoke sizes of `--quick`, or (tiny) smaller still.
QUICK = {"tiny": True, "quick": True, "laptop": False, "paper": False}
TINY = {"capacity": {"dims": [16, 32]}, "noisy": {"dims": [16, 32]},
        "three-steps": {"dims": [32, 64], "seq_length": 32, "n_seqs": 128, "search_seqs": 64, "test_seqs": 64}}


def folder(root: Path) -> Path:
    return Path(root) / "theory"


def compute(scale: str, seeds: int, out: Output) -> list[Path]:
    """Runs the four theory experiments into OUT/theory/ unless they are there for this scale."""
    from birth.analysis.theory.experiments import run_experiment
    where = folder(out.root)
    sizes = TINY if scale == "tiny" else {}
    params = {"scale": scale, "quick": QUICK[scale], "seed": SEED, "sizes": sizes}
    marker = where / "params.json"
    done = marker.exists() and json.loads(marker.read_text()) == params and all(
        (where / f"{n}.csv").exists() for n in EXPERIMENTS)
    if not done:
        where.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        for name in EXPERIMENTS:
            run_experiment(name, where, seed=SEED, quick=QUICK[scale], log=lambda s: None, **sizes.get(name, {}))
        marker.write_text(json.dumps(params) + "\n")
    return [where / f"{n}.{ext}" for n in EXPERIMENTS for ext in ("png", "csv")] + [where / "summary.md"]


def conditions(scale: str) -> dict[str, dict]:
    return {}


def plot(res: Results, out: Output) -> list[Path]:
    """The figures are written by ``compute``."""
    return []


def _rows(res: Results, name: str) -> list[dict]:
    path = folder(res.root) / f"{name}.csv"
    if res.root is None or not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(row: dict, key: str) -> float:
    v = row.get(key, "")
    return float(v) if v not in ("", None) else math.nan


def _final(rows: list[dict], order: str, d: int) -> float:
    """Accuracy after the last step of ``order`` at width d (idealised model)."""
    steps = [r for r in rows if r["order"] == order and int(r["dim"]) == d and r["ideal"] == "True"]
    return _num(max(steps, key=lambda r: int(r["step"])), "acc") if steps else math.nan


def _ideal_dims(rows: list[dict]) -> list[int]:
    return sorted({int(r["dim"]) for r in rows if r["ideal"] == "True"})


def top_down_vs_other_orders(res: Results) -> list[dict]:
    rows = _rows(res, "three-steps")
    dims = _ideal_dims(rows)
    if not dims:
        return []
    d = dims[-1]
    top = _final(rows, "O2>K2>K1", d)
    others = {o: _final(rows, o, d) for o in ("O2>K1>K2", "K1>O2>K2")}
    return [{"d": d, "O2>K2>K1": top, **others, "margin": top - max(others.values())}]


def three_steps_over_width(res: Results) -> list[dict]:
    rows = _rows(res, "three-steps")
    dims = _ideal_dims(rows)
    if not dims:
        return []
    accs = [_final(rows, "O2>K2>K1", d) for d in dims]
    return [{**{f"d={d}": a for d, a in zip(dims, accs)}, "rho": C.spearman(dims, accs),
             "largest d / chance": accs[-1] / CHANCE}]


def noisy_one_step(res: Results) -> list[dict]:
    rows = _rows(res, "noisy")
    if not rows:
        return []
    dims = sorted({int(r["dim"]) for r in rows})
    acc = [float(np.mean([_num(r, "acc_positions") for r in rows if int(r["dim"]) == d])) for d in dims]
    return [{**{f"d={d}": a for d, a in zip(dims, acc)}, "rho": C.spearman(dims, acc),
             "acc at largest d": acc[-1],
             "closed-form error": max(_num(r, "closed_form_rel_error") for r in rows)}]


def lemma_errors(res: Results) -> list[dict]:
    rows = _rows(res, "lemma")
    if not rows:
        return []
    kind = lambda k: [r for r in rows if r["kind"] == k]
    assoc = kind("association")
    gap = max(abs(_num(r, "recovered") - _num(r, "predicted")) for r in assoc)
    largest = max(abs(_num(r, "predicted")) for r in assoc)
    return [{"Lemma 1 error": max(_num(r, "lemma1_rel_error") for r in kind("gradient_error")),
             "corollary error": max(_num(r, "corollary_rel_error") for r in kind("gradient_error")),
             "association error": gap / largest,
             "span residual": max(_num(r, "residual") for r in kind("span"))}]


def capacity_scaling(res: Results) -> list[dict]:
    rows = _rows(res, "capacity")
    if not rows:
        return []
    ratios = [_num(r, "cross_talk") / _num(r, "cross_talk_predicted") for r in rows if int(r["n_pairs"]) > 1]
    most = max(int(r["n_pairs"]) for r in rows)
    at_most = sorted(((int(r["dim"]), _num(r, "recall_outer")) for r in rows if int(r["n_pairs"]) == most))
    dims, recall = [d for d, _ in at_most], [v for _, v in at_most]
    return [{"cross-talk / prediction": float(np.mean(ratios)), "|M|": most,
             "recall rho over d": C.spearman(dims, recall)}]


UNIT = "theory runs (seed 0)"
_ONE = dict(unit_name=UNIT)
RULES = (
    Checks("6a", "Top-down learning order: W_O^2, then W_K^2, then W_K^1 (three gradient steps)", FIGURE,
           measure_fn=top_down_vs_other_orders, checks=(("margin", ">", 0.0),),
           describe="idealised model, zero init, one population-gradient step per matrix, largest d of the run: "
                    "accuracy of O2>K2>K1 minus the best other complete order", **_ONE),
    Checks("12", "A few top-down population-gradient steps recover the memories (Theorem 3)", FIGURE,
           measure_fn=three_steps_over_width, checks=(("rho", ">=", 0.8), ("largest d / chance", ">=", 10)),
           describe="idealised model, in-context accuracy after W_O2 > W_K2 > W_K1 from zero: Spearman rho over d, "
                    "and accuracy at the largest d over chance (1/N)", **_ONE),
    Checks("13", "Gradients filter the noise: positional noise is ignored after one step", FIGURE,
           measure_fn=noisy_one_step,
           checks=(("closed-form error", "<=", 1e-4), ("rho", ">=", 0.8), ("acc at largest d", ">=", 0.99)),
           describe="one population step from W = 0 on x = w_E(y) + p_t: autograd vs the closed form (relative), "
                    "accuracy over d (mean of the draws)", **_ONE),
    Checks("14", "Learned memories are sums of outer products of the embeddings (Lemma 1)", FIGURE,
           measure_fn=lemma_errors,
           checks=(("Lemma 1 error", "<=", 1e-10), ("corollary error", "<=", 1e-10),
                   ("association error", "<=", 1e-10), ("span residual", "<=", 1e-10)),
           describe="float64: Lemma 1 and its corollary vs autograd (relative), weights stored by one step vs "
                    "p(z)(p(k|z) - 1/N) (relative to the largest), part of W_t - c_t W_0 outside span{w_U w_E^T}",
           **_ONE),
    Checks("§3.1a", "Weight matrices as associative memories: cross-talk ~ sqrt(|M|/d), recall grows with d",
           FIGURE, measure_fn=capacity_scaling,
           checks=(("cross-talk / prediction", ">=", 0.9), ("cross-talk / prediction", "<=", 1.1),
                   ("recall rho over d", ">=", 0.8)),
           describe="outer-product memories of random embeddings: mean measured / predicted cross-talk "
                    "sqrt((|M|-1)/d) over every (d, |M|); Spearman rho of recall over d at the largest |M|", **_ONE),
)


def setup(scale: str, configs: dict) -> str:
    size = "the smoke sizes of `birth theory --quick`" if QUICK[scale] else "the full sizes of `birth theory all`"
    return (f"Computations, not training runs: `birth theory` capacity, lemma, noisy and three-steps at {size}, "
            f"seed {SEED}, into theory/ (summary.md holds the numbers).")


RECIPE = Recipe(NAME, FIGURE, "The theory: associative memories, Lemma 1, noisy inputs, three gradient steps",
                conditions, plot, RULES, setup=setup, compute=compute)
