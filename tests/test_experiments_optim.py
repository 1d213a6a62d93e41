"""optim end to end at tiny scale: SGD vs AdamW, the width sweep, shared runs, claims."""
from __future__ import annotations

import pytest

import json

from birth.training.runs import RunDir
from conftest import reproduce_tiny

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def test_optim_recipe_end_to_end(tmp_path):
    report = reproduce_tiny("optim", tmp_path)
    assert report.exit_code == 0
    state = json.loads((tmp_path / "reproduce.json").read_text())
    dirs = {x["group"]: x["run_dir"] for x in state["recipes"]["optim"]["runs"]}
    # SGD at the default width is the same config as the d = 32 point of the SGD sweep: one run, shared
    assert dirs["SGD + momentum"] == dirs["d = 32"] != dirs["AdamW"] and report.trained == 3
    sgd = RunDir(tmp_path / dirs["SGD + momentum"]).read_config().optim_args
    assert sgd.use_sgd and sgd.learning_rate == 0.1 and sgd.momentum == 0.9
    assert not RunDir(tmp_path / dirs["AdamW"]).read_config().optim_args.use_sgd
    assert RunDir(tmp_path / dirs["d = 16"]).read_config().model_args.dim == 16
    claims = json.loads((tmp_path / "claims" / "optim.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["4c", "4d", "§3.1b"]
    finals = {d: RunDir(tmp_path / dirs[f"d = {d}"]).read_metrics()[-1]["eval_acc_end"] for d in (16, 32)}
    assert claims[2]["measured"].startswith(f"dim=16 {finals[16]:.2f}, dim=32 {finals[32]:.2f}")
    assert (tmp_path / "figures" / "optim.pdf").stat().st_size > 0
