"""The induction phase change on repeated random tokens (Olsson et al. 2022, "In-context Learning and
Induction Heads"; the TransformerLens induction test): uniform random tokens repeated with a period
drawn per sequence (``birth.tasks.repeat``, ``random_period``: no fixed offset to copy from, so
only an induction head predicts the repeats).

What Olsson et al. report, and what this recipe checks:

- the loss on the repeated tokens drops while the loss on the first, unpredictable ones stays at
  log V (the phase change of in-context learning);
- the in-context learning score (loss late in the context minus loss early in it) and the
  prefix-matching (induction) score of the best head change in the same window of steps: their
  co-occurrence argument for induction heads as the mechanism of in-context learning;
- and their causal argument: removing the head (mean-ablating it, through the intervention API)
  removes most of the in-context learning score's gain, and a model that cannot form an induction
  head (one layer) has no phase change.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from birth.experiments import RECIPES
from birth.experiments import claims as C
from birth.experiments.figures import COLORS, CurveTable, floor_line, save, style
from birth.experiments.recipes.markov_chains import attention_only
from birth.experiments.recipe import SCALE_STATUS, Output, Recipe, Results, Size, describe, load_model, tiny_size
from birth.experiments.rules import Checks
from birth.measures.predictions import icl_score
from birth.training.evaluation import Evaluation, Evaluator, evaluation_batch
from birth.training.interventions import Interventions

NAME = "repeat"
FIGURE = "Olsson et al. 2022 (induction phase change)"
GROUP = "repeated random tokens"
ONE_LAYER = "one layer (control)"
V = 64
REPEATED, FIRST = "eval_loss_in_context", "eval_loss_global"

SIZES = {
    "tiny": tiny_size(T=24, d=16, lr=0.01),
    "quick": Size(T=64, d=32, batch=64, steps=400, lr=0.01, eval_every=20, eval_batch=256),
    # 1600 steps: pilot seed 202 had no phase change within 800 (seeds 200 and 201 at 300-350; the same
    # seed on another thread count at 400), issue 28's pilots
    "laptop": Size(T=64, d=32, batch=64, steps=1600, lr=0.01, eval_every=10, eval_batch=256),
    "paper": Size(T=256, d=128, batch=64, steps=3000, lr=1e-3, eval_every=10, eval_batch=256, device="auto"),
}


def conditions(scale: str) -> dict[str, dict]:
    run = lambda **kw: attention_only(SIZES[scale], data_args__task="repeat", data_args__vocab_size=V,
                                      data_args__random_period=True, model_args__sin_cos=False, **kw)
    return {GROUP: run(), ONE_LAYER: run(model_args__n_layers=1)}


DROP = 0.5     # the repeated tokens' loss ends below this fraction of log V
STAY = 0.1     # the first tokens' loss stays within this fraction of log V of it, throughout


def phase_change(res: Results) -> list[dict]:
    it, rep = res.curve(GROUP, REPEATED)
    _, first = res.curve(GROUP, FIRST)
    log_v = math.log(V)
    return [{"repeated, final / log V": float(r[~np.isnan(r)][-1]) / log_v,
             "first tokens, largest |loss - log V| / log V": float(np.nanmax(np.abs(f - log_v))) / log_v}
            for r, f in zip(rep, first)]


def halfway(iters, values, increasing: bool) -> float:
    """The first iteration at which ``values`` has gone half of the way from its first value to its last."""
    ok = ~np.isnan(values)
    v, it = values[ok], np.asarray(iters)[ok]
    if len(v) < 2:
        return math.nan
    mid = v[0] + 0.5 * (v[-1] - v[0])
    return C.first_reach(it, v, mid, above=increasing)


def co_occurrence(res: Results) -> list[dict]:
    """Per seed: when the ICL score, and the best head's prefix-matching score, have changed halfway,
    and the gap between the two in steps, against a window of WINDOW evaluations (not a share of the run:
    a longer run would widen it)."""
    it, icl = res.curve(GROUP, "eval_icl_score")
    _, pm = res.curve(GROUP, "head_induction_max")
    window = res.config(GROUP).eval_delta * WINDOW
    out = []
    for a, b in zip(icl, pm):
        t_icl, t_pm = halfway(it, a, increasing=False), halfway(it, b, increasing=True)
        out.append({"ICL score halfway at": C.step_of(t_icl), "prefix matching halfway at": C.step_of(t_pm),
                    "window - |gap|": window - abs(t_icl - t_pm)})
    return out


WINDOW = 8  # evaluations: 80 steps at the laptop's cadence, a tenth of the run R2 was first sized on
REMOVED = 0.5  # "most of the gain": the share of the ICL score's gain that ablating the head takes away
CONTROL = 0.2  # "no phase change": the one-layer control's gain, as a share of the two-layer model's


def best_head(metrics: dict) -> tuple[int, int]:
    """(layer, head) of the highest prefix-matching score of a run's last evaluation."""
    scores = {k: v for k, v in metrics.items() if k.startswith("head_induction_l") and isinstance(v, float)}
    layer, head = max(scores, key=scores.get)[len("head_induction_l"):].split("h")
    return int(layer), int(head)


@torch.no_grad()
def ablated_icl_score(run_dir, layer: int, head: int) -> float:
    """The ICL score of a run's final model on its evaluation batch with head (layer, head) replaced by
    its mean over the batch (``ablate:L.H:mean``, the intervention API)."""
    setup = load_model(run_dir)
    Interventions(f"ablate:{layer}.{head}:mean", setup.model)
    ev = Evaluation(setup.cfg.max_iters, Evaluator(setup), stepped=None)
    evaluation_batch(ev)
    return icl_score(ev.vectors["loss_by_position"])


