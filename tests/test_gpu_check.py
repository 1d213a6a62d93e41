"""`scripts/gpu-check` (birth.gpu_check): the real script at tiny sizes on the CPU prints its four
rows, each PASS, and writes the markdown; its tolerance check fails on a gap; it refuses CUDA
where there is none, in one line."""
import dataclasses
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from birth import gpu_check
from birth.gpu_check import exact, metric_gap, rounding_tolerance
from birth.tasks import make_task
from birth.training.config import build_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one thread: tiny models, a busy 2-core machine
slow = pytest.mark.slow


def _script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@slow
def test_the_script_checks_a_cpu_at_tiny_sizes(tmp_path):
    out = tmp_path / "table.md"
    done = _script("--device", "cpu", "--tiny", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    header, *rest = done.stdout.splitlines()
    assert f"torch {torch.__version__}" in header and re.search(r"\d{4}-\d\d-\d\d", header) and "CPU" in header
    rows = [line for line in rest if re.match(r"\| \d \|", line)]
    assert len(rows) == 4
    for number, row in enumerate(rows, 1):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == str(number) and cells[-1] == "PASS", row
        assert re.search(r"\d", cells[3]), row  # the result has numbers
    assert "same device" in rows[0] and "every metric equal" in rows[0]  # CPU against CPU: exact
    assert re.search(r"\d+(\.\d+)? ms/step", rows[2]) and re.search(r"\d\.\d\dx", rows[2])
    assert all(re.search(rf"\b{r}: [\d,]+/s", rows[3]) for r in (1, 2, 4))
    assert out.read_text() == done.stdout  # the same table, as markdown


def _lines(**changes) -> list[dict]:
    rows = [{"iter": 0, "loss": 2.0, "wo1_acc": 0.5, "wk0_late_acc": None, "elapsed": 1.0},
            {"iter": 20, "loss": 1.0, "wo1_acc": 0.9, "wk0_late_acc": None, "elapsed": 2.0}]
    rows[-1].update(changes)
    return rows


def test_the_tolerance_check_fails_on_a_gap():
    reference = _lines()
    assert metric_gap(_lines(elapsed=9.0), reference, exact).passed  # wall times are not compared
    assert metric_gap(_lines(loss=1.0015), reference, rounding_tolerance).passed  # 1e-3 + 1e-3 * 1.0 allowed
    failed = metric_gap(_lines(loss=1.01), reference, rounding_tolerance)
    assert not failed.passed and (failed.key, failed.step) == ("loss", 20) and failed.gap == pytest.approx(0.01)
    assert "loss" in failed.describe() and "step 20" in failed.describe()
    assert not metric_gap(_lines(loss=1.0 + 1e-9), reference, exact).passed
    # a probe counts argmaxes: two flipped near-ties of ~65 tokens pass, more do not
    assert metric_gap(_lines(wo1_acc=0.9 - 2 / 65), reference, rounding_tolerance).passed
    assert not metric_gap(_lines(wo1_acc=0.8), reference, rounding_tolerance).passed
    # what must be equal: None, NaN, the keys and the logged steps
    for changed in (_lines(wk0_late_acc=0.5), _lines(loss=math.nan), _lines(extra=1.0), _lines(iter=21)):
        assert math.isinf(metric_gap(changed, reference, rounding_tolerance).ratio)
    # only the judged steps count toward the verdict
    assert metric_gap(_lines(loss=2.0), reference, rounding_tolerance, steps=(0, 10)).passed


def test_a_cpu_twin_draws_the_batches_of_its_task():
    task = make_task(build_config("quick", {"data_args.seq_length": 32}).data_args, "cpu")
    twin = gpu_check.cpu_twin(task)
    for a, b in ((task.batch(42, "train", 3, 8), twin.batch(42, "train", 3, 8)),
                 (task.batch(42, "train", 4, 8), task.batch(42, "train", 4, 8))):
        assert torch.equal(a.x, b.x) and all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    with gpu_check.data_drawn_on_cpu():  # on the CPU it changes nothing
        assert torch.equal(task.batch(42, "train", 3, 8).x, twin.batch(42, "train", 3, 8).x)


@slow
def test_the_throughput_row_skips_a_stack_past_its_budget(tmp_path):
    sizes = dataclasses.replace(gpu_check.TINY, stacks=(1, 2), stack_steps=3, budget_s=0.0)
    row = gpu_check.stack_throughput(torch.device("cpu"), sizes, tmp_path, time.perf_counter())
    assert row.passed and re.search(r"1: [\d,]+/s", row.result) and "2: skipped" in row.result


@slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_is_refused_in_one_line_where_there_is_none():
    done = _script("--device", "cuda", timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "no CUDA" in done.stderr


def test_a_stack_that_fails_fails_the_throughput_row(tmp_path, monkeypatch):
    def out_of_memory(cfgs, dirs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
    monkeypatch.setattr(gpu_check, "_stacked", out_of_memory)
    sizes = dataclasses.replace(gpu_check.TINY, stacks=(8,))
    row = gpu_check.stack_throughput(torch.device("cpu"), sizes, tmp_path, time.perf_counter())
    assert not row.passed and row.result == "8: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
