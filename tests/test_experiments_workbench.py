"""The recipes beyond the paper end to end at tiny scale: interventions, markov and repeat each train
their conditions, draw their figure, write their data and judge their claims."""
from __future__ import annotations

import json

import pytest

from birth.experiments.recipes import causal as interventions, markov_chains as markov, repeated_tokens as repeat
from birth.training.runs import RunDir
from conftest import reproduce_tiny

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

RECIPES = {  # name -> (its groups, its claim ids)
    "interventions": (tuple(interventions.SCHEDULES), ["I-a", "I-b", "I-c", "I-d"]),
    "markov": ((markov.DIRICHLET, markov.DOUBLY, markov.PURE, markov.MIXED), ["M1", "M2", "M3"]),
    "repeat": ((repeat.GROUP, repeat.ONE_LAYER), ["R1", "R2"]),
}


def runs_of(root, name) -> dict[str, RunDir]:
    state = json.loads((root / "reproduce.json").read_text())
    return {x["group"]: RunDir(root / x["run_dir"]) for x in state["recipes"][name]["runs"]}


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_workbench_recipe_trains_draws_and_judges(name, tmp_path):
    groups, ids = RECIPES[name]
    report = reproduce_tiny(name, tmp_path)
    assert report.exit_code == 0 and report.trained == len(groups)
    runs = runs_of(tmp_path, name)
    assert sorted(runs) == sorted(groups)
    assert all(run.read_summary()["status"] == "completed" for run in runs.values())
    rows = json.loads((tmp_path / "claims" / f"{name}.json").read_text())["claims"]
    assert [r["id"] for r in rows] == ids
    for row in rows:  # one seed, judged, its numbers written out
        assert len(row["per_seed"]) == 1 and row["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") and row["measured"]
    assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / "data" / f"{name}.csv").read_text().startswith("panel,condition,metric,iter")
    assert "SMOKE TEST" in (tmp_path / "claims" / f"{name}.md").read_text()  # tiny: not evidence


def test_the_interventions_recipe_records_each_schedule_in_its_runs(tmp_path):
    reproduce_tiny("interventions", tmp_path)
    for group, run in runs_of(tmp_path, "interventions").items():
        assert run.read_config().interventions == interventions.SCHEDULES[group]
        summary = run.read_summary()
        assert bool(summary["interventions"]) == bool(interventions.SCHEDULES[group])
    clamped = runs_of(tmp_path, "interventions")[interventions.PREVIOUS]
    assert "blocks.0.attn.hook_pattern" in clamped.read_summary()["hook_points"]
