"""Divergence: a non-finite loss or parameter stops the run with a clear message and exit code 3,
keeps the last good checkpoint and marks the run 'diverged' in summary.json (not a crash)."""
import json
import math

import pytest
import torch

from birth.cli import main
from birth.training.runs import RunDir

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

EXIT_DIVERGED = 3
HUGE_LR = ["optim_args.use_sgd=true", "optim_args.learning_rate=1e30", "max_iters=40", "eval_delta=4"]


@pytest.fixture(autouse=True)
def one_thread():
    """A tiny model in this process: more threads only add noise on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _train(cli, run, *extra: str, capsys) -> tuple[int, str]:
    code = main(["train", *cli.tiny, *HUGE_LR, *extra, "--out", str(run), "--quiet"])
    return code, capsys.readouterr().err


def test_non_finite_parameter_stops_with_exit_3_and_keeps_the_last_good_checkpoint(cli, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    code, err = _train(cli, run.path, "checkpoint_every=1", capsys=capsys)
    assert code == EXIT_DIVERGED
    summary = run.read_summary()
    assert summary["status"] == "diverged" and summary["exit_code"] == EXIT_DIVERGED
    assert "non-finite" in summary["reason"]
    good = run.latest_checkpoint()
    assert good is not None and summary["last_good_checkpoint"] == str(good)
    assert f"run diverged at step {summary['diverged_at']}" in err and str(good) in err
    state = torch.load(good, weights_only=True)
    assert state["step"] <= summary["diverged_at"]
    assert all(torch.isfinite(v).all() for v in state["model"].values())  # a good one, as promised
    for line in run.metrics_path.read_text().splitlines():  # strict JSON even with inf/nan around
        json.loads(line)


def test_non_finite_loss_without_any_checkpoint_is_still_marked_diverged(cli, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    code, err = _train(cli, run.path, "checkpoint_every=0", capsys=capsys)
    assert code == EXIT_DIVERGED
    summary = run.read_summary()
    assert summary["status"] == "diverged"
    assert summary["reason"].startswith("non-finite loss")
    assert summary["last_good_checkpoint"] == "" and run.latest_checkpoint() is None
    assert "diverged" in err and "(none)" in err
    # the metrics of the last finite evaluation, not of the failed step
    assert summary["final_metrics"]["iter"] < summary["diverged_at"]
    assert math.isfinite(summary["final_metrics"]["loss"])
