"""Reliability, round three (issue 29), one case per item, each through the real command line:
the exit code, one line on stderr, no traceback, and nothing already written lost.

1. damaged checkpoints: every reader (plot, report, export, llc) reads the newest whole one and
   names the damaged ones; none whole: exit 5; a sweep report skips a damaged run and lists it;
2. a huge grid is refused before it is planned (10^4 points plan fast: benchmarks/plan_speed.py);
3. bad files and places: a spec file that is not UTF-8, --out naming a file, a full disk at the lock;
4. a task too large for the machine is refused before anything is allocated;
5. a sweep whose runs stop for lack of space exits 4 and names each file;
6. a worker never starts a run once its launcher is gone (the launcher frozen while a run trains and
   killed once it completes, 20 times);
7. messages that name the key or file the user wrote, and warnings for what could be meant.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from birth.training.exits import EXIT_DAMAGED, EXIT_NO_SPACE, EXIT_USAGE
from birth.training.runs import RunDir

pytestmark = pytest.mark.slow  # starts subprocesses

TINY_SWEEP = ["--preset", "quick", "max_iters=8", "eval_delta=4", "optim_args.batch_size=8", "eval_batch_size=8",
              "data_args.seq_length=16", "model_args.max_length=16", "model_args.dim=16"]


def _lines(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", stderr) if line.strip()]


def _one_line(proc: subprocess.CompletedProcess, code: int, words: str) -> str:
    """The process ended with ``code`` and said one line holding ``words``, no traceback."""
    lines = _lines(proc.stderr)
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(cli, tmp_path_factory) -> Path:
    """The tiny run, with checkpoints at steps 7, 10, 14, ... 56 and 60 (the two newest periodic kept)."""
    path = tmp_path_factory.mktemp("trained") / "run"
    proc = cli.run("train", *cli.tiny, "keep_checkpoints=3", "--out", str(path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return path


def _copy(trained: Path, where: Path) -> RunDir:
    shutil.copytree(trained, where)
    return RunDir(where)


READERS = {  # each reader of runs: its arguments, and what it writes
    "plot": lambda run, out: ["plot", str(run), "--out", str(out)],
    "report": lambda run, out: ["report", str(run), "--out", str(out / "report.html")],
    "export": lambda run, out: ["export", "transformer-lens", str(run), "--out", str(out / "tl.pt")],
    "llc": lambda run, out: ["llc", str(run), "--chains", "1", "--draws", "2", "--burnin", "0", "--out", str(out)],
}


@pytest.mark.parametrize("reader", list(READERS))
def test_1_a_reader_takes_the_newest_whole_checkpoint_and_names_the_damaged(cli, trained, tmp_path, reader):
    run = _copy(trained, tmp_path / "run")
    newest = run.checkpoints()[-1][1]
    newest.write_bytes(newest.read_bytes()[:2000])  # cut short, as a full disk or a kill leaves it
    out = tmp_path / "out"
    proc = cli.run(*READERS[reader](run.path, out))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in _lines(proc.stderr) if "warning" in line]
    assert len(warnings) == 1 and newest.name in warnings[0] and "Traceback" not in proc.stderr, proc.stderr
    assert any(out.rglob("*")), f"{reader} wrote nothing"


@pytest.mark.parametrize("reader", list(READERS))
def test_1_no_whole_checkpoint_is_exit_5_in_one_line_and_nothing_written(cli, trained, tmp_path, reader):
    run = _copy(trained, tmp_path / "run")
    for _, path in run.checkpoints():
        path.write_bytes(path.read_bytes()[:2000])
    before = _snapshot(run.path)
    out = tmp_path / "out"
    _one_line(cli.run(*READERS[reader](run.path, out)), EXIT_DAMAGED, "no whole checkpoint")
    assert _snapshot(run.path) == before
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_1_a_sweep_report_skips_a_damaged_run_and_lists_it(cli, tmp_path):
    out = tmp_path / "sweep"
    done = cli.run("sweep", *TINY_SWEEP, "data_args.k=1,2", "--jobs", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    index = json.loads((out / "sweep.json").read_text())
    damaged = RunDir(out / index["runs"][0]["run_dir"])
    for _, path in damaged.checkpoints():
        path.write_bytes(b"\x00" * 100)
    proc = cli.run("report", str(out))
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in _lines(proc.stderr) if "skipped" in line]
    assert len(skipped) == 1 and index["runs"][0]["label"] in skipped[0] and "Traceback" not in proc.stderr
    page = (out / "report.html").read_text()
    assert "Skipped, no whole checkpoint" in page and index["runs"][0]["label"] in page


def test_2_a_grid_over_the_limit_is_refused_before_it_is_planned(cli, tmp_path):
    values = ",".join(str(i + 1) for i in range(1000))
    t0 = time.monotonic()
    proc = cli.run("sweep", "--preset", "quick", f"max_iters={values}", f"eval_delta={values}", "--dry-run",
                   "--out", str(tmp_path / "big"), timeout=60)
    _one_line(proc, EXIT_USAGE, "this grid makes 1,000,000 runs, more than --max-runs 100,000")
    assert time.monotonic() - t0 < 60 and not (tmp_path / "big").exists()
    proc = cli.run("sweep", "--preset", "quick", "max_iters=10,20,30", "--max-runs", "2", "--dry-run",
                   "--out", str(tmp_path / "small"))
    _one_line(proc, EXIT_USAGE, "makes 3 runs, more than --max-runs 2")


def test_3_a_spec_file_that_is_not_utf8_is_one_line(cli, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"base: {preset: quick}\ngrid: {data_args.k: [1, 2]}\n# caf\xe9\n")
    _one_line(cli.run("sweep", str(spec), "--dry-run", "--out", str(tmp_path / "s")), EXIT_USAGE,
              f"{spec}: not UTF-8 text")


@pytest.mark.parametrize("command", [["train", "--preset", "quick"], ["sweep", *TINY_SWEEP, "data_args.k=1,2"],
                                     ["reproduce", "layers", "--scale", "tiny"]], ids=["train", "sweep", "reproduce"])
def test_3_out_naming_a_file_is_one_line_and_the_file_is_kept(cli, tmp_path, command):
    place = tmp_path / "notes.txt"
    place.write_text("mine\n")
    _one_line(cli.run(*command, "--out", str(place)), EXIT_USAGE, f"{place} is a file, not a")
    assert place.read_text() == "mine\n"


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or 'refused'}")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path) -> None:
    """Fills ``disk`` to its last block."""
    fd = os.open(disk / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_3_a_disk_full_at_the_lock_is_one_line_and_leaves_no_empty_lock(cli, small_disk):
    (small_disk / "run").mkdir()
    _fill(small_disk)
    line = _one_line(cli.run("train", "--preset", "quick", "--out", str(small_disk / "run")), EXIT_NO_SPACE,
                     "No space left on device")
    assert str(small_disk / "run" / ".lock") in line
    assert not (small_disk / "run" / ".lock").exists()


@pytest.mark.parametrize("size", ["100000", "5000000"])
def test_4_a_task_larger_than_the_machine_is_refused_before_any_allocation(cli, tmp_path, size):
    out = tmp_path / "run"
    line = _one_line(cli.run("train", "--preset", "repeat-quick", f"data_args.vocab_size={size}", "--out", str(out)),
                     EXIT_USAGE, "data_args.vocab_size: a run of this size needs about")
    assert "GiB" in line and not out.exists()


def test_5_a_sweep_whose_runs_stop_for_space_exits_4_naming_each_file(cli, small_disk):
    out = small_disk / "sweep"
    proc = cli.run("sweep", *TINY_SWEEP, "max_iters=60", "checkpoint_every=7", "data_args.k=1,2,3", "--jobs", "1",
                   "--out", str(out))
    assert proc.returncode == EXIT_NO_SPACE, proc.stderr
    failed = [line for line in _lines(proc.stderr) if line.startswith("birth: run failed")]
    assert failed and all(re.search(r"no_space: cannot write \S+: No space left on device", f) for f in failed)
    assert "Traceback" not in proc.stderr and "[Errno 28]" not in proc.stderr


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill_at_completion(cli, out: Path) -> tuple[set, set]:
    """Starts a 3-run sweep with one worker; freezes the launcher while its first run trains, lets
    that run complete, then kills the launcher: the instant the run completes, the launcher can hand
    out nothing more, and is gone. Returns the run directories at the freeze and once the worker has
    exited."""
    launcher = cli.start("sweep", *TINY_SWEEP, "max_iters=40", "data_args.k=1,2,3", "--jobs", "1", "--out", str(out))
    runs = out / "runs"
    deadline = time.monotonic() + 120

    def first(status: str):
        for d in (runs.iterdir() if runs.exists() else ()):
            summary = RunDir(d).read_summary() if (d / "summary.json").exists() else {}
            if summary.get("status") == status:
                return d
        return None
    while first("running") is None and first("completed") is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = _children(launcher.pid)
    os.kill(launcher.pid, signal.SIGSTOP)
    at_freeze = {d.name for d in runs.iterdir()}
    while first("completed") is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.5)  # a worker that held the next unit would have taken its lock by now
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.communicate()
    for pid in workers:  # each worker sees its launcher gone and exits
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    return at_freeze, {d.name for d in runs.iterdir()}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_6_no_run_starts_after_the_launcher_is_killed_20_times(cli, tmp_path):
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda i: _kill_at_completion(cli, tmp_path / f"sweep{i}"), range(20)))
    for i, (at_kill, after) in enumerate(outcomes):
        assert after == at_kill, f"kill {i}: {sorted(after - at_kill)} appeared after the launcher was frozen"


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("spec, words", [
    ("base: {preset: quick}\ngrid: {data_args.k: [1, 2]}\nseeds: -2\n", "spec.yaml: seeds: the count must be >= 1"),
    ("base: {preset: nosuch}\ngrid: {data_args.k: [1, 2]}\n", "spec.yaml: base: preset: unknown preset 'nosuch'"),
    ("base: {preset: quick}\ngrid: {data_args.k: [1, 2]}\nzip: {data_args.k: [1, 2], max_iters: [5, 6]}\n",
     "data_args.k is swept in grid"),
], ids=["seeds", "preset", "grid-and-zip"])
def test_7_a_spec_files_mistake_names_the_file_and_key(cli, tmp_path, spec, words):
    line = _one_line(cli.run("sweep", str(_spec(tmp_path, spec)), "--dry-run", "--out", str(tmp_path / "s")),
                     EXIT_USAGE, words)
    assert "--seeds" not in line and "--preset" not in line


def test_7_a_key_given_twice_in_a_spec_file_is_warned_once(cli, tmp_path):
    spec = _spec(tmp_path, "base: {preset: quick, max_iters: 5, max_iters: 6}\ngrid: {data_args.k: [1, 2]}\n")
    proc = cli.run("sweep", str(spec), "--dry-run", "--out", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in _lines(proc.stderr) if "warning" in line]
    assert len(warnings) == 1 and "'max_iters' (line 1) is given twice" in warnings[0]


def test_7_a_garbage_run_config_names_the_file_not_an_option(cli, trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    run.config_path.write_text("model_args: [not, a, mapping\n")
    line = _one_line(cli.run("export", "transformer-lens", str(run.path), "--out", str(tmp_path / "tl.pt")),
                     EXIT_USAGE, f"{run.config_path}: cannot read the run's config")
    assert "--resume" not in line


def test_7_an_unknown_flag_is_named_alone(cli, tmp_path):
    line = _one_line(cli.run("train", "--preset", "quick", "--nosuch", "data_args.k=3", "--out", str(tmp_path / "r")),
                     EXIT_USAGE, "unrecognized arguments: --nosuch")
    assert "data_args.k" not in line


@pytest.mark.parametrize("args, words", [
    (["interventions=clamp:0:previous@500-600"], "starts at or after max_iters=400: it never acts"),
    (["interventions=clamp:0:previous@100-900"], "ends after max_iters=400"),
    (["checkpoint_steps=100,900"], "checkpoint_steps: 900 past max_iters=400: never saved"),
], ids=["window-after", "window-past", "checkpoint-step"])
def test_7_what_could_be_meant_past_the_end_is_warned_in_one_line(cli, args, words):
    proc = cli.run("train", "--preset", "quick", *args, "--print-config")
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("birth: warning:") and words in lines[0], proc.stderr


def test_7_the_wandb_choices_are_readable(cli, tmp_path):
    _one_line(cli.run("train", "--preset", "quick", "wandb=cloud", "--out", str(tmp_path / "r")), EXIT_USAGE,
              "wandb: expected one of '', offline, online, got 'cloud'")
