"""The runner: stable config hashes, skipping completed runs, recording failures and carrying on."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from birth.launching.jobs import ERROR_FILE, Job, Result, estimated_cost, make_job, run_jobs
from birth.training.naming import config_hash
from birth.launching.local import LocalBackend, default_workers
from birth.training.runs import RunDir
from birth.training.validation import resolve_config

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

TINY = {"data_args.seq_length": 16, "model_args.max_length": 16, "model_args.dim": 16, "optim_args.batch_size": 8,
        "eval_batch_size": 8, "max_iters": 4, "eval_delta": 2}


class Recorder:
    """A backend that records what it was asked to run and runs it in this process."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.inner = LocalBackend(jobs=1, in_process=True)

    def run(self, jobs, on_result=None):
        self.calls.append([j.label for j in jobs])
        return self.inner.run(jobs, on_result)


def test_hash_is_stable_and_depends_only_on_the_resolved_config():
    a = config_hash(resolve_config("quick", {"data_args.k": 5, "model_args.dim": 64}))
    b = config_hash(resolve_config("quick", {"model_args.dim": 64, "data_args.k": 5}))
    same_as_default = config_hash(resolve_config("quick", {"model_args.dim": 64, "data_args.k": 5,
                                                           "optim_args.momentum": 0.9}))
    other = config_hash(resolve_config("quick", {"data_args.k": 5, "model_args.dim": 32}))
    assert a == b == same_as_default != other
    assert len(a) == 12 and int(a, 16) >= 0
    # the same in a fresh interpreter (no dependence on hash randomisation or import order)
    code = ("from birth.training.naming import config_hash; from birth.training.validation import resolve_config; "
            "print(config_hash(resolve_config('quick', {'data_args.k': 5, 'model_args.dim': 64})))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert fresh == a


def test_make_job_names_the_directory_by_the_hash(tmp_path):
    job = make_job(tmp_path, TINY, preset="quick", label="x")
    assert Path(job.run_dir) == tmp_path / config_hash(resolve_config("quick", TINY))
    assert job.config["max_iters"] == 4


def test_completed_runs_are_skipped_and_duplicates_run_once(tmp_path):
    jobs = [make_job(tmp_path, TINY, "quick", label="a"), make_job(tmp_path, TINY, "quick", label="a-again"),
            make_job(tmp_path, {**TINY, "seed": 7}, "quick", label="b")]
    backend = Recorder()
    first = run_jobs(jobs, backend)
    assert sorted(r.status for r in first) == ["completed", "completed"]
    assert backend.calls == [["a", "b"]]
    metrics = RunDir(jobs[0].run_dir).read_metrics()
    assert [m["iter"] for m in metrics] == [0, 2, 3]
    second = run_jobs(jobs, backend)
    assert backend.calls == [["a", "b"]]  # nothing was run again
    assert sorted(r.status for r in second) == ["cached", "cached"]
    assert second[0].summary["final_metrics"]["iter"] == 3


def test_a_failed_run_is_recorded_and_the_others_carry_on(tmp_path, monkeypatch):
    import birth.launching.jobs
    import birth.training.loop
    good, bad = make_job(tmp_path, TINY, "quick", "good"), make_job(tmp_path, {**TINY, "seed": 1}, "quick", "bad")
    real = birth.training.loop.train

    def flaky(cfg, run_dir, **kw):
        if Path(run_dir) == Path(bad.run_dir):
            raise RuntimeError("boom in training")
        return real(cfg, run_dir, **kw)

    monkeypatch.setattr(birth.launching.jobs, "train", flaky)
    results = {r.job.label: r for r in run_jobs([bad, good], LocalBackend(jobs=1, in_process=True))}
    assert results["good"].status == "completed" and results["good"].ok
    assert results["bad"].status == "failed" and not results["bad"].ok
    assert "boom in training" in (Path(bad.run_dir) / ERROR_FILE).read_text()
    summary = json.loads((Path(bad.run_dir) / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: boom in training"
    # a rerun retries the failed run (it is not complete) and leaves the good one alone
    monkeypatch.setattr(birth.launching.jobs, "train", real)
    backend = Recorder()
    again = {r.job.label: r for r in run_jobs([bad, good], backend)}
    assert backend.calls == [["bad"]]
    assert again["bad"].status == "completed" and again["good"].status == "cached"
    assert not (Path(bad.run_dir) / ERROR_FILE).exists()


def test_worker_processes_run_jobs_and_survive_a_broken_one(tmp_path):
    good = make_job(tmp_path, TINY, "quick", "good")
    broken = Job(config={"no_such_key": 1}, run_dir=str(tmp_path / "broken"), label="broken")
    seen: list[Result] = []
    results = run_jobs([broken, good], LocalBackend(jobs=2), on_result=seen.append)
    by = {r.job.label: r for r in results}
    assert by["good"].status == "completed"
    assert by["good"].summary["final_metrics"]["iter"] == 3
    assert by["broken"].status == "failed" and "no_such_key" in by["broken"].error
    assert json.loads((tmp_path / "broken" / "summary.json").read_text())["status"] == "failed"
    assert {r.job.label for r in seen} == {"good", "broken"}


@pytest.mark.parametrize("status", ["interrupted", "running", "no_space"])  # SIGTERM, SIGKILL, a full disk
def test_a_stopped_run_is_resumed_not_restarted(tmp_path, status):
    job = make_job(tmp_path, {**TINY, "checkpoint_every": 2}, "quick", "r")
    run_jobs([job], LocalBackend(jobs=1, in_process=True))
    run = RunDir(job.run_dir)
    summary = run.read_summary()
    summary["status"] = status  # the checkpoints are there
    run.write_summary(summary)
    (res,) = run_jobs([job], LocalBackend(jobs=1, in_process=True))
    assert res.status == "completed"
    assert res.summary["start_step"] == 4  # resumed from the last checkpoint, nothing retrained


def test_default_workers_and_cost_order():
    assert default_workers(1) >= 1 and default_workers(10_000) == 1
    small = resolve_config("quick", {"model_args.dim": 32})
    big = resolve_config("quick", {"model_args.dim": 256})
    from birth.training.config import to_dict
    assert estimated_cost(to_dict(big)) > estimated_cost(to_dict(small))


@pytest.mark.parametrize("jobs", [0])
def test_local_backend_falls_back_to_the_cpu_count(jobs):
    assert LocalBackend(jobs=jobs).workers == default_workers(1)
