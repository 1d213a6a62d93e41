"""Stopping a launch stops everything (issue 23): SIGTERM, SIGINT or SIGKILL to a running
`birth reproduce` leaves no process of its tree behind, every run completed or interrupted with a
checkpoint and no queued run started, and the same command then finishes with metrics equal line
for line (but for `elapsed`) to those of a reproduction left alone.

The tiny scale trains a run in about a second: too fast to stop one in the middle on purpose. The
stopped reproductions here pad every training step with a sleep of STEP_DELAY_S, through a
`sitecustomize` module on PYTHONPATH that wraps `birth.training.loop._train_step` in every process
of the command, its spawned workers included. A sleep changes no number; the reference and the
reruns train without it.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from birth.launching import stopping
from birth.launching.jobs import make_job, run_jobs
from birth.launching.local import LocalBackend
from conftest import deterministic_lines

pytestmark = pytest.mark.slow  # trains, in subprocesses

# 6 runs of 30 steps
COMMAND = ("reproduce", "fig3", "--scale", "tiny", "--seeds", "1", "--held-out", "0", "--jobs", "2")
STEP_DELAY_S = 0.1   # 3 s a run: the signal lands in the middle of the first two
STOP_WITHIN_S = 15   # from the signal to the last process of the tree gone (a loaded 2-core CI machine)

SLOW_STEPS = f'''
"""tests/test_stopping.py: every training step of birth.training.loop sleeps {STEP_DELAY_S} s first."""
import importlib.abc, importlib.machinery, sys, time


class _SlowSteps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "birth.training.loop":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            step = module._train_step

            def slow_step(*args, **kwargs):
                time.sleep({STEP_DELAY_S})
                return step(*args, **kwargs)
            module._train_step = slow_step
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _SlowSteps())
'''


@pytest.fixture(scope="module")
def reference(cli, tmp_path_factory) -> Path:
    """The command left alone: its runs' directories."""
    out = tmp_path_factory.mktemp("reference")
    proc = cli.run(*COMMAND, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out / "runs"


@pytest.fixture(scope="module")
def slow_env(cli, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("slow_steps")
    (folder / "sitecustomize.py").write_text(SLOW_STEPS)
    return dict(cli.env, PYTHONPATH=os.pathsep.join(filter(None, [str(folder), cli.env.get("PYTHONPATH")])))


# -- the process tree, by psutil where it is installed, else by /proc

def process_tree(pid: int) -> dict[int, float]:
    """``pid`` and its descendants: pid -> start time (which tells a pid reused later apart)."""
    try:
        import psutil
    except ImportError:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            stat = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry.name))
        tree, todo = {}, [pid]
        while todo:
            p = todo.pop()
            stat = _proc_stat(p)
            if stat:
                tree[p] = float(stat[19])
                todo += children.get(p, [])
        return tree
    root = psutil.Process(pid)
    return {p.pid: p.create_time() for p in [root, *root.children(recursive=True)]}


