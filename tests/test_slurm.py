"""The Slurm backend against a real Slurm (``eval "$(scripts/local-slurm up)"``; CI brings one up).

Skipped, with the reason, where there is no Slurm to submit to. Each test has its own output
folder: job ids restart at 1 when the local Slurm is brought up afresh.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from birth.launching.jobs import ERROR_FILE, Job, make_job
from birth.launching.local import LocalBackend
from birth.training.runs import RunDir
from conftest import same_metrics

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# 1000 steps of a tiny model: a few seconds, long enough to be stopped in mid-run
LONG = {"data_args.seq_length": 32, "model_args.max_length": 32, "model_args.dim": 32, "optim_args.batch_size": 16,
        "eval_batch_size": 16, "max_iters": 1000, "eval_delta": 25, "checkpoint_every": 50}
SHORT = {**LONG, "max_iters": 40, "eval_delta": 10, "checkpoint_every": 20}


def _slurm_missing() -> str:
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "the Slurm extra (submitit) is not installed: pip install -e '.[all]'"
    if shutil.which("sbatch") is None:
        return 'no Slurm here (no sbatch on PATH): run eval "$(scripts/local-slurm up)" first'
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode or "UP" not in ping.stdout:
        said = ((ping.stdout.strip() or ping.stderr.strip()).splitlines() or ["no answer"])[-1]
        return f'no Slurm controller answers (scontrol ping: {said}); run eval "$(scripts/local-slurm up)" first'
    return ""


@pytest.fixture(scope="module", autouse=True)
def slurm():
    why = _slurm_missing()
    if why:
        pytest.skip(why)


def sacct(job_ids) -> dict[str, tuple[str, str]]:
    """job id -> (job name, state), from the accounting database."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,JobName,State"],
                         capture_output=True, text=True, check=True).stdout
    return {i: (n, s) for i, n, s in (line.split("|") for line in out.splitlines())}


def job_ids(folder: Path) -> list[str]:
    """The Slurm jobs submitted into a backend folder (one sbatch script each)."""
    return sorted(p.name.split("_")[0] for p in (folder / "logs").glob("*_submission.sh"))


