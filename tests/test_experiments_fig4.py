"""fig4 end to end at tiny scale: trigger conditions, K sweep, OOD and split runs, floors, claims."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import reproduce_tiny

from birth.experiments.recipes import fig4
from birth.training.runs import RunDir

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig4")
    report = reproduce_tiny("fig4", root)
    assert report.exit_code == 0
    state = json.loads((root / "reproduce.json").read_text())
    runs = {x["group"]: RunDir(root / x["run_dir"]) for x in state["recipes"]["fig4"]["runs"]}
    return root, runs


def test_trigger_conditions_use_the_most_and_less_frequent_tokens(out):
    _, runs = out
    chars = {label: runs[label].read_task()["fixed_trigger_chars"] for label in fig4.TRIGGER_CONDITIONS}
    assert chars == {"random trigger": [], "fixed: most frequent": [" "], "fixed: 2nd most frequent": ["e"],
                     "fixed: 6th most frequent": ["h"]}
    cfg = runs["fixed: most frequent"].read_config()
    assert not cfg.loss_head_only and cfg.model_args.final_ffn
    assert runs["fixed: most frequent"].read_metrics()[-1]["ff1_loss"] > 0   # W_F is probed


def test_ood_and_split_runs_log_their_test_accuracies(out):
    _, runs = out
    assert runs[fig4.BIGRAM_TO_UNIFORM].read_config().data_args.bigram_outs_train
    assert runs[fig4.UNIFORM_TO_BIGRAM].read_config().data_args.bigram_outs_test
    last = runs[fig4.SPLIT].read_metrics()[-1]
    assert 0 <= last["acc_end_split_test"] <= 1 and "wo1_split_test_acc" in last
    assert all(0 <= runs[g].read_metrics()[-1]["acc_end_test"] <= 1
               for g in (fig4.UNIFORM_TO_BIGRAM, fig4.BIGRAM_TO_UNIFORM))


def test_loss_panel_data_and_claims(out):
    root, runs = out
    rows = list(csv.DictReader(open(root / "data" / "fig4.csv")))
    panel_a = {(r["condition"], r["metric"]) for r in rows if r["panel"].startswith("a")}
    assert ("fixed: most frequent", "eval_loss_bigram") in panel_a and ("random trigger", "eval_loss_head") in panel_a
    first = next(r for r in rows if r["condition"] == "fixed: most frequent" and r["metric"] == "eval_loss_head")
    assert float(first["mean"]) == pytest.approx(runs["fixed: most frequent"].read_metrics()[0]["eval_loss_head"],
                                                 abs=1e-5)
    claims = json.loads((root / "claims" / "fig4.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["2", "11", "15a", "15b", "15c"]
    # one per trigger condition the claim judges
    assert claims[0]["measured"].count("global") == len(fig4.CLAIM_2_CONDITIONS)
    split = runs[fig4.SPLIT].read_metrics()[-1]
    assert claims[4]["measured"].startswith(f"trained outputs {split['eval_acc_end']:.2f}, "
                                            f"held-out {split['acc_end_split_test']:.2f}")
    assert (root / "figures" / "fig4.png").stat().st_size > 10_000
