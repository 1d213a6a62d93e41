"""Claim rules on synthetic metric logs: each rule passes on a log that satisfies it and fails on
one that violates it; the verdict over seeds is PASS / FAIL / INCONCLUSIVE as documented; rule texts
are generated from the thresholds and read the runs' configs."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from birth.experiments import claims as C
from birth.experiments.recipes import fig2, fig3, fig4, layers, optim
from birth.experiments.recipes import markov_chains as markov, repeated_tokens as repeat
from birth.experiments.recipe import Results
from birth.experiments.rules import ACC, Checks, evaluate

ITERS = list(range(0, 200, 10))


def ramp(at: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """A curve at ``lo`` that jumps to ``hi`` at iteration ``at`` (never if at is None)."""
    return [hi if at is not None and it >= at else lo for it in ITERS]


class FakeResults(Results):
    """Results over synthetic logs: group -> list (one per seed) of {metric: curve}. Each group's
    config is the recipe's own at ``scale`` (freeze step, K, widths), with ``changes`` on top."""

    def __init__(self, recipe, logs: dict[str, list[dict[str, list[float]]]], scale: str = "laptop",
                 floors: dict | None = None, tasks: dict | None = None, changes: dict | None = None):
        runs = {g: [(s, Path(f"/fake/{g}/{s}")) for s in range(len(seeds))] for g, seeds in logs.items()}
        super().__init__(scale, runs, list(logs))
        self.rows = {Path(f"/fake/{g}/{s}"): [{"iter": it, **{k: v[i] for k, v in curves.items()}}
                                              for i, it in enumerate(ITERS)]
                     for g, seeds in logs.items() for s, curves in enumerate(seeds)}
        self._floors = floors or {"floor_loss_bigram": 2.2, "floor_loss_head": 0.0, "nocontext_loss_head": 4.17}
        self._tasks = tasks or {}
        self._configs = recipe.RECIPE.configs(scale)
        if changes:
            from birth.training.config import apply
            self._configs = {g: apply(c, changes) for g, c in self._configs.items()}

    def metrics(self, path):
        return self.rows[path]

    def task(self, group):
        return {"floors": self._floors, **self._tasks.get(group, {})}

    def tasks(self, group):
        return [self.task(group)] * len(self.run_dirs(group))

    def config(self, group):
        return self._configs[group]


def claims(recipe, logs, **kw) -> list[C.Claim]:
    return recipe.RECIPE.claims(FakeResults(recipe, logs, **kw))


def by_id(rows, id_) -> C.Claim:
    return next(r for r in rows if r.id == id_)


# ---------------------------------------------------------------------------------------------
# Building blocks

def test_first_reach_finds_the_first_crossing_or_never():
    assert C.first_reach([0, 10, 20], [0.1, 0.95, 0.2], 0.9) == 10
    assert C.first_reach([0, 10, 20], [3.0, 2.0, 1.0], 1.5, above=False) == 20
    assert C.first_reach([0, 10], [0.1, math.nan], 0.9) == math.inf


def test_one_censoring_principle_declared_per_claim():
    """A never-reached event violates a claim that it happens, and is censored at the run's end (later
    than any reached event) for a claim that something is faster; two censored events are tied."""
    from birth.experiments.rules import ReachOrder
    happens = ReachOrder("x", "c", "f", group="g", events=(("a_acc", 0.5), ("b_acc", 0.5)), kind=C.HAPPENS)
    faster = ReachOrder("y", "c", "f", group="g", events=(("a_acc", 0.5), ("b_acc", 0.5)), kind=C.FASTER)
    never_b = {"a": 10.0, "b": C.Never(3000)}
    assert happens.holds(never_b) is False and "b never reached within the run" in happens.why(never_b)
    assert faster.holds(never_b) is True and faster.show(never_b).endswith("(censored)")
    assert faster.slack(never_b) == {"a to b": 2990.0}            # counted at the run's end: a lower bound
    assert happens.slack(never_b)["a to b"] != happens.slack(never_b)["a to b"]  # NaN: no margin
    both = {"a": C.Never(3000), "b": C.Never(3000)}
    assert faster.holds(both) is None and "censored together" in faster.why(both)
    assert happens.holds(both) is False
    assert happens.holds({"a": 10.0, "b": 20.0}) is True and happens.slack({"a": 10.0, "b": 20.0}) == {"a to b": 10.0}
    with pytest.raises(ValueError, match="kind"):
        ReachOrder("z", "c", "f", group="g", events=(("a_acc", 0.5),), kind="sooner")


