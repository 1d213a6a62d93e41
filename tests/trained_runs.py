"""Runs trained once per test session and shared by the interop, report and loader tests."""
import functools
import os
import subprocess
import tempfile
from pathlib import Path

from conftest import Cli

ROOT = Path(tempfile.mkdtemp(prefix="birth-interop-"))

# the quick preset cut to 200 steps (in-context accuracy ~0.95), checkpoints kept for the slider
QUICK = ["--preset", "quick", "max_iters=200", "checkpoint_steps=40,80,120,160"]
# the general transformer: 2 layers, 2 heads, pre-LN, ReLU MLP, loss on all tokens
FULL = ["--preset", "full", "max_iters=150", "eval_delta=10", "optim_args.batch_size=32", "eval_batch_size=64",
        "data_args.k=3", "data_args.fixed_special_toks=True", "data_args.seq_length=48",
        "model_args.max_length=48", "model_args.dim=32", "model_args.n_heads=2"]


def _train(name: str, args: list[str]) -> Path:
    out = ROOT / name
    proc = subprocess.run(Cli().argv("train", *args, "--out", str(out), "--quiet"), env=Cli.env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


@functools.lru_cache(maxsize=None)
def quick_run() -> Path:
    return _train("quick", QUICK)


@functools.lru_cache(maxsize=None)
def full_run() -> Path:
    return _train("full", FULL)


@functools.lru_cache(maxsize=None)
def reproduction() -> Path:
    from conftest import reproduce_tiny
    out = ROOT / "reproduce"
    reproduce_tiny("fig2", out)
    return out


def artifact_dir() -> Path:
    """Where tests leave files for people to look at (screenshots): $BIRTH_ARTIFACTS, else
    birth-test-artifacts/ in the temporary directory."""
    path = Path(os.environ.get("BIRTH_ARTIFACTS", Path(tempfile.gettempdir()) / "birth-test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