def alive(pid: int, started: float) -> bool:
    """The same process still runs (a zombie counts as gone: it trains nothing)."""
    try:
        import psutil
    except ImportError:
        stat = _proc_stat(pid)
        return bool(stat) and float(stat[19]) == started and stat[0] != "Z"
    try:
        p = psutil.Process(pid)
        return p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _proc_stat(pid: int):
    """/proc/PID/stat after the command name: state, ppid, ... (field 22, the start time, at [19])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


# -- the runs

def summaries(runs: Path) -> dict[str, dict]:
    """Run name -> summary.json, for every run directory that holds one (a run that started)."""
    out = {}
    for path in sorted(runs.glob("*/summary.json")):
        out[path.parent.name] = json.loads(path.read_text())
    return out


def training(runs: Path) -> list[str]:
    """The runs in the middle of training: status running, a metrics line written."""
    return [name for name, s in summaries(runs).items()
            if s.get("status") == "running" and (runs / name / "metrics.jsonl").stat().st_size > 0]


def stop_midway(cli, env: dict, out: Path, signum: int) -> tuple[subprocess.Popen, str, float]:
    """Starts the command, sends ``signum`` once both workers train, waits until its whole process
    tree is gone; returns the process, its stderr and the seconds from the signal to the end."""
    log = out.parent / f"{out.name}.stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen(cli.argv(*COMMAND, "--out", str(out)), env=env, stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(training(out / "runs")) < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no two runs in training after 120 s"
            time.sleep(0.05)
        tree = process_tree(proc.pid)
        started = set(summaries(out / "runs"))
        os.kill(proc.pid, signum)
        t0 = time.monotonic()
        proc.wait(timeout=STOP_WITHIN_S)
        while any(alive(pid, t) for pid, t in tree.items()) and time.monotonic() - t0 < STOP_WITHIN_S:
            time.sleep(0.05)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(tree) >= 3, f"expected the command, its 2 workers (and a resource tracker): {tree}"
    left = [pid for pid, t in tree.items() if alive(pid, t)]
    assert not left, f"still running {seconds:.1f}s after {signal.Signals(signum).name}: {left}"
    assert set(summaries(out / "runs")) == started, "a queued run started after the signal"
    return proc, log.read_text(), seconds


def check_stopped_runs(runs: Path) -> list[str]:
    """Every run that started is completed, or interrupted with the checkpoint of the step it
    reached; at least one was stopped in the middle. Returns the interrupted ones."""
    stopped = []
    for name, s in summaries(runs).items():
        assert s["status"] in ("completed", "interrupted"), (name, s["status"])
        if s["status"] == "interrupted":
            assert 0 < s["step"] < 30 and Path(s["checkpoint"]).name == f"step_{s['step']:08d}.pt", s
            assert Path(s["checkpoint"]).exists()
            stopped.append(name)
    assert stopped, "the signal landed in no run's training"
    return stopped


def check_rerun_finishes_as_if_never_stopped(cli, out: Path, reference: Path, stopped: list[str]) -> None:
    proc = cli.run(*COMMAND, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    done = summaries(out / "runs")
    assert set(done) == set(summaries(reference)) and len(done) == 6
    assert all(s["status"] == "completed" for s in done.values())
    for name in stopped:  # resumed from its checkpoint, not trained again from step 0
        assert done[name]["start_step"] > 0, name
    for name in done:
        assert deterministic_lines(out / "runs" / name / "metrics.jsonl") == \
            deterministic_lines(reference / name / "metrics.jsonl"), name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_every_worker_and_the_same_command_continues(cli, slow_env, reference, tmp_path, signum):
    out = tmp_path / "out"
    proc, stderr, seconds = stop_midway(cli, slow_env, out, signum)
    assert proc.returncode == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    command = shlex.join(["birth", *COMMAND, "--out", str(out)])
    assert lines[-1].startswith(f"birth: stopped by {signal.Signals(signum).name};"), stderr
    assert lines[-1].endswith(f"continue with: {command}"), lines[-1]
    # one line says how to go on: not each run's own `birth train --resume`, no traceback, no leak warning
    assert not [line for line in lines if "resume with" in line or "Traceback" in line or "leaked" in line], stderr
    stopped = check_stopped_runs(out / "runs")
    print(f"{signal.Signals(signum).name}: every process gone {seconds:.2f}s after the signal; "
          f"{len(stopped)} runs interrupted")
    check_rerun_finishes_as_if_never_stopped(cli, out, reference, stopped)


def test_workers_of_a_killed_command_checkpoint_and_stop(cli, slow_env, reference, tmp_path):
    out = tmp_path / "out"
    proc, stderr, seconds = stop_midway(cli, slow_env, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    stopped = check_stopped_runs(out / "runs")
    print(f"KILL: every process gone {seconds:.2f}s after the signal; {len(stopped)} runs interrupted")
    check_rerun_finishes_as_if_never_stopped(cli, out, reference, stopped)


# -- the same guard in this process (LocalBackend in_process): no subprocess, a second each

TINY = {"data_args.seq_length": 16, "model_args.max_length": 16, "model_args.dim": 16, "optim_args.batch_size": 8,
        "eval_batch_size": 8, "max_iters": 40, "eval_delta": 5}


def in_process_launch(root: Path, monkeypatch, *, signal_at_step=None, signal_in_setup=False) -> stopping.Stopped:
    """Three runs launched in this process, SIGTERM sent to it in the first one's step
    ``signal_at_step`` or while it builds its model; returns the Stopped that ended the launch."""
    import birth.training.loop as train
    step, build = train._train_step, train.build_setup

    def stepping(setup, optimizer, index, *rest):
        if index == signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # 0.4 s a run: the signal sent again (stopping.RESEND_S) lands in the loop
        return step(setup, optimizer, index, *rest)

    def building(cfg):
        if signal_in_setup:
            os.kill(os.getpid(), signal.SIGTERM)  # before the training loop takes SIGTERM over
        return build(cfg)

    monkeypatch.setattr(train, "_train_step", stepping)
    monkeypatch.setattr(train, "build_setup", building)
    jobs = [make_job(root, {**TINY, "seed": i}, "quick", label=str(i)) for i in range(3)]
    with pytest.raises(stopping.Stopped) as stop:
        run_jobs(jobs, LocalBackend(jobs=1, in_process=True))
    assert stopping.current() is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers given back
    return stop.value


def test_a_signal_in_training_stops_the_launch_after_checkpointing_that_run(tmp_path, monkeypatch):
    stop = in_process_launch(tmp_path, monkeypatch, signal_at_step=5)
    assert stop.signum == signal.SIGTERM and stopping.exit_code(stop) == 143
    [(name, summary)] = summaries(tmp_path).items()  # the other two never started
    assert summary["status"] == "interrupted" and summary["step"] == 6 and Path(summary["checkpoint"]).exists()


def test_a_signal_before_the_training_loop_still_stops_the_run(tmp_path, monkeypatch):
    stop = in_process_launch(tmp_path, monkeypatch, signal_in_setup=True)
    assert stop.signum == signal.SIGTERM
    [(name, summary)] = summaries(tmp_path).items()
    assert summary["status"] == "interrupted" and 0 <= summary["step"] < TINY["max_iters"], summary