def wait_until(predicate, timeout: float = 120, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def backend(folder: Path, **profile):
    from birth.launching.slurm import SlurmBackend
    from birth.launching.slurm_profile import SlurmProfile
    return SlurmBackend(folder, SlurmProfile(**profile), poll_s=0.3, log=lambda s: None)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> Path:
    """The LONG config trained start to finish in this process."""
    job = make_job(tmp_path_factory.mktemp("reference"), LONG, "quick")
    [res] = LocalBackend(jobs=1, in_process=True).run([job])
    assert res.status == "completed", res.error
    return Path(job.run_dir)


def test_tiny_recipe_through_slurm_gives_the_local_figures_and_claims(cli, tmp_path):
    from conftest import reproduce_tiny
    proc = cli.run("reproduce", "fig2", "--scale", "tiny", "--seeds", "1", "--first-seed", "0", "--held-out", "0",
                   "--backend", "slurm",
                   "--out", str(tmp_path / "slurm"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    runs = len(list((tmp_path / "slurm" / "runs").iterdir()))
    assert f"{runs} job(s) submitted" in proc.stderr and "finished" in proc.stderr  # progress while waiting
    reproduce_tiny("fig2", tmp_path / "local")
    for rel in ("data/fig2.csv", "figures/fig2.png"):
        assert (tmp_path / "slurm" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel
    claims = [json.loads((tmp_path / out / "claims/fig2.json").read_text())["claims"] for out in ("slurm", "local")]
    assert claims[0] == claims[1] and claims[0]
    ids = job_ids(tmp_path / "slurm" / "slurm")
    assert len(ids) == runs
    wait_until(lambda: {s for _, s in sacct(ids).values()} == {"COMPLETED"}, 30, "sacct to list COMPLETED jobs")
    assert all(name.startswith("birth-") for name, _ in sacct(ids).values())


def start_long_run(tmp_path):
    """Submits the LONG run and waits in a thread; returns it, its Slurm job id once it has a
    checkpoint, and a function that returns the backend's results when the wait is over."""
    from birth.launching.slurm import active_jobs, job_name
    job, box = make_job(tmp_path / "runs", LONG, "quick", label="long"), {}
    waiter = threading.Thread(target=lambda: box.update(results=backend(tmp_path / "slurm").run([job])))
    waiter.start()
    wait_until(lambda: RunDir(job.run_dir).latest_checkpoint() is not None, what="the first checkpoint")
    [(job_id, _)] = active_jobs([job_name(job)]).values()

    def results():
        waiter.join(180)
        return box["results"]
    return job, job_id, results


def test_a_job_cancelled_in_mid_run_is_resumed_from_its_checkpoint_by_the_rerun(tmp_path, long_reference):
    job, job_id, results = start_long_run(tmp_path)
    subprocess.run(["scancel", job_id], check=True)
    [res] = results()
    assert res.status == "interrupted" and "rerun to resume" in res.error
    run = RunDir(job.run_dir)
    stopped_at = run.read_summary()["step"]
    assert 0 < stopped_at < LONG["max_iters"]
    wait_until(lambda: "CANCELLED" in sacct([job_id])[job_id][1], 30, "sacct to say CANCELLED")

    [res] = backend(tmp_path / "slurm").run([job])
    assert res.status == "completed", res.error
    assert 0 < run.read_summary()["start_step"] <= stopped_at  # resumed, not restarted
    assert same_metrics(run.metrics_path, long_reference / "metrics.jsonl")


def test_a_checkpoint_signal_requeues_the_job_which_resumes(tmp_path, long_reference):
    """What Slurm does before a time limit (USR2, submitit's --signal): checkpoint, requeue, resume."""
    job, job_id, results = start_long_run(tmp_path)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    [res] = results()
    assert res.status == "completed", res.error
    run = RunDir(job.run_dir)
    assert run.read_summary()["start_step"] > 0  # the requeued job resumed
    assert job_ids(tmp_path / "slurm") == [job_id]  # the same job, requeued: nothing submitted again
    assert same_metrics(run.metrics_path, long_reference / "metrics.jsonl")


def test_a_run_that_raises_comes_back_failed_and_the_others_complete(tmp_path):
    good = [make_job(tmp_path / "runs", {**SHORT, "seed": s}, "quick", label=f"good {s}") for s in (1, 2)]
    broken = Job(config={"max_iters": "not a config"}, run_dir=str(tmp_path / "runs" / "broken"), label="broken")
    results = {r.job.label: r for r in backend(tmp_path / "slurm").run(good + [broken])}
    assert [results[f"good {s}"].status for s in (1, 2)] == ["completed", "completed"]
    assert results["broken"].status == "failed"
    error = (Path(broken.run_dir) / ERROR_FILE).read_text()
    assert "Traceback" in error and error == results["broken"].error
    assert RunDir(broken.run_dir).read_summary()["status"] == "failed"


def test_a_job_that_dies_before_training_is_failed_with_its_log_in_error_txt(tmp_path):
    job = make_job(tmp_path / "runs", SHORT, "quick", label="doomed")
    [res] = backend(tmp_path / "slurm", setup=["echo 'no such module: cuda' >&2", "exit 3"]).run([job])
    assert res.status == "failed"
    error = (Path(job.run_dir) / ERROR_FILE).read_text()
    assert "no such module: cuda" in error and "before the run finished" in error.splitlines()[-1]


def test_two_concurrent_submissions_never_train_one_run_twice(cli, tmp_path):
    argv = ["reproduce", "layers", "--scale", "tiny", "--seeds", "1", "--first-seed", "0", "--held-out", "0",
                   "--backend", "slurm", "--out", str(tmp_path)]
    procs = [cli.start(*argv) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    ids, runs = job_ids(tmp_path / "slurm"), len(list((tmp_path / "runs").iterdir()))
    names = [name for name, _ in sacct(ids).values()]
    assert len(ids) == runs and len(set(names)) == runs  # one job per run, whoever submitted it
    assert sum(f"{runs} job(s) submitted" in err for _, err in outs) == 1
    for run in (tmp_path / "runs").iterdir():
        assert RunDir(run).read_summary()["start_step"] == 0  # trained once, from the start


def test_a_rerun_after_the_submitter_died_waits_for_its_jobs_instead_of_submitting_again(cli, tmp_path):
    profile = tmp_path / "slow-start.yaml"
    profile.write_text("setup: ['sleep 4']\n")  # each job waits before training: still queued or running below
    argv = ["reproduce", "layers", "--scale", "tiny", "--seeds", "1", "--first-seed", "0", "--held-out", "0",
                   "--backend", "slurm",
            "--slurm-profile", str(profile), "--out", str(tmp_path)]
    first = cli.start(*argv)
    for line in first.stderr:  # until it has submitted everything
        if "job(s) submitted" in line:
            break
    first.kill()  # the submitting shell dies; its jobs go on
    first.communicate()
    submitted = job_ids(tmp_path / "slurm")
    proc = cli.run(*argv, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"0 job(s) submitted, {len(submitted)} already queued or running" in proc.stderr
    assert job_ids(tmp_path / "slurm") == submitted
    assert {s for _, s in sacct(submitted).values()} <= {"COMPLETED", "RUNNING", "COMPLETING"}
