"""The thread count of a run: --threads, then OMP_NUM_THREADS, then 1 for small models, else the free cores."""
import pytest

from birth.training import threads
from birth.training.threads import SMALL_STEP, choose_threads


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_requested_threads_come_first_then_omp_num_threads(four_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(2, SMALL_STEP * 10) == (2, "--threads")
    assert choose_threads(None, SMALL_STEP * 10) == (3, "OMP_NUM_THREADS")


@pytest.mark.parametrize("busy, expected", [(0.0, 4), (1.2, 3), (2.6, 1), (3.9, 1), (8.0, 1)])
def test_only_the_free_cores_are_used(four_cores, monkeypatch, busy, expected):
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    assert choose_threads(None, SMALL_STEP * 10)[0] == expected


def test_a_small_model_gets_one_thread(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    assert choose_threads(None, SMALL_STEP - 1) == (1, "small model")


def test_busy_cores_reads_a_number_between_0_and_the_cpu_count():
    import os
    assert 0.0 <= threads.busy_cores(0.05) <= (os.cpu_count() or 1) + 1e-9
