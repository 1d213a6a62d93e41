"""Pilot runs that chose the `laptop` scale (docs/laptop-scale.md): small trainings of candidate
settings, in parallel, with a one-line summary each (wall time, final metrics, first iteration at
which each memory probe reaches 0.5 and 0.9).

    python scripts/pilots.py GROUP [--out DIR] [--jobs 2]
    python scripts/pilots.py --list

Runs are cached by config hash under --out (default /tmp/birth-pilots), so rerunning a group only
prints its table.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from birth.experiments.recipes import fig2, fig3, fig4, layers
from birth.experiments.recipe import PILOT_SEEDS
from birth.training.config import seed_overrides
from birth.training.build import parse_freeze_until
from birth.launching.jobs import make_job, run_jobs
from birth.launching.local import LocalBackend
from birth.training.runs import RunDir

# The simplified model on the in-context loss with frozen embeddings and W_U, SGD + momentum 0.9.
BASE = {"loss_head_only": True, "model_args.freeze_embeddings": True, "model_args.freeze_output": True,
        "optim_args.use_sgd": True, "optim_args.momentum": 0.9, "optim_args.weight_decay": 1e-4,
        "optim_args.batch_size": 64, "eval_batch_size": 128, "eval_delta": 10, "device": "cpu",
        "data_args.seq_length": 64, "model_args.max_length": 64, "model_args.dim": 64}
FIXED = {"data_args.k": 3, "data_args.fixed_special_toks": True}
RANDOM = {"data_args.k": 3, "data_args.fixed_special_toks": False}


# the frozen Fig. 3 columns until step 500, as pilots 9 to 11 ran them (the scale froze them all until 500 then)
F500 = {label: {"freeze_until": f"500:{frozen}"} for label, frozen in fig3.VARIANTS.items() if frozen}


def _v(**kw) -> dict:
    return {k.replace("__", "."): v for k, v in kw.items()}


# Pilots from 13 on use the pilot seeds 100, 101, 102, never a published (10-15) or older (0-2) one.
PILOT = range(PILOT_SEEDS, PILOT_SEEDS + 3)


def _pilot(recipe_conditions: dict, labels, seeds=PILOT, **changes) -> dict[str, dict]:
    return {f"{label}, seed {s}": {**recipe_conditions[label], **changes, **seed_overrides(s)}
            for label in labels for s in seeds}


GROUPS: dict[str, dict[str, dict]] = {
    # 1. SGD learning rate at the quick sizes (B 64, T 64, d 64): fixed and random triggers
    "lr": {f"{trig} lr {lr:g}": {**BASE, **t, "optim_args.learning_rate": lr, "max_iters": 800}
           for lr in (0.1, 0.3, 1.0) for trig, t in (("fixed", FIXED), ("random", RANDOM))},
    # 2. width and a smaller step, longer: does W_K^1 (previous-token head, score_acc) complete?
    "width": {f"{trig} d {d} lr {lr:g}": {**BASE, **t, "model_args.dim": d, "optim_args.learning_rate": lr,
                                          "max_iters": 2000, "eval_delta": 20}
              for d in (64, 128) for lr in (0.03, 0.1) for trig, t in (("fixed", FIXED), ("random", RANDOM))},
    # 3. the previous-token head (score_acc) is limited by positional cross-talk ~ sqrt(T/d): d 256
    "prevtoken": {
        **{f"{trig} d 256 lr {lr:g}": {**BASE, **t, "model_args.dim": 256, "optim_args.learning_rate": lr,
                                       "max_iters": 1500, "eval_delta": 20}
           for lr in (0.03, 0.1) for trig, t in (("fixed", FIXED), ("random", RANDOM))},
    },
    # 4. the Fig. 3 freezing at T 128, K 5, d 128, lr 0.1 (W_O2 alone, and W_O2 frozen, until 300)
    "fig3": {
        **{f"fig3 {frozen} frozen": {**BASE, "data_args.k": 5, "data_args.fixed_special_toks": True,
                                     "data_args.seq_length": 128, "model_args.max_length": 128,
                                     "model_args.dim": 128, "optim_args.learning_rate": 0.1, "max_iters": 600,
                                     "freeze_until": f"300:{frozen}"}
           for frozen in ("W_O2", "W_K1,W_K2")},
    },
    # 4b. at lr 0.1, W_O2 alone reached only 0.71 by step 300: larger steps (and a check of claim 7's drift)
    "fig3lr": {f"fig3 {frozen} frozen lr {lr:g}": {**BASE, "data_args.k": 5, "data_args.fixed_special_toks": True,
                                                   "data_args.seq_length": 128, "model_args.max_length": 128,
                                                   "model_args.dim": 128, "optim_args.learning_rate": lr,
                                                   "max_iters": 320, "freeze_until": f"300:{frozen}"}
               for frozen in ("W_O2", "W_K1,W_K2") for lr in (0.2, 0.3)},
    # 4c. lr 0.3 breaks claim 7 (wk1 drifts by 0.4 with W_O2 frozen); lr 0.2 gains too little by 300:
    #     a later freeze step, or a larger batch
    "fig3f": {f"fig3 {frozen} frozen lr {lr:g} batch {b} F {f}": {
        **BASE, "data_args.k": 5, "data_args.fixed_special_toks": True, "data_args.seq_length": 128,
        "model_args.max_length": 128, "model_args.dim": 128, "optim_args.learning_rate": lr,
        "optim_args.batch_size": b, "max_iters": f + 20, "freeze_until": f"{f}:{frozen}"}
        for frozen in ("W_O2", "W_K1,W_K2") for lr, b, f in ((0.2, 64, 500), (0.1, 128, 300), (0.2, 128, 300))},
    # 5. Fig. 4 (a) with SGD: one trigger, the full loss and a linear W_F; random vs fixed triggers by frequency
    "fig4": {f"fig4a {label}": {**BASE, "data_args.k": 1, "data_args.fixed_special_toks": offset is not None,
                                "data_args.special_toks_offset": offset or 0, "loss_head_only": False,
                                "model_args.final_ffn": True, "model_args.dim": 128,
                                "optim_args.learning_rate": 0.1, "max_iters": 1000, "eval_delta": 20}
             for label, offset in (("random", None), ("1st", 0), ("2nd", 1), ("6th", 5))},
    # 6. claim 6b (SPEC §9.11): with random triggers, does wk1 reach 0.5 before wk0? At T 64 wk0 came
    #    first (groups 1-2); T 128 gives W_K^1 twice the positions and W_K^2 twice the in-context targets.
    "order": {f"random T 128 d 128 lr {lr:g}": {**BASE, **RANDOM, "data_args.seq_length": 128,
                                                 "model_args.max_length": 128, "model_args.dim": 128,
                                                 "optim_args.learning_rate": lr, "max_iters": 1500, "eval_delta": 20}
              for lr in (0.03, 0.1)},
    # 7. after the laptop run (evidence, not a choice of scale): claim 4a's rule at twice fig2's steps
    "fig2x2": {f"fig2 fixed, 4000 steps, seed {s}": {**fig2.conditions("laptop")[fig2.FIXED], "max_iters": 4000,
                                                     **seed_overrides(s)} for s in range(3)},
    # 9. after the second full run (evidence for claim 7, not a choice of scale): the two frozen
    #    Fig. 3 variants at lr 0.15 and 0.1 until F = 500, seeds 0-2, stopped just after F
    "fig3claim7": {f"fig3 {label}, lr {lr:g}, seed {s}": {**fig3.conditions("laptop")[label], **F500[label],
                                                         "max_iters": 520, "optim_args.learning_rate": lr,
                                                         **seed_overrides(s)}
                   for label in ("W_O2 frozen", "W_K1, W_K2 frozen") for lr in (0.15, 0.1) for s in range(3)},
    # 10. claim 7 again: the same two variants at lr 0.2 and F = 500, with batch 128 instead of 64
    #    (less noise in each step at the same expected progress of W_O2)
    "fig3batch128": {f"fig3 {label}, batch 128, seed {s}": {**fig3.conditions("laptop")[label], **F500[label],
                                                          "max_iters": 520, "optim_args.batch_size": 128,
                                                          **seed_overrides(s)}
                     for label in ("W_O2 frozen", "W_K1, W_K2 frozen") for s in range(3)},
    # 11. claim 7 at d 256 (the README's width for Fig. 3): with W_O2 frozen the keys drift along the
    #     mean diagonal of the random w_U^T W_O2 W_V2 w_E, whose size relative to what W_O2 alone
    #     must learn may shrink with d; same two variants at lr 0.2, F = 500, stopped at step 520
    "fig3d256": {f"fig3 {label}, d 256, seed {s}": {**fig3.conditions("laptop")[label], **F500[label],
                                                  "max_iters": 520, "model_args.dim": 256, **seed_overrides(s)}
                 for label in ("W_O2 frozen", "W_K1, W_K2 frozen") for s in range(3)},
    # 11b. at d 256, W_O2 alone reached 0.9 by step 80-100 at lr 0.2 (about 360 at d 128), but the
    #     keys under a frozen W_O2 flickered by two triggers within 60 steps: smaller steps, frozen
    #     until the paper's F = 300, stopped at step 320
    "fig3d256lr": {f"fig3 {label}, d 256, lr {lr:g}, seed {s}": {
        **fig3.conditions("laptop")[label], "max_iters": 320, "model_args.dim": 256,
        "optim_args.learning_rate": lr, "freeze_until": f"300:{frozen}", **seed_overrides(s)}
        for label, frozen in (("W_O2 frozen", "W_O2"), ("W_K1, W_K2 frozen", "W_K1,W_K2"))
        for lr in (0.1, 0.05) for s in range(3)},
    # 12. back at d 128 (the scale): the paper's F = 300 for the columns of claim 9 (W_K1 frozen,
    #     W_K2 frozen), full length
    "fig3f300": {f"fig3 {label}, F 300, seed {s}": {**fig3.conditions("laptop")[label],
                                                  "freeze_until": f"300:{frozen}", **seed_overrides(s)}
                 for label, frozen in (("W_K1 frozen", "W_K1"), ("W_K2 frozen", "W_K2")) for s in range(3)},
}


# 13-16: sizing the rules of the unseen-seeds issue (every event of an order within the run; claim
# 7 on the 65-way wk1_full_acc; claim 10 on one key set; claim 3 against the order-free strategy)
GROUPS.update({
    # 13. joint training to 3000 steps: when do wk0_late (claim 10) and wk0 (claim 6b, random triggers) reach 0.5?
    "long3": _pilot(fig3.conditions("laptop"), ("all trained", fig3.RANDOM_JOINT), max_iters=3000),
    # 14. claim 7 on the 65-way probe: W_O2 frozen until the paper's 300, stopped at 320
    "claim7": _pilot(fig3.conditions("laptop"), ("W_O2 frozen",), max_iters=320),
    # 15. claim 2: when does the random trigger's in-context loss drop? 3000 steps
    "fig4long": _pilot(fig4.conditions("laptop"), ("random trigger",), max_iters=3000),
    # 16. claim 3: the one-layer model against the order-free (counts) strategy
    "layers": _pilot(layers.conditions("laptop"), tuple(layers.DEPTHS)),
})


def first(rows: list[dict], key: str, thr: float) -> str:
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and v >= thr - 1e-6:
            return str(r["iter"])
    return "-"


def before_unfreezing(rows: list[dict], f: int) -> str:
    """Claims 7 and 8 before the freeze step f: the largest wo1_acc and in-context accuracy, and how
    far wk1_acc and wk0_acc rise above their values at iteration 0."""
    before = [r for r in rows if r["iter"] < f]
    top = lambda k: max(r[k] for r in before)
    return (f" | before {f}: max wo1 {top('wo1_acc'):.2f}, max acc {top('eval_acc_end'):.2f}, "
            f"wk1 gain {top('wk1_acc') - rows[0]['wk1_acc']:.2f}, wk0 gain {top('wk0_acc') - rows[0]['wk0_acc']:.2f}")


def summarize(label: str, run_dir: Path, seconds: float, freeze: str = "") -> str:
    rows = RunDir(run_dir).read_metrics()
    if not rows:
        return f"{label:28s} no metrics"
    last = rows[-1]
    fin = lambda k: (f"{last[k]:.2f}" if isinstance(last.get(k), (int, float)) and not math.isnan(last[k]) else "n/a")
    reach = " ".join(f"{k.split('_acc')[0]}@.5/.9={first(rows, k, .5)}/{first(rows, k, .9)}"
                     for k in ("wo1_acc", "wk1_acc", "wk1_full_acc", "wk0_acc", "wk0_early_acc", "wk0_late_acc",
                               "eval_acc_end"))
    return (f"{label:28s} {seconds:6.0f}s  acc {fin('eval_acc_end')} s1 {fin('eval_score_acc')} "
            f"s2 {fin('eval_score2_acc')} wo1 {fin('wo1_acc')} wk1 {fin('wk1_acc')} wk0 {fin('wk0_acc')} "
            f"wk0_64 {fin('wk0_64_acc')} | {reach}"
            + (before_unfreezing(rows, parse_freeze_until(freeze)[0][0]) if freeze else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("group", nargs="?")
    p.add_argument("--out", default="/tmp/birth-pilots")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    if a.list or not a.group:
        print("\n".join(GROUPS))
        return 0
    if a.group not in GROUPS:
        print(f"pilots: unknown group {a.group!r}; choose from {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    jobs = [make_job(a.out, ov, None, label=label) for label, ov in GROUPS[a.group].items()]
    results = run_jobs(jobs, LocalBackend(jobs=a.jobs, threads_per_run=1),
                       lambda r: print(f"  done {r.job.label} ({r.status})", file=sys.stderr, flush=True))
    by_dir = {r.job.run_dir: r for r in results}
    for job in jobs:
        res = by_dir[job.run_dir]
        print(summarize(job.label, Path(job.run_dir), res.summary.get("wall_seconds") or 0.0,
                        GROUPS[a.group][job.label].get("freeze_until", "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