def test_a_censored_event_is_no_longer_judged_undecidable():
    """The loophole of claims 10, M3 and I-c: early positions learned at 120-240, late ones never in the
    run. The old rule called every seed undecidable (INCONCLUSIVE); a claim that one is faster counts
    the never-reached one as later and decides."""
    from birth.experiments.rules import PairedEarlier, ReachOrder
    seeds = [{"early": 140.0, "late": C.Never(3000)}, {"early": 160.0, "late": C.Never(3000)},
             {"early": 120.0, "late": C.Never(3000)}]
    old = [None if any(math.isinf(t) for t in v.values()) else C.order_holds(list(v.values())) for v in seeds]
    assert C.verdict(old)[0] == C.INCONCLUSIVE
    ten = ReachOrder("10", "c", "f", group="g", events=(("early_acc", 0.5), ("late_acc", 0.5)), kind=C.FASTER)
    assert C.verdict([ten.holds(v) for v in seeds])[0] == C.PASS
    ic = PairedEarlier("I-c", "c", "f", earlier="ideal", later="joint", events=(("k_acc", 0.6),))
    paired = {"k, ideal": 80.0, "k, joint": C.Never(250)}
    assert ic.kind == C.FASTER and ic.holds(paired) is True and ic.slack(paired) == {"k": 170.0}
    assert ic.holds({"k, ideal": C.Never(250), "k, joint": 100.0}) is False


def test_first_reach_says_when_the_run_ended():
    never = C.first_reach([0, 10, 20], [0.1, 0.2, 0.3], 0.9)
    assert math.isinf(never) and never.end == 20 and C.censored_at(never) == 20 and C.censored_at(5.0) == 5.0


def test_order_holds_true_false_and_undecidable():
    assert C.order_holds([10, 20, 30]) is True
    assert C.order_holds([10, 20, math.inf]) is True       # the last never happens: order holds
    assert C.order_holds([20, 10, 30]) is False
    assert C.order_holds([math.inf, 10]) is False
    assert C.order_holds([10, 10, 30]) is None               # same evaluation step
    assert C.order_holds([math.inf, math.inf]) is None