def icl_gain(res: Results, group: str) -> list[float]:
    """Per seed: how far the ICL score fell over the run (its first value minus its last)."""
    _, icl = res.curve(group, "eval_icl_score")
    return [float(row[~np.isnan(row)][0] - row[~np.isnan(row)][-1]) for row in icl]


def ablation(res: Results) -> list[dict]:
    """Per seed: the share of the ICL score's gain that mean-ablating the best prefix-matching head
    removes, and the one-layer control's gain as a share of the two-layer model's."""
    _, icl = res.curve(GROUP, "eval_icl_score")
    out = []
    for path, row, gain, control in zip(res.run_dirs(GROUP), icl, icl_gain(res, GROUP), icl_gain(res, ONE_LAYER)):
        layer, head = best_head(res.metrics(path)[-1])
        ablated = ablated_icl_score(path, layer, head)
        final = float(row[~np.isnan(row)][-1])
        out.append({"head": f"L{layer}H{head}", "ICL score gain": gain,
                    "ablated, gain removed": (ablated - final) / gain, "one layer / two layers, gain": control / gain})
    return out


def causal_and_co_occurring(res: Results) -> list[dict]:
    return [{**a, **b} for a, b in zip(co_occurrence(res), ablation(res))]


RULES = (
    Checks("R1", "The loss on the repeated tokens drops while the loss on the first ones stays at log V", FIGURE,
           measure_fn=phase_change, needs=(GROUP,),
           describe=f"final loss on the repeated tokens over log V, and the largest distance of the first tokens' loss "
                    f"from log V over the run, over log V (V = {V})",
           checks=(("repeated, final / log V", "<=", DROP),
                   ("first tokens, largest |loss - log V| / log V", "<=", STAY))),
    Checks("R2", "The in-context learning score and the best head's prefix-matching score change in the same "
                 "window of steps, and the head causes the gain", FIGURE, measure_fn=causal_and_co_occurring,
           needs=(GROUP, ONE_LAYER),
           describe=f"the steps at which each has changed halfway from its first value to its last are within "
                    f"{WINDOW} evaluations of each other; at the end of the run, mean-ablating the head with the "
                    "highest prefix-matching score (ablate:L.H:mean) removes most of the ICL score's gain (first "
                    "value minus last); the one-layer control, trained alike, has no phase change",
           checks=(("window - |gap|", ">=", 0.0), ("ICL score gain", ">", 0.0),
                   ("ablated, gain removed", ">=", REMOVED),
                   ("one layer / two layers, gain", "<=", CONTROL))),
)


def plot(res: Results, out: Output) -> list:
    import matplotlib.pyplot as plt
    table = CurveTable()
    with style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(6.2, 2.4))
        if GROUP in res.groups():
            table.plot(a1, res, "loss", GROUP, REPEATED, "repeated tokens", COLORS[0])
            table.plot(a1, res, "loss", GROUP, FIRST, "first tokens", COLORS[1], "--")
            if ONE_LAYER in res.groups():
                table.plot(a1, res, "loss", ONE_LAYER, REPEATED, "repeated tokens, one layer", COLORS[4], ":")
            floor_line(a1, math.log(V), "log V")
            twin = a2.twinx()
            table.plot(a2, res, "scores", GROUP, "head_induction_max", "prefix matching (best head)", COLORS[2])
            table.plot(a2, res, "scores", GROUP, "head_previous_max", "previous token (best head)", COLORS[3], ":")
            table.plot(twin, res, "scores", GROUP, "eval_icl_score", "ICL score (right)", COLORS[0], "--")
            twin.set_ylabel("ICL score (nats)")
            h1, l1 = a2.get_legend_handles_labels()
            h2, l2 = twin.get_legend_handles_labels()
            a2.legend(h1 + h2, l1 + l2, frameon=False, fontsize=6, loc="upper right")  # the empty corner
        a1.set(title="loss on the evaluation batch", xlabel="iteration", ylabel="nats")
        a1.legend(frameon=False, fontsize=6)
        a2.set(title="head scores and the ICL score", xlabel="iteration", ylabel="score", ylim=(-0.02, 1.02))
        fig.tight_layout()
        paths = save(fig, out.figures, NAME, SCALE_STATUS[res.scale])
    paths.append(table.write(out.data / f"{NAME}.csv"))
    return paths


def setup(scale: str, configs: dict) -> str:
    return (f"Uniform random tokens (V = {V}) repeated with a period drawn per sequence in "
            f"ceil((T+1)/4)..ceil((T+1)/2); "
            f"2-layer attention-only transformer (pre-LN, one head, learned positions), loss on every position; "
            f"{describe(configs[GROUP])}; a one-layer control trained alike. At the end, the head with the highest "
            "prefix-matching score is mean-ablated on the evaluation batch.")


DIFFERENCES = {"paper": "T 256, d 128, 3000 steps at AdamW 1e-3 (Olsson et al. trained language models: there is no "
                        "paper scale of this toy).",
               "quick": "a preview: 400 steps.",
               "laptop": "a toy of Olsson et al.'s phase change: V 64, T 64, d 32."}

RECIPE = Recipe(NAME, FIGURE, "Repeated random tokens: the induction phase change", conditions, plot, RULES,
                setup=setup, differences=DIFFERENCES)

RECIPES.register(NAME, RECIPE)
