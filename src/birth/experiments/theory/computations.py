"""The theory experiments: capacity, lemma, noisy, three-steps, as computations of one shape.

Each ``Computation`` has three parts: ``compute`` (the numbers: one row per measurement, written
as ``<name>.csv``, plus the facts the text needs), ``figure`` (drawn from those rows) and
``summary`` (its section of ``summary.md``, from the same rows). ``run_experiment`` does the rest
for all of them alike: CSV, figure (``<name>.png`` + ``.pdf``), summary section. Sizes are
arguments of ``compute``; ``quick`` shrinks them for a smoke run.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from birth.tasks.triggers.corpus import bundled_stats  # noqa: E402
from birth.experiments.figures import save, write_dict_csv  # noqa: E402
from birth.analysis.plots import paper_style  # noqa: E402
from birth.experiments.theory import lemmas, memory  # noqa: E402
from birth.experiments.theory.three_steps import ORDERS, ThreeStepConfig, run_orders  # noqa: E402

CHANCE = 1 / bundled_stats().num_tokens  # in-context accuracy of a uniform guess


@dataclass(frozen=True)
class Computation:
    """One theory experiment: compute(seed, quick, log, **sizes) -> (rows, facts); figure(rows, facts)
    -> a matplotlib Figure; summary(rows, facts) -> the lines of its summary.md section."""

    name: str
    compute: Callable[..., tuple[list[dict], dict]]
    figure: Callable[[list[dict], dict], "plt.Figure"]
    summary: Callable[[list[dict], dict], list[str]]


def run_experiment(name: str, out: Path, seed: int = 0, quick: bool = False, log=print, **sizes) -> str:
    """Computes experiment ``name`` into ``out``: NAME.csv, NAME.png/.pdf and its summary.md section
    (returned)."""
    rows, facts = EXPERIMENTS[name].compute(seed=seed, quick=quick, log=log, **sizes)
    return write_experiment(name, out, seed, rows, facts, log)


def write_experiment(name: str, out: Path, seed: int, rows: list[dict], facts: dict, log=print) -> str:
    """NAME.csv, NAME.png/.pdf and the summary.md section of an experiment's computed rows."""
    exp = EXPERIMENTS[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_dict_csv(out / f"{name}.csv", rows)
    with paper_style():
        fig = exp.figure(rows, facts)
        fig.tight_layout()
        save(fig, out, name, dpi=110)
    section = "\n".join([f"## {name} (seed {seed})", *exp.summary(rows, facts)])
    update_summary(out, name, section)
    log(section)
    return section


def update_summary(out: Path, name: str, section: str) -> None:
    """Writes ``section`` into summary.md, replacing an earlier section of the same experiment."""
    path = out / "summary.md"
    text = path.read_text() if path.exists() else "# Theory experiments: what was measured\n"
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{begin}\n{section.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


# -- capacity -----------------------------------------------------------------------------------
def capacity_rows(seed: int = 0, quick: bool = False, log=print, dims=None) -> tuple[list[dict], dict]:
    """Recall of outer-product and learned memories over |M| and d, beside the cross-talk predictions."""
    dims = dims or ([16, 64, 256] if quick else [16, 32, 64, 128, 256, 512, 1024])
    sizes = [16, 64, 256, 1024] if quick else [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    max_learned, steps = (256, 20) if quick else (512, 60)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for d in dims:
        for n in sizes:
            u, v = memory.random_embeddings(n, d, generator=gen), memory.random_embeddings(n, d, generator=gen)
            pairs = memory.random_pairs(n, gen)
            w = memory.outer_memory(u, v, pairs)
            row = {"dim": d, "n_pairs": n, "pairs_per_dim": n / d, "recall_outer": memory.pair_recall(w, u, v, pairs),
                   "recall_predicted": memory.predicted_recall(n, n, d),
                   "cross_talk": memory.cross_talk(u, v, pairs),
                   "cross_talk_predicted": float(memory.predicted_cross_talk(n, d))}
            if n <= max_learned:
                wl, losses = memory.learned_memory(u, v, pairs, steps=steps)
                row.update(recall_learned=memory.pair_recall(wl, u, v, pairs), loss_learned=losses[-1])
            rows.append(row)
        log(f"capacity d={d}: " + " ".join(f"{r['recall_outer']:.2f}" for r in rows if r["dim"] == d))
    return rows, {"dims": dims, "sizes": sizes, "max_learned": max_learned, "steps": steps}


def capacity_summary(rows: list[dict], facts: dict) -> list[str]:
    dims, sizes, max_learned = facts["dims"], facts["sizes"], facts["max_learned"]
    get = lambda d, n, k: next((r.get(k, float("nan")) for r in rows if r["dim"] == d and r["n_pairs"] == n))
    ratio = np.array([r["cross_talk"] / r["cross_talk_predicted"] for r in rows if r["n_pairs"] > 1])
    gap = max(abs(r["recall_outer"] - r["recall_predicted"]) for r in rows)
    dm = dims[len(dims) // 2]
    lines = [f"Outer-product memory W = sum v_j u_i^T of |M| random one-to-one pairs, unit-variance embeddings, "
             f"d in {dims}, |M| in {sizes}; learned memory: {facts['steps']} full-batch GD steps on the "
             f"cross-entropy from W = 0, for |M| <= {max_learned}.",
             f"- measured cross-talk / sqrt((|M|-1)/d): mean {ratio.mean():.3f}, "
             f"range [{ratio.min():.3f}, {ratio.max():.3f}]",
             f"- recall vs its Gaussian prediction: largest gap {gap:.3f}"]
    for d in dims:
        full = [n for n in sizes if get(d, n, "recall_outer") >= 0.99]
        lines.append(f"- d={d}: outer recall >= 0.99 up to |M| = {max(full) if full else 'none'}; "
                     f"at |M| = {sizes[-1]}: {get(d, sizes[-1], 'recall_outer'):.3f}")
    n_l = max(n for n in sizes if n <= max_learned)
    lines.append(f"- d={dm}, |M|={n_l}: outer {get(dm, n_l, 'recall_outer'):.3f}, "
                 f"learned {get(dm, n_l, 'recall_learned'):.3f}")
    return lines


def capacity_figure(rows: list[dict], facts: dict):
    dims, sizes = facts["dims"], facts["sizes"]
    grid = lambda key: np.array([[next(r.get(key, np.nan) for r in rows if r["dim"] == d and r["n_pairs"] == n)
                                  for n in sizes] for d in dims], dtype=float)
    fig, ax = plt.subplots(2, 2, figsize=(8.5, 6.6))
    for a, key, title in ((ax[0, 0], "recall_outer", "outer product  $W=\\sum v_j u_i^\\top$"),
                          (ax[0, 1], "recall_learned", "learned by gradient descent")):
        im = a.imshow(np.ma.masked_invalid(grid(key)), origin="lower", vmin=0, vmax=1, cmap="viridis",
                      aspect="auto")
        a.set_xticks(range(len(sizes)), sizes, rotation=45)
        a.set_yticks(range(len(dims)), dims)
        a.set_xlabel("stored pairs $|M|$")
        a.set_ylabel("width $d$")
        a.set_title(f"recall $R(W,M)$: {title}")
        fig.colorbar(im, ax=a)
    for i, d in enumerate(dims[::2]):
        rs = [r for r in rows if r["dim"] == d]
        color = f"C{i}"
        ax[1, 0].plot([r["n_pairs"] for r in rs], [r["recall_outer"] for r in rs], "o", color=color,
                      label=f"d={d}")
        ax[1, 0].plot([r["n_pairs"] for r in rs], [r["recall_predicted"] for r in rs], ":", color=color)
        rl = [r for r in rs if "recall_learned" in r]
        ax[1, 0].plot([r["n_pairs"] for r in rl], [r["recall_learned"] for r in rl], "s--", color=color,
                      mfc="none", ms=4)
    ax[1, 0].set_xscale("log")
    ax[1, 0].set_xlabel("stored pairs $|M|$")
    ax[1, 0].set_ylabel("recall")
    ax[1, 0].set_title("dots: outer, dotted: Gaussian prediction, squares: learned")
    ax[1, 0].legend()
    ratio = np.array([r["n_pairs"] / r["dim"] for r in rows])
    ax[1, 1].loglog(ratio, [r["cross_talk"] for r in rows], "o", ms=3, alpha=0.7, label="measured")
    xs = np.logspace(np.log10(ratio.min()), np.log10(ratio.max()), 50)
    ax[1, 1].loglog(xs, np.sqrt(xs), "k-", label="$\\sqrt{|M|/d}$")
    ax[1, 1].set_xlabel("$|M|/d$")
    ax[1, 1].set_ylabel("cross-talk $|W u_i - v_j (u_i\\cdot u_i)| / |v_j (u_i \\cdot u_i)|$")
    ax[1, 1].set_title("cross-talk of the outer-product memory")
    ax[1, 1].legend()
    return fig


# -- lemma --------------------------------------------------------------------------------------
def lemma_rows(seed: int = 0, quick: bool = False, log=print) -> tuple[list[dict], dict]:
    """Lemma 1 against autograd (float64), its corollary on the bigram table, and the span property."""
    gen = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    rows = []
    for trial in range(10 if quick else 40):
        d, n_in, n_out = [int(x) for x in torch.randint(4, 97, (3,), generator=gen)]
        w_e, w_u = torch.randn(n_in, d, generator=gen, **f64), torch.randn(n_out, d, generator=gen, **f64)
        joint = torch.rand(n_in, n_out, generator=gen, **f64) ** 4
        joint /= joint.sum()
        w = torch.randn(d, d, generator=gen, **f64).requires_grad_(True)
        (auto,) = torch.autograd.grad(lemmas.memory_population_loss(w, w_e, w_u, joint), w)
        err = float((auto - lemmas.lemma1_gradient(w.detach(), w_e, w_u, joint)).norm() / auto.norm())
        z = torch.zeros(d, d, **f64).requires_grad_(True)
        (g0,) = torch.autograd.grad(lemmas.memory_population_loss(z, w_e, w_u, joint), z)
        cor = float((-0.7 * g0 - lemmas.one_step_from_zero(0.7, w_e, w_u, joint)).norm() / g0.norm())
        rows.append({"kind": "gradient_error", "trial": trial, "dim": d, "lemma1_rel_error": err,
                     "corollary_rel_error": cor})
    # the corollary on the bigram task: z ~ pi_u, y ~ pi_b(.|z), one step of size eta from 0
    stats, d, eta = bundled_stats(), 256, 1.0
    joint = torch.as_tensor(stats.marginal[:, None] * stats.cond, **f64)
    n = joint.shape[0]
    w_e, w_u = (memory.random_embeddings(n, d, generator=gen, dtype=torch.float64) for _ in range(2))
    z = torch.zeros(d, d, **f64).requires_grad_(True)
    (g0,) = torch.autograd.grad(lemmas.memory_population_loss(z, w_e, w_u, joint), z)
    alpha = lemmas.association_weights(-eta * g0, w_e, w_u)                          # recovered weights
    target = eta * (joint - joint.sum(1, keepdim=True) / n)                          # p(z)(p(k|z) - 1/N)
    top = target.flatten().topk(8).indices
    rows += [{"kind": "association", "z": i // n, "k": i % n, "predicted": float(target.flatten()[i]),
              "recovered": float(alpha.flatten()[i])} for i in range(n * n)]
    # gradient descent with weight decay from a random W_0 stays in alpha_0 W_0 + span{w_U w_E^T}
    lr, wd = 20.0, 0.001
    w0 = torch.randn(d, d, generator=gen, **f64) / d ** 0.5
    iterates = lemmas.gradient_descent(w0, w_e, w_u, joint, lr=lr, steps=30 if quick else 100, weight_decay=wd)
    for t, wt in enumerate(iterates):
        rows.append({"kind": "span", "step": t, "residual": lemmas.outside_span(wt - (1 - lr * wd) ** t * w0, w_e, w_u),
                     "residual_raw": lemmas.outside_span(wt, w_e, w_u)})
    rank_ok = bool((alpha.flatten()[top] == alpha.flatten().topk(8).values).all())
    return rows, {"d": d, "lr": lr, "wd": wd, "top8_are_largest": rank_ok}


def _lemma_parts(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    return tuple([r for r in rows if r["kind"] == k] for k in ("gradient_error", "association", "span"))


def lemma_summary(rows: list[dict], facts: dict) -> list[str]:
    errs, assoc, span = _lemma_parts(rows)
    rec, pred = np.array([r["recovered"] for r in assoc]), np.array([r["predicted"] for r in assoc])
    return [
        f"- Lemma 1 vs autograd, {len(errs)} random float64 problems (d, N_in, N in 4..96): max relative error "
        f"{max(r['lemma1_rel_error'] for r in errs):.2e}",
        f"- corollary (one step from W = 0): max relative error {max(r['corollary_rel_error'] for r in errs):.2e}",
        f"- bigram table (z ~ pi_u, y ~ pi_b(.|z)), d = {facts['d']}: stored weights recovered by least squares vs "
        f"p(z)(p(k|z) - 1/N): max |difference| {np.abs(rec - pred).max():.2e} (largest weight {pred.max():.3e}); "
        f"the 8 most likely associations are the 8 largest weights: {facts['top8_are_largest']}",
        f"- GD with weight decay from random W_0 ({len(span) - 1} steps, lr {facts['lr']}, wd {facts['wd']}): part of "
        f"W_t - (1 - lr wd)^t W_0 outside span{{w_U(k) w_E(z)^T}}: max {max(r['residual'] for r in span):.2e} "
        f"(W_t itself: {span[-1]['residual_raw']:.3f} at the last step)"]


def lemma_figure(rows: list[dict], facts: dict):
    errs, assoc, span = _lemma_parts(rows)
    fig, ax = plt.subplots(1, 3, figsize=(10, 3.2))
    ax[0].semilogy([r["dim"] for r in errs], [max(r["lemma1_rel_error"], 1e-18) for r in errs], "o", ms=3,
                   label="Lemma 1 (random $W$)")
    ax[0].semilogy([r["dim"] for r in errs], [max(r["corollary_rel_error"], 1e-18) for r in errs], "x", ms=3,
                   label="corollary ($W=0$)")
    ax[0].set_xlabel("width $d$")
    ax[0].set_ylabel("relative error vs autograd")
    ax[0].set_title("gradient formula, float64")
    ax[0].legend()
    ax[1].plot([r["predicted"] for r in assoc], [r["recovered"] for r in assoc], ".", ms=2)
    lim = max(abs(r["predicted"]) for r in assoc)
    ax[1].plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
    ax[1].set_xlabel("$\\eta\\, p(z)(p(k|z) - 1/N)$")
    ax[1].set_ylabel("weight of $w_U(k) w_E(z)^\\top$ in $W_1$")
    ax[1].set_title("one step from 0 on the bigram table")
    ax[2].semilogy([r["step"] for r in span], [max(r["residual"], 1e-18) for r in span], label="$W_t - c_t W_0$")
    ax[2].semilogy([r["step"] for r in span], [r["residual_raw"] for r in span], label="$W_t$")
    ax[2].set_xlabel("gradient step")
    ax[2].set_ylabel("relative norm outside span")
    ax[2].set_title("iterates stay in span$\\{w_U w_E^\\top\\}$")
    ax[2].legend()
    return fig


# -- noisy inputs -------------------------------------------------------------------------------
def noisy_rows(seed: int = 0, quick: bool = False, log=print, dims=None) -> tuple[list[dict], dict]:
    """One population step from 0 on x = w_E(y) + p_t (and + w_1(z)): exact accuracy over d."""
    dims = dims or ([16, 64, 256] if quick else [16, 32, 64, 128, 256, 512, 1024])
    seeds, n, t = (2 if quick else 5), bundled_stats().num_tokens, 256
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for d in dims:
        for s in range(seeds):
            w_e, pos, w_u = (memory.random_embeddings(m, d, generator=gen) for m in (n, t, n))
            x, y = lemmas.noisy_inputs(w_e, pos)                                     # all N*T inputs
            w = torch.zeros(d, d, requires_grad=True)
            (grad,) = torch.autograd.grad(lemmas.noisy_loss(w, w_u, x, y), w)        # the population gradient
            w1 = -n * grad                                                           # eta = N: W_1 ~ sum w_U w_E^T
            closed = lemmas.noisy_one_step(n, w_e, w_u)
            # a second noise component: the remapped previous token w_1(z) = R w_E(z), R random (as W_O1 W_V1),
            # z uniform; accuracy from score tables with every (y, t, z) enumerated
            remap = torch.randn(d, d, generator=gen) / math.sqrt(d)
            se, sp, sr = (m @ w1.T @ w_u.T for m in (w_e, pos, w_e @ remap.T))      # (N, N), (T, N), (N, N)
            base = se[:, None, :] + sp[None, :, :]                                   # (y, t, k)
            hits = sum(int(((base + sr[z]).argmax(-1) == torch.arange(n)[:, None]).sum()) for z in range(n))
            rows.append({"dim": d, "seed": s, "acc_positions": lemmas.noisy_accuracy(w1, w_u, x, y),
                         "acc_positions_and_token": hits / (n * t * n),
                         "closed_form_rel_error": float((w1 - closed).norm() / closed.norm())})
        log(f"noisy d={d}: acc {np.mean([r['acc_positions'] for r in rows if r['dim'] == d]):.3f}")
    return rows, {"dims": dims, "seeds": seeds, "n": n, "t": t}


def _noisy_stat(rows: list[dict], d: int, key: str) -> tuple[float, float]:
    values = [r[key] for r in rows if r["dim"] == d]
    return float(np.mean(values)), float(np.std(values))


def noisy_figure(rows: list[dict], facts: dict):
    dims, n, t = facts["dims"], facts["n"], facts["t"]
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for key, label in (("acc_positions", "$x = w_E(y) + p_t$"),
                       ("acc_positions_and_token", "$x = w_E(y) + p_t + w_1(z)$")):
        m, sd = np.array([_noisy_stat(rows, d, key) for d in dims]).T
        ax.errorbar(dims, m, yerr=sd, marker="o", capsize=2, label=label)
    ax.axhline(1 / n, color="gray", ls=":", label="chance 1/N")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width $d$")
    ax.set_ylabel("population accuracy after one step")
    ax.set_title(f"noisy inputs: one gradient step from 0 (N={n}, T={t})")
    ax.legend()
    return fig


def noisy_summary(rows: list[dict], facts: dict) -> list[str]:
    n, t = facts["n"], facts["t"]
    cell = lambda d, key: "{:.3f} ± {:.3f}".format(*_noisy_stat(rows, d, key))
    return ([f"One population gradient step from W = 0 on all N*T = {n * t} inputs x = w_E(y) + p_t (y, t uniform), "
             f"unit-variance random embeddings, {facts['seeds']} draws per d; accuracy of argmax_k w_U(k)^T W_1 x over "
             f"the whole population. Autograd step vs the closed form (eta/N) sum_k w_U(k)(w_E(k) - mean w_E)^T: max "
             f"relative error {max(r['closed_form_rel_error'] for r in rows):.1e}.",
             "Second column: a further noise component, the remapped token w_1(z) = R w_E(z) (R random, z uniform).",
             "", "| d | acc, x = w_E(y)+p_t | acc, + w_1(z) |", "|---|---|---|"]
            + [f"| {d} | {cell(d, 'acc_positions')} | {cell(d, 'acc_positions_and_token')} |" for d in facts["dims"]])


# -- Theorem 3 ----------------------------------------------------------------------------------
COMPLETE = ORDERS[:6]  # the six complete orders: the top-down one and the five others
OTHERS = tuple(">".join(n.replace("W_", "") for n in o) for o in COMPLETE[1:])


def three_steps_parts(quick: bool = False, dims=None) -> list[tuple[bool, int]]:
    """The independent pieces of ``three_steps_rows``, in the order of its rows: (ideal, d) for the model
    as coded at every width, then the idealised model at every other one. Each piece is a pure function
    of (seed, sizes), so they may run in any order, in parallel (``birth.experiments.recipes.theory``)."""
    dims = dims or ([64, 256] if quick else [64, 128, 256, 512, 1024])
    ideal_dims = dims[1::2] if quick else dims[::2]
    return [(False, d) for d in dims] + [(True, d) for d in ideal_dims]


def three_steps_part(ideal: bool, d: int, seed: int = 0, quick: bool = False, log=print,
                     **overrides) -> list[dict]:
    """One piece of ``three_steps_rows``: every order at width d, as coded (each step alone; loss line
    search), or idealised (the complete orders; steps 2 and 3 searched together)."""
    cfg = _three_steps_config(d, seed, quick, overrides, ideal=ideal, **({"search": "joint"} if ideal else {}))
    return run_orders(cfg, COMPLETE if ideal else ORDERS, log=log)


def _three_steps_config(d: int, seed: int, quick: bool, overrides: dict, **kw) -> ThreeStepConfig:
    sizes = dict(n_seqs=1024, search_seqs=256, test_seqs=512) if quick else {}
    return ThreeStepConfig(**{"dim": d, "seed": seed, **sizes, **kw, **overrides})


def three_steps_facts(seed: int = 0, quick: bool = False, dims=None, **overrides) -> dict:
    parts = three_steps_parts(quick, dims)
    return {"dims": [d for ideal, d in parts if not ideal], "ideal_dims": [d for ideal, d in parts if ideal],
            "config": _three_steps_config(0, seed, quick, overrides)}


def three_steps_rows(seed: int = 0, quick: bool = False, log=print, dims=None, **overrides) -> tuple[list[dict], dict]:
    """Three population-gradient steps from zero over d: the model as coded (every order, each step
    alone; loss line search) and the idealised model (the three complete orders; the sizes of steps 2
    and 3 searched together for the held-out accuracy after step 3). ``overrides``: ThreeStepConfig fields."""
    rows = [row for ideal, d in three_steps_parts(quick, dims)
            for row in three_steps_part(ideal, d, seed, quick, log, **overrides)]
    return rows, three_steps_facts(seed, quick, dims, **overrides)


class _StepTable:
    """Look-ups in the three-steps rows: a step of an order at width d, its last step, the orders."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.orders = sorted({r["order"] for r in rows if not r["ideal"]}, key=lambda o: (o != "O2>K2>K1", -len(o), o))

    def pick(self, order: str, d: int, step: int, ideal: bool = False) -> dict:
        return next(r for r in self.rows
                    if r["order"] == order and r["dim"] == d and r["ideal"] == ideal and r["step"] == step)

    def final(self, order: str, d: int, ideal: bool = False) -> dict:
        return self.pick(order, d, len(order.split(">")), ideal)


def three_steps_summary(rows: list[dict], facts: dict) -> list[str]:
    table, cfg = _StepTable(rows), facts["config"]
    pick, final, orders = table.pick, table.final, table.orders
    zero = [r for r in rows if r["param"] == "W_K2" and "O2" not in r["order"].split(">")[: int(r["step"]) - 1]]
    lines = [
        f"Simplified Transformer, W_O2, W_K2, W_K1 zero-initialised, one step per matrix on the in-context loss "
        f"(outs >= 2); each gradient from {cfg.n_seqs} sequences; T = {cfg.seq_length}, K = {cfg.k} "
        f"{'fixed' if cfg.fixed_triggers else 'random'} triggers, corpus {cfg.corpus}, no_repeat {cfg.no_repeat}, "
        f"variance-1/d embeddings {cfg.sqrtd_embeddings}, {cfg.precision}. Step size: the update's Frobenius norm "
        f"is searched on a log grid (10^-1..10^8, decades then half-decades) on a held-out batch of {cfg.search_seqs} "
        f"sequences; accuracy is measured on another {cfg.test_seqs}. Chance 1/N = {CHANCE:.3f}.",
        f"- W_K2 steps taken while W_O2 = 0: {len(zero)}; their gradient norms: "
        f"{sorted({r['grad_norm'] for r in zero})} (exactly zero)", "",
        f"Model as coded (line search: lowest held-out {cfg.criterion}); accuracy after each top-down step, "
        "its memory probes, and the final accuracy of the other orders and of each step alone:", "",
        "| d | after O2 | O2>K2 | O2>K2>K1 | wo1 | wk1 | wk0 | " + " | ".join(orders[1:]) + " |",
        "|---" * (7 + len(orders) - 1) + "|"]
    for d in facts["dims"]:
        s3 = pick("O2>K2>K1", d, 3)
        lines.append(f"| {d} | " + " | ".join(f"{pick('O2>K2>K1', d, k)['acc']:.3f}" for k in (1, 2, 3))
                     + f" | {s3['wo1_acc']:.2f} | {s3['wk1_acc']:.2f} | {s3['wk0_acc']:.2f} | "
                     + " | ".join(f"{final(o, d)['acc']:.3f}" for o in orders[1:]) + " |")
    lines += ["", "Idealised model (each matrix reads only its designated components). Step sizes chosen for the "
              "end result, as Theorem 3 asks: step 1 by the lowest held-out loss, then steps 2 and 3 together "
              "(every size of step 2 on the grid, each followed by step 3's gradient and line search) for the "
              "highest held-out accuracy after step 3; the same search for every order:", "",
              "| d | after O2 | O2>K2 | O2>K2>K1 | wk1 | wk0 | " + " | ".join(OTHERS) + " |",
              "|---" * (6 + len(OTHERS)) + "|"]
    for d in facts["ideal_dims"]:
        s3 = pick("O2>K2>K1", d, 3, True)
        lines.append(f"| {d} | " + " | ".join(f"{pick('O2>K2>K1', d, k, True)['acc']:.3f}" for k in (1, 2, 3))
                     + f" | {s3['wk1_acc']:.2f} | {s3['wk0_acc']:.2f} | "
                     + " | ".join(f"{final(o, d, True)['acc']:.3f}" for o in OTHERS) + " |")
    return lines


def three_steps_figure(rows: list[dict], facts: dict):
    table, dims, ideal_dims = _StepTable(rows), facts["dims"], facts["ideal_dims"]
    pick, final = table.pick, table.final
    steps = ((1, "after W_O2"), (2, "after W_K2"), (3, "after W_K1"))
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.6))
    for o in table.orders:
        top = o == "O2>K2>K1"
        ax[0].plot(dims, [final(o, d)["acc"] for d in dims], marker="o" if top else ".", lw=2.2 if top else 1,
                   ls="-" if ">" in o else "--", label=o, zorder=3 if top else 2)
    for step, label in steps:
        ax[1].plot(dims, [pick("O2>K2>K1", d, step)["acc"] for d in dims], marker="o", label=label)
        ax[2].plot(ideal_dims, [pick("O2>K2>K1", d, step, True)["acc"] for d in ideal_dims], marker="o",
                   label=f"O2>K2>K1 {label}")
    for o in OTHERS:
        ax[2].plot(ideal_dims, [final(o, d, True)["acc"] for d in ideal_dims], "--", marker=".", label=o)
    titles = ("model as coded: all orders", "model as coded: top-down, step by step",
              "idealised components")
    for a, title in zip(ax, titles):
        a.set_xscale("log", base=2)
        a.set_xlabel("width $d$")
        a.set_title(title)
        a.axhline(CHANCE, color="gray", ls=":", lw=0.8)
        a.legend()
    # ten orders: their legend goes under the panel, where it hides no curve
    ax[0].legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, fontsize="small")
    ax[0].set_ylabel("in-context accuracy (outs $\\geq 2$)")
    return fig


EXPERIMENTS: MappingProxyType[str, Computation] = MappingProxyType({c.name: c for c in (
    Computation("capacity", capacity_rows, capacity_figure, capacity_summary),
    Computation("lemma", lemma_rows, lemma_figure, lemma_summary),
    Computation("noisy", noisy_rows, noisy_figure, noisy_summary),
    Computation("three-steps", three_steps_rows, three_steps_figure, three_steps_summary),
)})
