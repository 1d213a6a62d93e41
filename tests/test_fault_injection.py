"""A run killed with SIGKILL at 20 seeded random moments, resumed each time, ends identical to an
uninterrupted one. In a file of its own: at about 3 minutes it is the longest test, and the
parallel test run (pytest-xdist, one file per worker) balances it against the rest."""
import random
import signal
import time
from pathlib import Path

import pytest

from birth.training.runs import RunDir
from conftest import same_metrics
from test_resume import _iters, assert_same_final_weights

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

FAULT_STEPS = 5000  # the fault-injection run: 20 kills must land before it ends (1000 steps: 3 s)


def _command(run: Path, config: list[str]) -> list[str]:
    """Resume the run, or start it again when it died before its config was written."""
    return (["train", "--resume", str(run), "--quiet"] if RunDir(run).holds_run()
            else ["train", *config, "--out", str(run), "--quiet"])


def test_killed_at_20_random_moments_and_resumed_ends_identical(cli, tmp_path):
    """SIGKILL at 20 seeded random moments (start-up, training, evaluation, checkpoint writes);
    each time the run is resumed (or started again, when it died before its config was written)."""
    config = [*cli.tiny, f"max_iters={FAULT_STEPS}", "checkpoint_every=5"]
    reference_run = tmp_path / "reference"
    assert cli.run("train", *config, "--out", str(reference_run), "--quiet").returncode == 0
    run = tmp_path / "run"
    rng = random.Random(20261127)
    kills = 0
    while kills < 20:
        proc = cli.start(*_command(run, config))
        time.sleep(rng.uniform(0.5, 4.0))  # start-up takes about 2 s: some kills land in it, most in training
        if proc.poll() is not None:        # it finished first: nothing left to kill
            out, err = proc.communicate()
            assert proc.returncode == 0, err
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        kills += 1
        if (run / "metrics.jsonl").exists():
            assert_clean_metrics_or_empty(run / "metrics.jsonl")
        assert not [p for p in run.rglob("*.pt") if not _loads(p)], "a kill left a damaged checkpoint"
    if RunDir(run).read_summary().get("status") != "completed":
        # on a loaded machine every kill may land in start-up, before a config was written
        done = cli.run(*_command(run, config), timeout=600)
        assert done.returncode == 0, done.stderr
    assert kills >= 10, f"only {kills} kills landed before the run finished: the test needs a longer run"
    print(f"fault injection: {kills} SIGKILLs, then resumed to the end")
    assert same_metrics(run / "metrics.jsonl", reference_run / "metrics.jsonl")
    assert_same_final_weights(run, reference_run)


def assert_clean_metrics_or_empty(path: Path) -> None:
    """The whole lines so far (a kill may tear the last one: resume drops it) have increasing iters."""
    iters = _iters(path)
    assert iters == sorted(set(iters)), iters


def _loads(path: Path) -> bool:
    try:
        RunDir.load_checkpoint(path)
        return True
    except Exception:  # noqa: BLE001
        return False
