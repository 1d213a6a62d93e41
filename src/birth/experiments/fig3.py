"""Figure 3: learning the induction head alone (simplified model, in-context loss only), with some
memories frozen at their random initialisation until a step F (the paper: 300 of ~1000).

Top row: in-context accuracy; bottom row: the memory-recall probes W_O^2 (wo1_acc), W_K^2
(wk1_acc), W_K^1 (wk0_acc) and W_K^1 on t < 64 (wk0_64_acc); one column per variant.
"""
from __future__ import annotations

from birth.experiments import claims as C
from birth.experiments.common import (COLORS, CurveTable, Output, Recipe, Results, RunSpec, base, grid, resolved,
                                      save, style)

NAME = "fig3"
FIGURE = "Fig. 3"

# (total steps, freeze step F): F is 30% of the run, as 300 of the paper's ~1000 iterations.
STEPS = {"tiny": (30, 10), "quick": (500, 150), "paper": (1000, 300)}
# Task/width per scale: the README command (K = 5 fixed triggers, d = 256) at paper scale;
# T = 128 at quick scale so that the t < 64 probe differs from the whole-sequence one.
TASK = {
    "tiny": {"data_args.k": 3},
    "quick": {"data_args.k": 5, "data_args.seq_length": 128, "model_args.max_length": 128},
    "paper": {"data_args.k": 5, "model_args.dim": 256},
}
VARIANTS = {  # label -> matrices frozen until F
    "all trained": "",
    "W_O2 frozen": "W_O2",
    "W_K1, W_K2 frozen": "W_K1,W_K2",
    "W_K1 frozen": "W_K1",
    "W_K2 frozen": "W_K2",
}
TITLES = {"all trained": "all trained", "W_O2 frozen": "$W_O^2$ frozen", "W_K1, W_K2 frozen": "$W_K^1$, $W_K^2$ frozen",
          "W_K1 frozen": "$W_K^1$ frozen", "W_K2 frozen": "$W_K^2$ frozen"}
PROBES = [("wo1_acc", "$W_O^2$"), ("wk1_acc", "$W_K^2$"), ("wk0_acc", "$W_K^1$"), ("wk0_64_acc", "$W_K^1$, t<64")]
ACC = "eval_acc_end"


def freeze_step(scale: str) -> int:
    return STEPS[scale][1]


def specs(scale: str, seeds: int) -> list[RunSpec]:
    steps, f = STEPS[scale]
    groups = {}
    for label, frozen in VARIANTS.items():
        preset, ov = base(scale, max_iters=steps, data_args__fixed_special_toks=True, **_flat(TASK[scale]))
        ov["freeze_until"] = f"{f}:{frozen}" if frozen else ""
        groups[label] = (preset, ov)
    return grid(groups, seeds)


def _flat(d: dict) -> dict:
    return {k.replace(".", "__"): v for k, v in d.items()}


def plot(res: Results, out: Output) -> list:
    import matplotlib.pyplot as plt
    f = freeze_step(res.scale)
    table = CurveTable()
    groups = res.groups()
    with style():
        fig, axes = plt.subplots(2, max(len(groups), 1), figsize=(6.75, 2.9), sharex=True, sharey=True,
                                 squeeze=False)
        for j, g in enumerate(groups):
            top, bottom = axes[0, j], axes[1, j]
            table.plot(top, res, "accuracy", g, ACC, "in-context acc.", "k")
            for (key, label), color in zip(PROBES, COLORS):
                table.plot(bottom, res, "probes", g, key, label, color)
            top.set_title(TITLES.get(g, g))
            for ax in (top, bottom):
                if g != "all trained":
                    ax.axvline(f, color="0.5", ls=":", lw=0.8)
                ax.set_ylim(-0.02, 1.02)
            bottom.set_xlabel("iteration")
        axes[0, 0].set_ylabel("in-context accuracy")
        axes[1, 0].set_ylabel("memory recall")
        handles, labels = axes[1, 0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False,
                   title=f"memory recall probes; frozen until iteration {f} (dotted); mean and min..max over seeds",
                   title_fontsize=7)
        paths = save(fig, out, NAME)
    paths.append(table.write(out.data / f"{NAME}.csv"))
    return paths


