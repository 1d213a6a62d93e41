"""layers end to end at tiny scale: one- and two-layer full transformers, figure, claim 3."""
from __future__ import annotations

import pytest

import json

from birth.training.runs import RunDir
from conftest import reproduce_tiny

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def test_layers_recipe_end_to_end(tmp_path):
    report = reproduce_tiny("layers", tmp_path)
    assert report.exit_code == 0 and report.trained == 2
    state = json.loads((tmp_path / "reproduce.json").read_text())
    runs = {x["group"]: RunDir(tmp_path / x["run_dir"]) for x in state["recipes"]["layers"]["runs"]}
    one, two = runs["1 layer"], runs["2 layers"]
    assert one.read_config().model_args.arch == "full" and one.read_config().model_args.n_layers == 1
    assert two.read_config().model_args.n_layers == 2
    assert one.read_metrics()[-1]["wo1_acc"] == -1          # layer-2 probes do not exist with one layer
    assert "floor_loss_bigram" in one.read_task()["floors"]
    (claim,) = json.loads((tmp_path / "claims" / "layers.json").read_text())["claims"]
    a1, a2 = one.read_metrics()[-1]["eval_acc_end"], two.read_metrics()[-1]["eval_acc_end"]
    assert claim["id"] == "3" and f"1 layer {a1:.2f}" in claim["measured"] and f"2 layers {a2:.2f}" in claim["measured"]
    free = one.read_task()["strategies"]["counts"]["in_context"]["acc"]  # the bound the one-layer run is held to
    assert f"order-free {free:.2f}" in claim["measured"]
    assert (tmp_path / "figures" / "layers.png").stat().st_size > 10_000
    assert (tmp_path / "data" / "layers.csv").read_text().startswith("panel,condition,metric,iter")
