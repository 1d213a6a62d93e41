"""Runs trained once per test session and shared by the tests that read a trained run (interop,
report, plots, the quick preset's own checks), across the parallel run's workers: the first worker
to ask trains, the others wait on a lock and read its run."""
import fcntl
import functools
import os
import subprocess
import tempfile
from pathlib import Path

from conftest import Cli

# one folder per test session, seen by every xdist worker of that session (they share its run id)
_SESSION = os.environ.get("PYTEST_XDIST_TESTRUNUID")
ROOT = (Path(tempfile.gettempdir()) / f"birth-trained-{_SESSION}" if _SESSION
        else Path(tempfile.mkdtemp(prefix="birth-trained-")))

# the quick preset cut to 200 steps (in-context accuracy ~0.95), checkpoints kept for the slider
QUICK = ["--preset", "quick", "max_iters=200", "checkpoint_steps=40,80,120,160"]
# the general transformer: 2 layers, 2 heads, pre-LN, ReLU MLP, loss on all tokens
FULL = ["--preset", "full", "max_iters=150", "eval_delta=10", "optim_args.batch_size=32", "eval_batch_size=64",
        "data_args.k=3", "data_args.fixed_special_toks=True", "data_args.seq_length=48",
        "model_args.max_length=48", "model_args.dim=32", "model_args.n_heads=2"]


# the quick preset whole (the README demo: 400 steps), log-spaced checkpoints, the patching metric
QUICK_DEMO = ["--preset", "quick", "checkpoint_steps=log:5", "metrics=patching@200"]


def _once(name: str, make) -> Path:
    """ROOT/name, made by ``make(path)`` by the first worker that asks; the others wait for it."""
    ROOT.mkdir(parents=True, exist_ok=True)
    out, done = ROOT / name, ROOT / f"{name}.done"
    with open(ROOT / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():  # a worker that failed to make it left no mark: this one tries again
            make(out)
            done.touch()
    return out


def _train(name: str, args: list[str]) -> Path:
    def make(out: Path) -> None:
        proc = subprocess.run(Cli().argv("train", *args, "--out", str(out), "--quiet"), env=Cli.env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    return _once(name, make)


@functools.lru_cache(maxsize=None)
def quick_run() -> Path:
    return _train("quick", QUICK)


@functools.lru_cache(maxsize=None)
def quick_demo() -> Path:
    return _train("quick-demo", QUICK_DEMO)


@functools.lru_cache(maxsize=None)
def full_run() -> Path:
    return _train("full", FULL)


@functools.lru_cache(maxsize=None)
def reproduction() -> Path:
    from conftest import reproduce_tiny
    return _once("reproduce", lambda out: reproduce_tiny("fig2", out))


def artifact_dir() -> Path:
    """Where tests leave files for people to look at (screenshots): $BIRTH_ARTIFACTS, else
    birth-test-artifacts/ in the temporary directory."""
    path = Path(os.environ.get("BIRTH_ARTIFACTS", Path(tempfile.gettempdir()) / "birth-test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