def claims(res: Results) -> list[C.Claim]:
    f = freeze_step(res.scale)
    rows = []

    # 6: top-down order in joint training
    it, wo = res.curve("all trained", "wo1_acc")
    _, wk1 = res.curve("all trained", "wk1_acc")
    _, wk0 = res.curve("all trained", "wk0_acc")
    outcomes, measured = [], []
    for s in range(len(wo)):
        times = [C.first_reach(it, wo[s], 0.9), C.first_reach(it, wk1[s], 0.9), C.first_reach(it, wk0[s], 0.5)]
        outcomes.append(C.order_holds(times))
        measured.append(f"wo1 {C.fmt_iter(times[0])}, wk1 {C.fmt_iter(times[1])}, wk0 {C.fmt_iter(times[2])}")
    rows.append(C.make_claim("6", "Top-down learning order: W_O^2, then W_K^2, then W_K^1", FIGURE,
                             "joint training: wo1_acc reaches 0.9 before wk1_acc reaches 0.9 before wk0_acc reaches 0.5 "
                             "(first evaluation at or above)", outcomes, measured, NAME))

    # 7: W_O2 frozen -> nothing useful happens before F
    it, acc = res.curve("W_O2 frozen", ACC)
    _, k2 = res.curve("W_O2 frozen", "wk1_acc")
    _, k1 = res.curve("W_O2 frozen", "wk0_acc")
    outcomes, measured = [], []
    for s in range(len(acc)):
        a = C.max_before(it, acc[s], f)
        d2 = C.max_before(it, k2[s], f) - k2[s][0]
        d1 = C.max_before(it, k1[s], f) - k1[s][0]
        outcomes.append(None if any(map(C._nan, (a, d2, d1))) else (C.at_most(a, 0.1) and C.at_most(d2, 0.2) and C.at_most(d1, 0.2)))
        measured.append(f"max acc {C.fmt(a)}, wk1 gain {C.fmt(d2)}, wk0 gain {C.fmt(d1)}")
    rows.append(C.make_claim("7", "W_O^2 must be learned before the key-query matrices", FIGURE,
                             f"W_O2 frozen until {f}: before {f}, in-context accuracy <= 0.1 and wk1_acc, wk0_acc "
                             "rise by <= 0.2 above their value at iteration 0", outcomes, measured, NAME))

    # 8: W_O2 alone is insufficient
    it, acc = res.curve("W_K1, W_K2 frozen", ACC)
    _, wo = res.curve("W_K1, W_K2 frozen", "wo1_acc")
    outcomes, measured = [], []
    for s in range(len(acc)):
        w, a = C.max_before(it, wo[s], f), C.max_before(it, acc[s], f)
        outcomes.append(None if C._nan(w) or C._nan(a) else (C.at_least(w, 0.9) and C.at_most(a, 0.5)))
        measured.append(f"max wo1 {C.fmt(w)}, max acc {C.fmt(a)}")
    rows.append(C.make_claim("8", "W_O^2 alone is insufficient", FIGURE,
                             f"W_K1, W_K2 frozen until {f}: before {f}, wo1_acc reaches 0.9 while in-context "
                             "accuracy stays <= 0.5", outcomes, measured, NAME))

    # 9: W_K2 before W_K1 is easier than the reverse
    it1, a1 = res.curve("W_K1 frozen", ACC)
    it2, a2 = res.curve("W_K2 frozen", ACC)
    outcomes, measured = [], []
    for x, y in C.paired(a1, a2):
        m1, m2 = C.mean_over(it1, x), C.mean_over(it2, y)
        outcomes.append(C.compare(m1, m2, tol=0.01))
        measured.append(f"W_K1 frozen {C.fmt(m1)} vs W_K2 frozen {C.fmt(m2)}")
    rows.append(C.make_claim("9", "Learning W_K^2 before W_K^1 is easier than the reverse", FIGURE,
                             "mean in-context accuracy over the run: W_K1 frozen > W_K2 frozen (by > 0.01, seed-paired)",
                             outcomes, measured, NAME))

    # 10: early positions first
    it, k64 = res.curve("all trained", "wk0_64_acc")
    _, k0 = res.curve("all trained", "wk0_acc")
    t_len = res.config("all trained").data_args.seq_length if res.groups() else 0
    outcomes, measured = [], []
    for s in range(len(k64)):
        times = [C.first_reach(it, k64[s], 0.5), C.first_reach(it, k0[s], 0.5)]
        outcomes.append(C.order_holds(times))
        measured.append(f"wk0_64 {C.fmt_iter(times[0])}, wk0 {C.fmt_iter(times[1])}")
    extra = f"T = {t_len}: with T <= 64 the two probes coincide" if t_len and t_len <= 64 else ""
    rows.append(C.make_claim("10", "W_K^1 learns early positions (t < 64) much faster than late ones", FIGURE,
                             "joint training: wk0_64_acc reaches 0.5 before wk0_acc reaches 0.5", outcomes, measured,
                             NAME, extra_reason=extra))
    return rows


def notes(scale: str) -> str:
    steps, f = STEPS[scale]
    cfg = resolved(specs(scale, 1)[0])
    opt = (f"SGD + momentum lr {cfg.optim_args.learning_rate:g}" if cfg.optim_args.use_sgd else
           f"AdamW lr {cfg.optim_args.learning_rate:g} (the paper used SGD, which is much slower at this size)")
    return (f"Simplified model, in-context loss only, K = {cfg.data_args.k} fixed triggers, "
            f"T = {cfg.data_args.seq_length}, d = {cfg.model_args.dim}, batch {cfg.optim_args.batch_size}, "
            f"{steps} steps, frozen until step {f} (the paper's 300 of ~1000, scaled by {f / 300:.2f}); {opt}.")


RECIPE = Recipe(NAME, FIGURE, "Learning the induction head alone, with memories frozen until a step",
                specs, plot, claims, notes)
