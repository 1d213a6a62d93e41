"""One-layer vs two-layer transformers on the same task (paper intro and Sec. 3; SPEC §7 claim 3):
the general ("full") architecture with 1 or 2 layers, trained on the full loss, in-context
accuracy and the global / in-context losses against the task's Bayes floors."""
from __future__ import annotations

from birth.experiments import claims as C
from birth.experiments.common import (COLORS, TRIGGERS_K, CurveTable, Output, Recipe, Results, RunSpec,
                                      floor_line, grid, save, style)

NAME = "layers"
FIGURE = "Sec. 3 (one vs two layers)"
ACC = "eval_acc_end"

# The official full script's defaults (preset 'full': pre-LN, ReLU MLP, AdamW lr 0.01, full loss),
# smaller at quick scale: d = 64 with 2 heads, batch 64, T = 64.
SIZES = {
    "tiny": {"model_args.dim": 32, "model_args.n_heads": 2, "data_args.seq_length": 32, "model_args.max_length": 32,
             "optim_args.batch_size": 32, "eval_batch_size": 32, "max_iters": 30, "eval_delta": 10, "device": "cpu"},
    "quick": {"model_args.dim": 64, "model_args.n_heads": 2, "data_args.seq_length": 64, "model_args.max_length": 64,
              "optim_args.batch_size": 64, "eval_batch_size": 128, "max_iters": 300, "eval_delta": 10,
              "device": "cpu"},
    "paper": {"model_args.dim": 128, "model_args.n_heads": 4, "data_args.seq_length": 256,
              "model_args.max_length": 256, "optim_args.batch_size": 512, "eval_batch_size": 512,
              "max_iters": 1000, "eval_delta": 5, "device": "auto"},
}
DEPTHS = {"1 layer": 1, "2 layers": 2}


def specs(scale: str, seeds: int) -> list[RunSpec]:
    groups = {}
    for label, n in DEPTHS.items():
        ov = dict(SIZES[scale])
        ov.update({"model_args.n_layers": n, "data_args.k": TRIGGERS_K[scale], "data_args.fixed_special_toks": True})
        groups[label] = ("full", ov)
    return grid(groups, seeds)


def plot(res: Results, out: Output) -> list:
    import matplotlib.pyplot as plt
    table = CurveTable()
    with style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(3.4 * 1.6, 2.1))
        for (label, _), color in zip(DEPTHS.items(), COLORS):
            if label not in res.groups():
                continue
            table.plot(a1, res, "accuracy", label, ACC, label, color)
            table.plot(a2, res, "losses", label, "eval_loss_head", f"{label}: in-context", color, "-")
            table.plot(a2, res, "losses", label, "eval_loss_bigram", f"{label}: global", color, "--")
        a1.set(title="in-context accuracy", xlabel="iteration", ylim=(-0.02, 1.02))
        a1.legend(frameon=False)
        if res.groups():
            fl = res.floors(res.groups()[0])
            floor_line(a2, fl["floor_loss_bigram"], "Bayes global floor")
            floor_line(a2, fl["nocontext_loss_head"], "no-context ($\\log N$)")
            floor_line(a2, fl["floor_loss_head"], "in-context floor")
        a2.set(title="loss (solid: in-context, dashed: global)", xlabel="iteration", ylabel="nats")
        a2.legend(frameon=False, fontsize=5)
        fig.tight_layout()
        paths = save(fig, out, NAME)
    paths.append(table.write(out.data / f"{NAME}.csv"))
    return paths


def claims(res: Results) -> list[C.Claim]:
    one, two = res.final("1 layer", ACC), res.final("2 layers", ACC)
    outcomes, measured = [], []
    for a1, a2 in C.paired(one, two):
        ok = None if C._nan(a1) or C._nan(a2) else bool(C.at_least(a2, 0.9) and C.at_most(a1, a2 - 0.2))
        outcomes.append(ok)
        measured.append(f"1 layer {C.fmt(a1)}, 2 layers {C.fmt(a2)}")
    return [C.make_claim("3", "A one-layer transformer fails on in-context bigrams; a two-layer one succeeds", FIGURE,
                         "final in-context accuracy (eval batch): 2 layers >= 0.9 and 1 layer at least 0.2 lower",
                         outcomes, measured, NAME)]


def notes(scale: str) -> str:
    s = SIZES[scale]
    return (f"Full architecture (pre-LN, ReLU MLP, learned positions), d = {s['model_args.dim']}, "
            f"{s['model_args.n_heads']} heads, T = {s['data_args.seq_length']}, batch {s['optim_args.batch_size']}, "
            f"{s['max_iters']} steps, AdamW lr 0.01 (official full-script defaults), full loss, "
            f"K = {TRIGGERS_K[scale]} fixed triggers.")


RECIPE = Recipe(NAME, FIGURE, "One-layer vs two-layer transformers", specs, plot, claims, notes)
