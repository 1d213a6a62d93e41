"""Shared by the reliability tests: a tiny config, the real `birth` command, and one reference run."""
import os
import subprocess
import sys
import tempfile

import pytest

# corpus statistics cached by the tests (and the processes they start) stay out of ~/.cache
os.environ["BIRTH_CACHE_DIR"] = tempfile.mkdtemp(prefix="birth-test-cache-")

# The parallel run (pytest-xdist, pyproject's addopts): the tests wait on subprocesses, sleeps and
# Slurm as much as they compute, so 1.5 workers per core keep 2 cores busy (76% busy with 3 workers;
# 4 took longer: 575 s against 550 s, more CPU lost to contention); the longest files start first.
LONGEST_FIRST = ("test_fault_injection.py", "test_slurm.py", "test_stopping.py", "test_reliability.py",
                 "test_train.py", "test_interop_notebook.py", "test_stacked.py", "test_resume.py")


def pytest_configure(config):
    # one torch thread per test process: 3 workers of 2 threads each on 2 cores spin against each
    # other (the tests that measure threads set their own)
    import torch
    torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config):
    return min(4, max(2, (os.cpu_count() or 1) * 3 // 2))


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# 60 steps, an evaluation every 4 (16 metrics lines), a checkpoint every 7 and one kept at step 10.
TINY = ["--preset", "quick", "max_iters=60", "eval_delta=4", "checkpoint_every=7", "checkpoint_steps=10",
        "optim_args.batch_size=16", "eval_batch_size=16", "data_args.seq_length=32",
        "model_args.max_length=32", "model_args.dim=32"]


class Cli:
    """The real command line (`python -m birth`) in a subprocess.

    One thread: a tiny model gains nothing from more, and on a busy 2-core machine extra threads
    make a 1-second run take a minute.
    """

    tiny = TINY
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "birth", *args]

    def run(self, *args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def reference_run(cli, tmp_path_factory):
    """The tiny config trained once, start to finish, left alone."""
    path = tmp_path_factory.mktemp("reference") / "run"
    proc = cli.run("train", *TINY, "--out", str(path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return path


def reproduce_tiny(name: str, out, seeds: int = 1, workers: int = 1):
    """Runs recipe ``name`` end to end at the test-only tiny scale, training in this process (a
    recipe's own computations, the theory's, take ``workers`` processes)."""
    from birth.experiments.reproduce import reproduce
    from birth.launching.local import LocalBackend
    return reproduce(name, scale="tiny", seeds=seeds, out=out, backend=LocalBackend(jobs=workers, in_process=True),
                     log=lambda s: None)


def same_metrics(path_a, path_b) -> bool:
    """Two metrics.jsonl files hold the same lines, but for ``elapsed`` (wall seconds: the one field
    that measures the machine, not the computation)."""
    return deterministic_lines(path_a) == deterministic_lines(path_b)


def deterministic_lines(path) -> list[dict]:
    import json
    from pathlib import Path
    data = Path(path).read_bytes()
    assert data.endswith(b"\n"), f"{path}: the last line is not whole"
    rows = [json.loads(line) for line in data.split(b"\n")[:-1]]
    assert all("elapsed" in r for r in rows), f"{path}: a line without elapsed"
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]