def test_max_before_mean_over_compare_spearman():
    assert C.max_before([0, 10, 20], [0.1, 0.3, 0.9], 20) == 0.3
    assert C.mean_over([0, 10, 20], [0.0, 0.5, 1.0], start=10) == 0.75
    assert C.compare(0.5, 0.3) is True and C.compare(0.3, 0.5) is False
    assert C.compare(0.5, 0.495, tol=0.01) is None
    assert C.spearman([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.5]) == pytest.approx(1.0)
    assert C.spearman([1, 2, 3, 4], [0.5, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    assert math.isnan(C.spearman([1, 2], [0.3, 0.3]))


@pytest.mark.parametrize("outcomes, expected", [
    ([True, True, True], C.PASS),
    ([np.bool_(True), np.bool_(True)], C.PASS),
    ([False, False, False], C.FAIL),
    ([True, False, True], C.INCONCLUSIVE),
    ([True, None, True], C.INCONCLUSIVE),
    ([None, None], C.INCONCLUSIVE),
    ([], C.INCONCLUSIVE),
])
def test_verdict_over_seeds(outcomes, expected):
    verdict, reason = C.verdict(outcomes)
    assert verdict == expected
    assert reason


def test_claims_table_markdown_lists_every_row(tmp_path):
    rows = [C.make_claim("6", "order", "Fig. 3", "rule | with bar", [True, True], ["a", "b"], "fig3",
                         held_out=[True, True], margin="a to b: 10 steps (spread 30)", thin=True),
            C.make_claim("7", "frozen", "Fig. 3", "rule", [False], ["c"], "fig3", held_out=[False]),
            C.make_claim("14", "lemma", "Sec. 3", "errors <= 1e-10", [True], ["d"], "theory", role="check"),
            C.make_claim("6x", "order by a K-way probe", "Fig. 3", "rule", [None], ["e"], "fig3", role="note",
                         kind=C.FASTER)]
    paths = C.write_claims(rows, tmp_path, "claims", {"scale": "quick"})
    md = (tmp_path / "claims.md").read_text()
    # the note is shown and never counted: not among the claims' verdicts
    assert "1 PASS, 1 FAIL, 0 INCONCLUSIVE (1 of the PASS thin); implementation checks: 1 of 1 PASS" in md
    assert "rule \\| with bar" in md and "**FAIL**" in md and "| 2/2, 2/2 |" in md and "**thin**" in md
    assert md.index("Implementation checks") < md.index("| 14 | lemma") < md.index("Notes (") < md.index("| 6x |")
    assert "| happens |" in md and "| faster |" in md
    assert {p.name for p in paths} == {"claims.json", "claims.md"}


def test_claims_json_of_before_the_kinds_is_still_read():
    old = C.make_claim("14", "lemma", "Sec. 3", "rule", [True], ["d"]).as_dict()
    old.pop("kind"), old.pop("role")
    assert C.Claim.from_dict({**old, "kind": "check"}).role == "check"
    assert C.Claim.from_dict(C.make_claim("2", "c", "f", "r", [True], ["m"], kind=C.FASTER).as_dict()).kind == C.FASTER


def test_a_claim_that_passes_on_one_seed_set_only_is_inconclusive():
    row = C.make_claim("9", "easier", "Fig. 3", "rule", [True, True, True], ["a"] * 3, held_out=[True, False, True])
    assert row.verdict == C.INCONCLUSIVE and row.published_verdict == C.PASS and "disagree" in row.reason


def test_the_margin_is_the_worst_seed_and_thin_below_the_spread():
    text, thin = C.margin_of([{"gap": 0.30}, {"gap": 0.02}, {"gap": 0.25}], {})
    assert text.startswith("gap: 0.02") and thin          # 0.02 < the seeds' spread of 0.15
    text, thin = C.margin_of([{"gap": 0.30}, {"gap": 0.28}, {"gap": 0.31}], {})
    assert text.startswith("gap: 0.28") and not thin
    # a seed exactly on its threshold (rho 0.8 against 0.8 reads -1.1e-16 in floating point) has no room
    on_threshold = C.room(0.7999999999999999, 0.8)
    assert on_threshold == 0.0
    text, thin = C.margin_of([{"rho": 0.2}, {"rho": on_threshold}, {"rho": on_threshold}], {})
    assert text.startswith("rho: 0 ") and thin


def test_a_tiny_bound_means_what_it_says():
    # the rounding a comparison forgives is at most a thousandth of its bound: an error of 5e-7
    # against 1e-10 fails (an absolute 1e-6 let it pass), and its room is not read as zero
    assert not C.at_most(5e-7, 1e-10) and C.at_most(3e-16, 1e-10) and C.at_least(0.7999999999, 0.8)
    assert C.room(3e-16, 1e-10, higher=False) == 1e-10 - 3e-16
    text, thin = C.margin_of([{"error": C.room(e, 1e-10, higher=False)} for e in (3.0e-16, 3.1e-16, 4.1e-16)], {})
    assert text.startswith("error: 1e-10") and not thin
    rule = Checks("14", "Lemma 1", "Sec. 6", checks=(("error", "<=", 1e-10),))
    assert not rule.holds({"error": 5e-7}) and rule.holds({"error": 3e-16})


# ---------------------------------------------------------------------------------------------
# Figure 3 rules (the laptop freeze step would leave no iteration after it in ITERS: F = 150 instead)

F = 150
class Fig3Results(FakeResults):
    def __init__(self, logs, **kw):
        super().__init__(fig3, logs, **kw)
        from birth.training.config import apply
        self._configs = {g: apply(c, {"freeze_until": re.sub(r"^\d+:", f"{F}:", c.freeze_until)})
                         for g, c in self._configs.items()}


def fig3_logs(wo_at, wk1_at, wk0_at, wk064_at, frozen_acc_before=0.02, wo_alone=(0.95, 0.3), k1_first=0.8,
              k2_first=0.5, seeds=3, late_at=None, wk1_trig_gain=0.03):
    random = {"wo1_acc": ramp(wo_at), "wk1_acc": ramp(wk1_at), "wk0_acc": ramp(wk0_at, hi=0.6)}
    fixed = {"wo1_acc": ramp(20), "wk1_acc": ramp(10), "wk0_acc": ramp(wk0_at, hi=0.6),
             "wk0_early_acc": ramp(wk064_at, hi=0.7), "wk0_late_acc": ramp(late_at or wk0_at, hi=0.6), ACC: ramp(100)}
    wo_frozen = {ACC: [frozen_acc_before if it < F else 0.9 for it in ITERS],
                 "wk1_trig_auc": [0.5 + (wk1_trig_gain if it >= 50 else 0) for it in ITERS],
                 "wk0_acc": ramp(None, lo=0.01), "wo1_acc": ramp(F)}
    wk_frozen = {"wo1_acc": [wo_alone[0] if it >= 50 else 0.1 for it in ITERS],
                 ACC: [wo_alone[1] if it < F else 0.9 for it in ITERS]}
    return {"all trained": [fixed] * seeds, "W_O2 frozen": [wo_frozen] * seeds,
            "W_K1, W_K2 frozen": [wk_frozen] * seeds,
            "W_K1 frozen": [{ACC: ramp(0, lo=0, hi=k1_first)}] * seeds,
            "W_K2 frozen": [{ACC: ramp(0, lo=0, hi=k2_first)}] * seeds,
            fig3.RANDOM_JOINT: [random] * seeds}


def fig3_claims(logs):
    res = Fig3Results(logs)
    return fig3.RECIPE.claims(res), res


def test_fig3_rules_pass_on_a_log_that_satisfies_them():
    rows, res = fig3_claims(fig3_logs(wo_at=20, wk1_at=40, wk0_at=120, wk064_at=60, late_at=150))
    assert [r.id for r in rows] == ["6", "6b", "7", "8", "9", "10"]
    assert [r.verdict for r in rows] == [C.FAIL] + [C.PASS] * 5  # the original 6 rule: wk1 (K-way) before wo1
    assert by_id(rows, "6b").measured.startswith("wo1 20, wk1 40, wk0 120")
    assert "rule chosen after the original claim 6 rule" in by_id(rows, "6b").note and "K-way" in by_id(rows, "6").note
    # the freeze step in the text is the runs' own, read from their configs
    assert f"until {F}: before {F}" in by_id(rows, "7").rule and "wk1_trig_auc" in by_id(rows, "7").rule
    assert by_id(rows, "6").role == "note" and "not counted" in by_id(rows, "6").note
    assert by_id(rows, "6b").margin == "wo1 to wk1: 20 steps (spread 0)"  # the tightest step of the order


def test_fig3_rules_fail_on_a_log_that_violates_them():
    logs = fig3_logs(wo_at=60, wk1_at=20, wk0_at=40, wk064_at=80, frozen_acc_before=0.4, wo_alone=(0.95, 0.8),
                     k1_first=0.3, k2_first=0.8)
    assert [r.verdict for r in fig3_claims(logs)[0]][1:] == [C.FAIL] * 5


def test_claims_6b_and_10_count_a_never_reached_event_as_later():
    """Both say which is faster: W_K1 (6b) and the late positions (10) never reaching their thresholds
    within the run are censored at its end, later than the events that came."""
    rows, _ = fig3_claims(fig3_logs(wo_at=20, wk1_at=40, wk0_at=None, wk064_at=60, late_at=None))
    for id_ in ("6b", "10"):
        row = by_id(rows, id_)
        assert row.kind == C.FASTER and row.verdict == C.PASS and "(censored)" in row.measured, id_
    assert by_id(rows, "10").margin.startswith("wk0_early to wk0_late: 130 steps")  # censored at the run's end, 190


def test_claim_7_reads_w_k2_by_a_probe_that_can_move():
    """The trigger queries against every key: a drift of 0.03 of AUC is near chance, 0.2 is learning.
    (The old probe, wk1_full_acc, sat at 0.09 in every arm: its gain could not exceed the bound.)"""
    ok, _ = fig3_claims(fig3_logs(20, 40, 120, 60, late_at=150, wk1_trig_gain=0.03))
    bad, _ = fig3_claims(fig3_logs(20, 40, 120, 60, late_at=150, wk1_trig_gain=0.2))
    assert by_id(ok, "7").verdict == C.PASS and by_id(bad, "7").verdict == C.FAIL


def test_fig3_order_tie_is_inconclusive_and_seeds_that_disagree_too():
    tie, _ = fig3_claims(fig3_logs(wo_at=20, wk1_at=20, wk0_at=None, wk064_at=60))
    assert by_id(tie, "6b").verdict == C.INCONCLUSIVE
    good, bad = fig3_logs(20, 40, 120, 60, seeds=1), fig3_logs(60, 20, 40, 80, seeds=1)
    mixed, _ = fig3_claims({g: good[g] + bad[g] for g in good})
    assert by_id(mixed, "6b").verdict == C.INCONCLUSIVE and "disagree" in by_id(mixed, "6b").reason


def test_fig3_early_position_claim_notes_short_sequences():
    rows = fig3.RECIPE.claims(FakeResults(fig3, fig3_logs(20, 40, 60, 60), scale="tiny"))
    assert by_id(rows, "10").verdict == C.INCONCLUSIVE and "T = 32" in by_id(rows, "10").reason


def test_a_missing_value_makes_a_seed_undecidable():
    logs = fig3_logs(20, 40, None, 60, seeds=2)
    logs["W_K1, W_K2 frozen"] = [dict(logs["W_K1, W_K2 frozen"][0]),
                                 {"wo1_acc": [math.nan] * len(ITERS), ACC: [0.1] * len(ITERS)}]
    row = by_id(fig3_claims(logs)[0], "8")
    assert row.per_seed == [True, None] and row.verdict == C.INCONCLUSIVE


# ---------------------------------------------------------------------------------------------
# Figure 4 rules

def loss_curve(start: float, end: float, at: float | None) -> list[float]:
    return [end if at is not None and it >= at else start for it in ITERS]


def fig4_logs(global_at, incontext_at: dict, k_acc: dict, drops=(0.4, 0.05), split=(0.05, 0.9)):
    logs = {}
    for label in fig4.TRIGGER_CONDITIONS:
        logs[label] = [{"eval_loss_bigram": [4.3] + loss_curve(4.3, 2.4, global_at)[1:],
                        "eval_loss_head": loss_curve(4.5, 0.5, incontext_at.get(label))}] * 2
    for k, acc in k_acc.items():
        logs[fig4.k_label(k)] = [{ACC: [acc] * len(ITERS)}] * 2
    bigram_drop, uniform_drop = drops
    logs[fig4.UNIFORM_TO_BIGRAM] = [{ACC: [0.9] * len(ITERS), "acc_end_test": [0.9 - uniform_drop] * len(ITERS)}] * 2
    logs[fig4.BIGRAM_TO_UNIFORM] = [{ACC: [0.9] * len(ITERS), "acc_end_test": [0.9 - bigram_drop] * len(ITERS)}] * 2
    held, trained = split
    logs[fig4.SPLIT] = [{ACC: [trained] * len(ITERS), "acc_end_split_test": [held] * len(ITERS)}] * 2
    return logs


def test_fig4_rules_pass_on_a_log_that_satisfies_them():
    every = {"random trigger": 150, "fixed: most frequent": 60, "fixed: 2nd most frequent": 120,
             "fixed: 6th most frequent": 140}
    rows = claims(fig4, fig4_logs(global_at=20, incontext_at=every, k_acc={1: 0.2, 3: 0.5, 5: 0.6, 10: 0.8}))
    assert [r.verdict for r in rows] == [C.PASS] * 5
    assert "fixed: most frequent s0: global 20, in-context 60" in by_id(rows, "2").measured


def test_claims_2_and_11_count_a_drop_that_never_came_as_later():
    """Both say which is faster. Claim 2 reads the random trigger and the two most frequent fixed ones
    (the 6th most frequent never learns in the run: claim 11 reads it); claim 11 counts a rarer
    trigger that never drops as later."""
    some = {"fixed: most frequent": 60, "fixed: 2nd most frequent": 120}
    rows = claims(fig4, fig4_logs(global_at=20, incontext_at=some, k_acc={1: 0.2, 3: 0.5, 5: 0.6, 10: 0.8}))
    two = by_id(rows, "2")
    assert two.kind == C.FASTER and two.verdict == C.PASS and "random trigger s0: global 20, in-context never" \
        " (censored)" in two.measured and "6th" not in two.measured
    assert by_id(rows, "11").verdict == C.PASS and "censored" in by_id(rows, "11").measured
    assert "increases with data_args.k in [1, 3, 5, 10]" in by_id(rows, "15a").rule  # K read from the configs
    nothing = claims(fig4, fig4_logs(global_at=None, incontext_at={}, k_acc={1: 0.2, 3: 0.5, 5: 0.6, 10: 0.8}))
    assert by_id(nothing, "2").verdict == C.INCONCLUSIVE and "censored together" in by_id(nothing, "2").reason


def test_fig4_rules_fail_on_a_log_that_violates_them():
    everything_at = {label: 10 for label in fig4.TRIGGER_CONDITIONS}
    logs = fig4_logs(global_at=100, incontext_at=everything_at, k_acc={1: 0.8, 3: 0.6, 5: 0.5, 10: 0.2},
                     drops=(0.05, 0.4), split=(0.8, 0.9))
    rows = claims(fig4, logs)
    assert by_id(rows, "2").verdict == C.FAIL
    assert by_id(rows, "11").verdict == C.INCONCLUSIVE  # same step for all triggers: undecidable
    assert [by_id(rows, i).verdict for i in ("15a", "15b", "15c")] == [C.FAIL] * 3
    later = fig4_logs(global_at=20, incontext_at={"fixed: most frequent": 150, "fixed: 2nd most frequent": 60},
                      k_acc={1: 0.2, 3: 0.5, 5: 0.6, 10: 0.8})
    assert by_id(claims(fig4, later), "11").verdict == C.FAIL


def test_fig4_global_time_is_relative_to_the_floor():
    # first value 4.2, floor 2.2: 75% of the way is 2.7
    assert fig4.global_time(ITERS[:3], np.array([4.2, 2.8, 2.6]), 2.2, 0.75) == 20


# ---------------------------------------------------------------------------------------------
# Layers, optimiser and width, Figure 2

def test_layers_rule_bounds_the_one_layer_model_by_the_order_free_strategy():
    """The old rule's loophole: one layer at 0.53 (35x chance) passed beside two at 0.97. Now the one
    layer must stay at what a predictor blind to which token followed which gets on the same batch."""
    logs = {"1 layer": [{ACC: [0.53] * len(ITERS)}], "2 layers": [{ACC: [0.97] * len(ITERS)}]}
    free = lambda acc: {"1 layer": {"strategies": {"counts": {"in_context": {"acc": acc, "loss": 1.0}}}}}
    at_baseline = claims(layers, logs, tasks=free(0.55))[0]
    above = claims(layers, logs, tasks=free(0.30))[0]
    assert at_baseline.verdict == C.PASS and "order-free 0.55" in at_baseline.measured
    assert above.verdict == C.FAIL and "1 layer - order-free 0.23" in above.measured
    assert above.rule.endswith("2 layers >= 0.9 and 1 layer - order-free <= 0.05")


def optim_logs(sgd_score, widths_acc):
    logs = {optim.SGD: [{"eval_score2_acc": [sgd_score] * len(ITERS), ACC: [0.9] * len(ITERS)}],
            optim.ADAMW: [{"eval_score2_acc": [0.97] * len(ITERS), ACC: [0.95] * len(ITERS)}]}
    for d, acc in widths_acc.items():
        logs[optim.width_label(d)] = [{ACC: [acc] * len(ITERS)}]
    return logs


def test_optim_rules_pass_and_fail():
    rows = claims(optim, optim_logs(0.95, {32: 0.5, 64: 0.8, 128: 0.9, 256: 0.95}))
    assert [r.verdict for r in rows] == [C.PASS, C.PASS, C.PASS]
    assert "model_args.dim in [32, 64, 128, 256]" in rows[2].rule
    rows = claims(optim, optim_logs(0.5, {32: 0.95, 64: 0.9, 128: 0.8, 256: 0.5}))
    assert [r.verdict for r in rows] == [C.FAIL, C.PASS, C.FAIL]


def test_fig2_score_rules_pass_and_fail():
    good = {fig2.FIXED: [{"eval_score_acc": [0.99] * len(ITERS), "eval_score2_acc": [0.95] * len(ITERS)}],
            fig2.RANDOM: [{"eval_score_acc": [0.5] * len(ITERS), "eval_score2_acc": [0.95] * len(ITERS)}]}
    res = FakeResults(fig2, good)
    rows = [evaluate(rule, res) for rule in fig2.RULES[:2]]
    assert [r.verdict for r in rows] == [C.PASS, C.FAIL]


def test_fig2_any_repeat_rule_pass_and_fail(monkeypatch):
    rate = lambda trig, other: {"trigger": trig, "other": other, "n_other": 10}
    logs = {g: [{ACC: [0.9] * len(ITERS)}] * 3 for g in (fig2.FIXED, fig2.RANDOM)}
    monkeypatch.setattr(fig2, "seed_rates", lambda res: [{"random": rate(0.9, 0.8), "fixed": rate(0.95, 0.1)}] * 3)
    ok = evaluate(fig2.RULES[2], FakeResults(fig2, logs))
    monkeypatch.setattr(fig2, "seed_rates", lambda res: [{"random": rate(0.9, 0.3), "fixed": rate(0.95, 0.3)}] * 3)
    bad = evaluate(fig2.RULES[2], FakeResults(fig2, logs))
    assert ok.verdict == C.PASS and bad.verdict == C.FAIL
    assert ok.measured.startswith("random 0.80, fixed 0.10")


def test_claim_ids_are_unique_and_every_threshold_is_in_its_text():
    from birth.experiments import all_recipes
    ids = [rule.id for r in all_recipes().values() for rule in r.rules]
    assert len(ids) == len(set(ids))
    for r in all_recipes().values():
        res = Results("laptop", {}, [])
        for rule in r.rules:
            text = rule.text(res)
            for attr in ("bounds", "events", "peak_at_most", "peak_at_least", "gain_at_most", "checks"):
                for item in getattr(rule, attr, ()):
                    assert f"{item[-1]:g}" in text, (rule.id, item, text)


def test_thresholds_tolerate_float32_logging():
    # 0.2 logged from float32 is 0.20000000298; a rise "by <= 0.2" from 0 must accept it
    assert C.at_most(np.float32(0.2).item(), 0.2)
    assert C.first_reach([0, 10], [0.1, np.float32(0.9).item()], 0.9) == 10
    assert C.at_least(C.spearman([1, 2, 3, 4], [0.47, 0.60, 0.63, 0.61]), 0.8)  # one swap: rho = 0.8
    assert not C.at_least(0.79, 0.8)


# ---------------------------------------------------------------------------------------------
# Repeated tokens: the causal half of R2

def repeat_logs(icl_final: float, control_final: float) -> dict:
    icl = [-0.1 if it < 100 else icl_final for it in ITERS]           # the ICL score falls at 100...
    pm = ramp(100, lo=0.05, hi=0.9)                                    # ...as the best head's prefix matching rises
    two = {"eval_icl_score": icl, "head_induction_max": pm, "head_induction_l1h0": pm,
           "head_induction_l0h0": [0.05] * len(ITERS), repeat.REPEATED: [4.1] * 10 + [0.5] * 10,
           repeat.FIRST: [4.15] * len(ITERS)}
    one = {"eval_icl_score": [-0.1 if it < 100 else control_final for it in ITERS]}
    return {repeat.GROUP: [two] * 2, repeat.ONE_LAYER: [one] * 2}


def test_r2_a_co_occurrence_with_no_head_to_ablate_fails(monkeypatch):
    """The co-occurrence half holds in both logs (the same window of steps); only the causal half tells
    them apart: ablating the best head (layer 1) takes the score back (PASS), or barely moves it (FAIL)."""
    ablated = {}
    monkeypatch.setattr(repeat, "ablated_icl_score", lambda path, layer, head: ablated.setdefault((layer, head), -0.2))
    causal = claims(repeat, repeat_logs(icl_final=-1.1, control_final=-0.15))
    assert by_id(causal, "R2").verdict == C.PASS and "head L1H0" in by_id(causal, "R2").measured
    assert list(ablated) == [(1, 0)]                                   # the head with the highest prefix matching
    monkeypatch.setattr(repeat, "ablated_icl_score", lambda path, layer, head: -1.05)
    co_only = claims(repeat, repeat_logs(icl_final=-1.1, control_final=-0.15))
    assert by_id(co_only, "R2").verdict == C.FAIL and "window - |gap| 80" in by_id(co_only, "R2").measured
    monkeypatch.setattr(repeat, "ablated_icl_score", lambda path, layer, head: -0.2)
    control_learns = claims(repeat, repeat_logs(icl_final=-1.1, control_final=-1.0))
    assert by_id(control_learns, "R2").verdict == C.FAIL     # one layer has a phase change too: no control


# ---------------------------------------------------------------------------------------------
# Markov chains: M1's plateau

def markov_kls(unigram_from: int, bigram_from: int) -> dict:
    """KL from each strategy to the model: uniform closest first, unigram from ``unigram_from``, bigram
    from ``bigram_from`` on."""
    pick = lambda it: "bigram" if it >= bigram_from else "unigram" if it >= unigram_from else "uniform"
    kl = lambda name: [0.01 if pick(it) == name else 0.2 for it in ITERS]
    return {markov.KL_UNIFORM: kl("uniform"), markov.KL_UNI: kl("unigram"), markov.KL_BI: kl("bigram"),
            markov.LOSS: [0.95] * len(ITERS)}


STRATEGIES = {markov.DIRICHLET: {"strategies": {n: {"in_context": {"loss": v}} for n, v in
                                                (("ngram", 0.9), ("unigram", 1.0), ("uniform", 1.1))}}}


def test_m1_needs_a_plateau_not_a_passing_minimum():
    """The old M1 rule (the KL to the unigram strategy smallest strictly before the bigram one takes
    over) passed with the unigram strategy closest at a single evaluation: no plateau at all."""
    blip = markov_kls(unigram_from=100, bigram_from=110)                # closest at 100 only
    uni, bi = np.array(blip[markov.KL_UNI]), np.array(blip[markov.KL_BI])
    old_order = ITERS[next(i for i, (a, b) in enumerate(zip(bi, uni)) if a < b)] - ITERS[int(np.argmin(uni))]
    assert old_order > 0                                                # what the old rule read: PASS
    rows = claims(markov, {markov.DIRICHLET: [blip] * 3}, tasks=STRATEGIES)
    assert by_id(rows, "M1").verdict == C.FAIL and "plateau (steps) 10" in by_id(rows, "M1").measured
    plateau = claims(markov, {markov.DIRICHLET: [markov_kls(unigram_from=40, bigram_from=120)] * 3}, tasks=STRATEGIES)
    assert by_id(plateau, "M1").verdict == C.PASS and "plateau (steps) 80" in by_id(plateau, "M1").measured
    never = claims(markov, {markov.DIRICHLET: [markov_kls(unigram_from=40, bigram_from=1000)] * 3}, tasks=STRATEGIES)
    assert by_id(never, "M1").verdict == C.FAIL and "never became the closest" in by_id(never, "M1").reason
