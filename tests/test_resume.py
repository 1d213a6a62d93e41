"""Exact resume: a run killed at any point (SIGKILL, SIGTERM, SIGINT) and resumed writes the same
metrics.jsonl, byte for byte, and ends with the same weights as the same run left alone."""
import pytest
import json
import os
import signal
import time

import torch

from birth.cli import main
from birth.training.runs import RunDir
from conftest import same_metrics

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def _iters(path) -> list[int]:
    """The 'iter' of every complete line of metrics.jsonl so far."""
    if not path.exists():
        return []
    return [json.loads(line)["iter"] for line in path.read_bytes().split(b"\n")[:-1]]


def _wait_for_iter(proc, metrics, target: int, timeout: float = 240) -> None:
    """Polls until a metrics line with iter >= target exists; the run must still be going."""
    deadline = time.monotonic() + timeout
    while not any(i >= target for i in _iters(metrics)):
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) before iter {target}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no metrics line with iter >= {target} after {timeout}s"
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be stopped: the test needs a longer run"


def assert_clean_metrics(path) -> None:
    """Every line is whole JSON, and iters strictly increase: no duplicated or torn line."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    iters = [json.loads(line)["iter"] for line in data.split(b"\n")[:-1]]
    assert iters == sorted(set(iters)), iters


def assert_same_final_weights(run, reference) -> None:
    mine = RunDir.load_checkpoint(RunDir(run).latest_checkpoint())
    ref = RunDir.load_checkpoint(RunDir(reference).latest_checkpoint())
    assert mine["step"] == ref["step"]
    assert mine["model"].keys() == ref["model"].keys()
    assert all(torch.equal(mine["model"][k], ref["model"][k]) for k in ref["model"])


def test_sigkill_at_three_points_then_resume_equals_uninterrupted_run(cli, reference_run, tmp_path):
    """Killed at iter 0 (before the first checkpoint, at step 7: resuming starts over), then twice
    more with lines written after the last checkpoint, which resuming must drop; once with a torn
    line appended, as a kill in the middle of a write would leave."""
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    proc = cli.start("train", *cli.tiny, "--out", str(run), "--quiet")
    reached = -1
    for n, target in enumerate([0, 18, 38]):
        _wait_for_iter(proc, metrics, max(target, reached + 1))  # only a line of this process counts
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert_clean_metrics(metrics)
        reached = max(_iters(metrics))
        if n == 1:
            with open(metrics, "ab") as f:
                f.write(b'{"iter": 999, "loss": 0.1')
        if n < 2:
            proc = cli.start("train", "--resume", str(run), "--quiet")
    done = cli.run("train", "--resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert_clean_metrics(metrics)
    assert same_metrics(metrics, reference_run / "metrics.jsonl")
    assert_same_final_weights(run, reference_run)
    assert RunDir(run).read_summary()["status"] == "completed"
    assert [s for s, _ in RunDir(run).checkpoints()] == [s for s, _ in RunDir(reference_run).checkpoints()]


def _stop(proc, run, signum: int, code: int) -> None:
    """Sends ``signum``; the run must checkpoint the step it stopped at and say how to resume."""
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"resume with: birth train --resume {run}" in err
    summary = RunDir(run).read_summary()
    assert summary["status"] == "interrupted" and summary["exit_code"] == code
    assert summary["signal"] == signal.Signals(signum).name
    assert RunDir(run).checkpoints()[-1][0] == summary["step"]
    assert_clean_metrics(run / "metrics.jsonl")


def test_sigterm_and_sigint_checkpoint_exit_cleanly_and_resume_exactly(cli, reference_run, tmp_path):
    run = tmp_path / "run"
    proc = cli.start("train", *cli.tiny, "--out", str(run), "--quiet")
    _wait_for_iter(proc, run / "metrics.jsonl", 12)
    _stop(proc, run, signal.SIGTERM, 143)
    reached = max(_iters(run / "metrics.jsonl"))
    proc = cli.start("train", "--resume", str(run), "--quiet")
    _wait_for_iter(proc, run / "metrics.jsonl", max(36, reached + 1))
    _stop(proc, run, signal.SIGINT, 130)
    done = cli.run("train", "--resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert same_metrics(run / "metrics.jsonl", reference_run / "metrics.jsonl")
    assert_same_final_weights(run, reference_run)
    assert RunDir(run).read_summary()["status"] == "completed"


def test_checkpoints_hold_everything_needed_and_load_weights_only(reference_run):
    run = RunDir(reference_run)
    # keep_checkpoints=2 periodic ones (56, 60 = the end) plus checkpoint_steps=10 for analysis
    assert [s for s, _ in run.checkpoints()] == [10, 56, 60]
    assert not [p for p in run.path.rglob("*") if p.name.endswith(".tmp")]  # no temp file left behind
    metrics = run.metrics_path.read_bytes()
    for step, path in run.checkpoints():
        state = torch.load(path, weights_only=True)  # no pickled code is executed
        assert {"model", "optimizer", "step", "rng_cpu", "config", "metrics", "metrics_offset"} <= state.keys()
        assert state["step"] == step
        assert state["config"]["max_iters"] == 60 and state["config"]["checkpoint_every"] == 7
        assert state["metrics"].encode() == metrics[:state["metrics_offset"]]  # the lines written so far
        assert all(i < step for i in _iters_of(state["metrics"]))


def _iters_of(text: str) -> list[int]:
    return [json.loads(line)["iter"] for line in text.splitlines()]


def test_resuming_a_completed_run_changes_nothing(reference_run, capsys):
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in reference_run.rglob("*")}
    assert main(["train", "--resume", str(reference_run), "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().err
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in reference_run.rglob("*")} == before


def test_files_are_readable_by_the_group_like_any_other_file(reference_run):
    """Atomic writes must not leave the 0600 mode of mkstemp: teammates read each other's runs."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "summary.json", "task.json"):
        assert (reference_run / name).stat().st_mode & 0o777 == 0o666 & ~umask
