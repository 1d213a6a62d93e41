"""Reliability on real machines: one writer per run directory, a full disk, damaged checkpoints,
and damaged checkpoints (the run killed at 20 random moments: test_fault_injection.py). Real
processes, a real tmpfs, real files."""
import json
import os
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from birth.experiments.recipe import DEFAULT_FIRST_SEED
from birth.training.exits import EXIT_NO_SPACE, EXIT_USAGE
from birth.training.runs import RunDir
from test_resume import assert_clean_metrics, assert_same_final_weights
from conftest import same_metrics

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

LONG = ["max_iters=100000"]  # long enough to still be training while the test looks at it


def _wait(predicate, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.01)


def _snapshot(path: Path) -> dict:
    """Every file under ``path`` with its size and mtime: equal snapshots, nothing written."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def _lines(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", stderr) if line.strip()]


def test_a_second_writer_exits_2_naming_the_holder_and_writes_nothing(cli, tmp_path):
    run = tmp_path / "run"
    first = cli.start("train", *cli.tiny, *LONG, "--out", str(run), "--quiet")
    try:
        _wait(lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size > 0, 120,
              "metrics line", first)
        first.send_signal(signal.SIGSTOP)  # frozen: the directory cannot change under the snapshot
        before = _snapshot(run)
        for args in (["train", *cli.tiny, "--out", str(run)],                 # a second run into it
                     ["train", *cli.tiny, "--out", str(run), "--overwrite"],  # or replacing it
                     ["train", "--resume", str(run)]):                        # or resuming it meanwhile
            second = cli.run(*args)
            assert second.returncode == EXIT_USAGE, second.stderr
            lines = _lines(second.stderr)
            assert len(lines) == 1 and f"in use by pid {first.pid}" in lines[0], second.stderr
        assert _snapshot(run) == before
        first.send_signal(signal.SIGCONT)
    finally:
        first.kill()
        first.communicate(timeout=60)
    # the holder died by SIGKILL: its lock died with it (the file stays, held by nobody), and the run resumes
    assert (run / ".lock").exists()
    proc = cli.start("train", "--resume", str(run), "--quiet")
    try:
        _wait(lambda: (run / ".lock").read_text().strip() == str(proc.pid), 120, "the resumed run's lock", proc)
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_two_reproduce_on_one_output_train_each_run_once(cli, tmp_path):
    out = tmp_path / "out"
    args = ("reproduce", "fig2", "--scale", "tiny", "--seeds", "2", "--held-out", "0", "--jobs", "1", "--out", str(out))
    procs = [cli.start(*args) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in results]
    trained = [int(re.search(r"(\d+) runs trained, (\d+) reused", e).group(1)) for _, e in results]
    runs = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert sum(trained) == len(runs) == 4, [e for _, e in results]  # 2 conditions x 2 seeds, each made once
    for run in runs:
        assert RunDir(run).read_summary()["status"] == "completed"
        assert_clean_metrics(run / "metrics.jsonl")
    index = json.loads((out / "reproduce.json").read_text())
    first = DEFAULT_FIRST_SEED  # --first-seed not given: the published seeds
    assert index["recipes"]["fig2"]["seeds"] == {"published": [first, first + 1], "held_out": []}
    assert "fig2" in (out / "claims.md").read_text()


@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs, remountable to a new size; skipped where mounting is refused (not root)."""
    where = tmp_path / "disk"
    where.mkdir()

    def mount(size: int, remount: bool = False) -> subprocess.CompletedProcess:
        opts = f"{'remount,' if remount else ''}size={size}"
        return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)

    done = mount(1 << 20)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or 'refused'}")
    yield where, lambda size: mount(size, remount=True)
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _disk_usage(path: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


def test_a_full_disk_stops_the_run_with_one_line_and_resume_ends_identical(cli, reference_run, small_disk, tmp_path):
    disk, resize = small_disk
    keep_all = ["keep_checkpoints=100"]
    full_ref = tmp_path / "full_ref"                       # the same run with every checkpoint kept
    assert cli.run("train", *cli.tiny, *keep_all, "--out", str(full_ref), "--quiet").returncode == 0
    assert resize(_disk_usage(full_ref) // 2).returncode == 0   # room for about half of it
    run = disk / "run"
    stopped = cli.run("train", *cli.tiny, *keep_all, "--out", str(run), "--quiet")
    assert stopped.returncode == EXIT_NO_SPACE, stopped.stderr
    lines = _lines(stopped.stderr)
    assert len(lines) == 1, stopped.stderr
    assert re.search(rf"cannot write {re.escape(str(run))}/\S+: No space left on device \(ENOSPC\)", lines[0]), lines
    assert f"birth train --resume {run}" in lines[0]
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"
    assert_clean_metrics(run / "metrics.jsonl")
    newest = RunDir(run).latest_checkpoint()
    assert newest is not None and RunDir.load_checkpoint(newest)["step"] < 60  # loadable, mid-run
    # space freed: resume gives what an uninterrupted run gives
    assert resize(64 << 20).returncode == 0
    done = cli.run("train", "--resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert same_metrics(run / "metrics.jsonl", reference_run / "metrics.jsonl")
    assert_same_final_weights(run, reference_run)


def test_a_file_size_limit_efbig_is_a_full_disk_too(cli, reference_run, tmp_path):
    run = tmp_path / "run"
    files = [p for p in reference_run.rglob("*") if p.is_file()]
    smallest_checkpoint = min(p.stat().st_size for p in files if p.suffix == ".pt")
    largest_other = max(p.stat().st_size for p in files if p.suffix != ".pt")
    assert largest_other < smallest_checkpoint
    limit = (largest_other + smallest_checkpoint) // 2     # every file fits but a checkpoint

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(cli.argv("train", *cli.tiny, "--out", str(run), "--quiet"), env=cli.env,
                          capture_output=True, text=True, preexec_fn=limited, timeout=300)
    assert proc.returncode == EXIT_NO_SPACE, proc.stderr
    assert "File too large (EFBIG)" in proc.stderr and str(run) in proc.stderr
    assert not list(run.rglob("*.tmp"))
    done = cli.run("train", "--resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert same_metrics(run / "metrics.jsonl", reference_run / "metrics.jsonl")


def _as_if_killed(run: Path) -> None:
    """What a SIGKILL leaves: the summary still says 'running'."""
    summary = RunDir(run).read_summary()
    RunDir(run).write_summary({**summary, "status": "running"})


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a checkpoint"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(cli, reference_run, tmp_path, damage):
    run = tmp_path / "run"
    assert cli.run("train", *cli.tiny, "keep_checkpoints=100", "--out", str(run), "--quiet").returncode == 0
    _as_if_killed(run)
    steps = RunDir(run).checkpoints()
    newest = steps[-1][1]
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    elif damage == "garbage":
        newest.write_bytes(os.urandom(4096))
    else:
        torch.save({"hello": torch.zeros(3)}, newest)
    done = cli.run("train", "--resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stderr)
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and newest.name in warnings[0] and f"resuming from {steps[-2][1].name}" in warnings[0]
    assert same_metrics(run / "metrics.jsonl", reference_run / "metrics.jsonl")
    assert_same_final_weights(run, reference_run)


def test_no_valid_checkpoint_starts_over_and_says_so(cli, reference_run, tmp_path):
    run = tmp_path / "run"
    assert cli.run("train", *cli.tiny, "--out", str(run), "--quiet").returncode == 0
    _as_if_killed(run)
    for _, path in RunDir(run).checkpoints():
        path.write_bytes(b"\x00" * 100)
    done = cli.run("train", "--resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in _lines(done.stderr) if "warning" in line]
    assert len(warnings) == 1 and "no valid checkpoint" in warnings[0] and "starting over" in warnings[0]
    assert same_metrics(run / "metrics.jsonl", reference_run / "metrics.jsonl")
    assert_same_final_weights(run, reference_run)
