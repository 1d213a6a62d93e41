"""fig2 end to end at tiny scale: runs, attention figure and data, claims; plus the induction-rate probe."""
from __future__ import annotations

import csv
import json
from collections import defaultdict

import pytest

from conftest import reproduce_tiny
import torch

from birth.experiments.recipes import fig2
from birth.training.runs import RunDir

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig2")
    report = reproduce_tiny("fig2", root)
    assert report.exit_code == 0
    return root, report


def test_fig2_writes_figure_data_and_claims(out):
    root, report = out
    for name in ("figures/fig2.png", "figures/fig2.pdf", "data/fig2.csv", "claims/fig2.json", "claims/fig2.md",
                 "claims.md", "README.md"):
        assert (root / name).stat().st_size > 0, name
    assert report.trained == 2
    assert "figures/fig2.png" in (root / "README.md").read_text()


def test_fig2_attention_rows_are_distributions_and_boxes_mark_repeats(out):
    root, _ = out
    rows = list(csv.DictReader(open(root / "data" / "fig2.csv")))
    sums = defaultdict(float)
    for r in rows:
        sums[(r["panel"], int(r["query_pos"]))] += float(r["attention"])
    assert len({p for p, _ in sums}) == 3
    assert all(abs(s - 1) < 1e-3 for s in sums.values())  # causal softmax over keys 0..t
    layer1 = [r for r in rows if r["panel"].startswith("layer 1")]
    assert all(r["box"] == "" for r in layer1)
    boxed = [r for r in rows if r["box"]]
    assert boxed and all(r["query_char"] == r_prev for r, r_prev in
                         ((r, _char_before(rows, r)) for r in boxed))
    assert any(r["box"] == "trigger" for r in boxed)


def _char_before(rows, r):
    """The character at key_pos - 1 of the same panel (a boxed key follows the query token)."""
    s = int(r["key_pos"]) - 1
    return next(x["key_char"] for x in rows if x["panel"] == r["panel"] and int(x["query_pos"]) == int(r["query_pos"])
                and int(x["key_pos"]) == s)


def test_fig2_claims_report_the_logged_scores(out):
    root, _ = out
    claims = json.loads((root / "claims" / "fig2.json").read_text())
    assert claims["scale"] == "tiny"
    rows = claims["claims"]
    assert [r["id"] for r in rows] == ["4a", "4b", "5"]
    assert all(r["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") for r in rows)
    state = json.loads((root / "reproduce.json").read_text())
    fixed_run = next(x for x in state["recipes"]["fig2"]["runs"] if "fixed" in x["label"])
    final = RunDir(root / fixed_run["run_dir"]).read_metrics()[-1]
    assert rows[0]["measured"] == (f"eval_score_acc {final['eval_score_acc']:.2f}, "
                                   f"eval_score2_acc {final['eval_score2_acc']:.2f}")


def test_induction_rates_on_synthetic_attention():
    # sequence a b c a b: at t=3 ('a') the induction target is s=1 ('b' follows the earlier 'a')
    x = torch.tensor([[0, 1, 2, 0, 1]])
    outs = torch.tensor([[1, 0, 0, 2, 0]])          # 0 is a trigger, seen twice
    triggers = torch.tensor([[0]])
    perfect = torch.zeros(1, 5, 5)
    perfect[0, 3, 1] = 1.0                           # trigger repeat -> key after the earlier 'a'
    perfect[0, 4, 2] = 1.0                           # non-trigger repeat 'b' -> key after the earlier 'b'
    for t in (0, 1, 2):
        perfect[0, t, 0] = 1.0
    rates = fig2.induction_rates(perfect, x, outs, triggers)
    assert rates == {"trigger": 1.0, "other": 1.0, "n_other": 1}
    to_start = torch.zeros(1, 5, 5)
    to_start[..., 0] = 1.0
    rates = fig2.induction_rates(to_start, x, outs, triggers)
    assert rates["trigger"] == 0.0 and rates["other"] == 0.0
