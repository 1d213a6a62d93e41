"""Optimiser and width: SGD with momentum vs AdamW, and d in {32, 64, 128, 256}, on the simplified
model with fixed triggers (SPEC §5 appendix list: "Adam vs SGD", "dimension sweeps")."""
from __future__ import annotations

from birth.experiments import RECIPES
from birth.experiments.figures import COLORS, CurveTable, save, style
from birth.experiments.recipe import (
    SCALE_STATUS, Output, Recipe, Results, Size, describe, simplified, smaller_than_paper, paper_size, tiny_size)
from birth.experiments.rules import ACC, FinalAtLeast, IncreasesWith

NAME = "optim"
FIGURE = "App. (optimiser, width)"
K = 3  # fixed triggers
SGD, ADAMW = "SGD + momentum", "AdamW"

# Everything this recipe trains, per scale: sizes (lr: SGD's), widths of the sweep (SGD), AdamW's lr.
SIZES = {
    "tiny": tiny_size(),
    "quick": Size(T=64, d=64, batch=64, steps=400, lr=0.1),
    "laptop": Size(T=64, d=128, batch=64, steps=1000, lr=0.1, eval_every=20),
    "paper": paper_size(),
}
WIDTHS = {"tiny": (16, 32), "quick": (32, 64, 128, 256), "laptop": (32, 64, 128, 256), "paper": (32, 64, 128, 256)}
ADAMW_KEYS = {"optim_args.use_sgd": False, "optim_args.learning_rate": 0.01, "optim_args.beta1": 0.9,
              "optim_args.beta2": 0.95}  # the basic script's AdamW


def width_label(d: int) -> str:
    return f"d = {d}"


def conditions(scale: str) -> dict[str, dict]:
    fixed = dict(data_args__k=K, data_args__fixed_special_toks=True)
    out = {SGD: simplified(SIZES[scale], **fixed),
           ADAMW: {**simplified(SIZES[scale], **fixed), **ADAMW_KEYS}}
    for d in WIDTHS[scale]:
        out[width_label(d)] = simplified(SIZES[scale], model_args__dim=d, **fixed)
    return out


def plot(res: Results, out: Output) -> list:
    import matplotlib.pyplot as plt
    import numpy as np
    table = CurveTable()
    with style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(3.4 * 1.6, 2.1), sharey=True)
        for group, color in zip((SGD, ADAMW), COLORS):
            if group in res.groups():
                lr = res.config(group).optim_args.learning_rate
                table.plot(a1, res, "optimiser", group, ACC, f"{group} (lr {lr:g})", color)
        a1.set(title="optimiser", xlabel="iteration", ylabel="in-context accuracy", ylim=(-0.02, 1.02))
        a1.legend(frameon=False)
        widths = WIDTHS[res.scale]  # an ordered variable: light (narrow) to dark (wide) on one colour map
        for d, color in zip(widths, plt.get_cmap("viridis_r")(np.linspace(0.25, 1.0, len(widths)))):
            if width_label(d) in res.groups():
                table.plot(a2, res, "width", width_label(d), ACC, width_label(d), color)
        a2.set(title=f"width ({SGD})", xlabel="iteration")
        # between the curves that reach 0.9 and the slow d = 32 one
        a2.legend(frameon=False, loc="center right", bbox_to_anchor=(1.0, 0.64), ncol=2)
        fig.tight_layout()
        paths = save(fig, out.figures, NAME, SCALE_STATUS[res.scale])
    paths.append(table.write(out.data / f"{NAME}.csv"))
    return paths


def _forms(id_: str, group: str) -> FinalAtLeast:
    return FinalAtLeast(id_, f"An induction head forms (layer-2 attention on the token after an earlier "
                             f"occurrence) with {group}", FIGURE, group=group, bounds=(("eval_score2_acc", 0.9),))


RULES = (
    _forms("4c", SGD),
    _forms("4d", ADAMW),
    IncreasesWith("§3.1b", "Associative memories recall better in higher dimension (less cross-talk between "
                           "random embeddings) [derived, SPEC §3.1]", FIGURE,
                  select="d = ", key="model_args.dim", metric=ACC, stat="final"),
)


DIFFERENCES = {
    "quick": "a preview: d = 64 and 400 steps.",
    "laptop": (f"{smaller_than_paper(SIZES['laptop'])}, to fit 2 CPU cores, with SGD lr {SIZES['laptop'].lr:g} "
               "instead of 0.03 for the smaller batch (docs/laptop-scale.md)."),
}


def setup(scale: str, configs: dict) -> str:
    return (f"Simplified model, in-context loss. {describe(configs[SGD])} vs AdamW lr "
            f"{ADAMW_KEYS['optim_args.learning_rate']:g} (betas 0.9, 0.95), same steps; width sweep d in "
            f"{list(WIDTHS[scale])} with SGD.")


RECIPE = Recipe(NAME, FIGURE, "SGD + momentum vs AdamW, and model width", conditions, plot, RULES, setup=setup,
                differences=DIFFERENCES)

RECIPES.register(NAME, RECIPE)
