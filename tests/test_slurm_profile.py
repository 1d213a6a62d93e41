"""Slurm profiles and options, and the parts of the Slurm backend that need no Slurm to test."""
from __future__ import annotations

import sys

import pytest

from birth.cli import main
from birth.training.config import ConfigError
from birth.launching.jobs import make_job
from birth.launching.slurm_profile import SlurmProfile, load_profile, parse_minutes


def test_a_profile_with_options_over_it_becomes_sbatch_parameters(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("partition: gpu\ntime: '8:00:00'\ncpus: 8\ngpus: 1\nmem: 32g\n"
                    "sbatch: {account: my-lab, qos: normal}\nsetup: ['module load cuda']\nrequeues: 5\n")
    profile = load_profile(path, {"time": "1-00:00", "gpus": None, "sbatch": ["qos=high", "exclusive"]})
    assert profile == SlurmProfile(partition="gpu", time=1440, cpus=8, gpus=1, mem="32G",
                                   sbatch={"account": "my-lab", "qos": "high", "exclusive": True},
                                   setup=["module load cuda"], requeues=5)
    assert profile.sbatch_parameters() == {
        "time": 1440, "cpus_per_task": 8, "partition": "gpu", "gpus_per_node": 1, "setup": ["module load cuda"],
        "additional_parameters": {"account": "my-lab", "qos": "high", "exclusive": True, "mem": "32G"}}


def test_the_default_profile_asks_for_one_cpu_for_an_hour():
    assert SlurmProfile().sbatch_parameters() == {"time": 60, "cpus_per_task": 1, "additional_parameters": {}}


@pytest.mark.parametrize("text, minutes", [("90", 90), (90, 90), ("30:30", 31), ("2:00:00", 120),
                                           ("1-0", 1440), ("1-01:30", 1530), ("0-00:00:01", 1)])
def test_slurm_time_formats_are_read_as_whole_minutes(text, minutes):
    assert parse_minutes(text, "--time") == minutes


@pytest.mark.parametrize("options, starts", [
    ({"time": "soon"}, "--time: expected minutes"), ({"time": "0"}, "--time: must be more than 0"),
    ({"cpus": "0"}, "--cpus: expected a whole number >= 1"), ({"gpus": "one"}, "--gpus: expected a whole number"),
    ({"mem": "lots"}, "--mem: expected sbatch --mem syntax"), ({"partition": "a b"}, "--partition: expected"),
    ({"sbatch": ["=x"]}, "--sbatch: expected KEY=VALUE"), ({"sbatch": ["output=x.log"]}, "--sbatch: output: logs go"),
    ({"sbatch": ["time=5"]}, "--sbatch: time: use time")])
def test_a_bad_option_is_one_line_naming_it(options, starts):
    with pytest.raises(ConfigError) as err:
        load_profile(None, options)
    assert str(err.value).startswith(starts) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, starts", [("gpus: -1\n", "{path}: gpus: expected"),
                                          ("colour: red\n", "{path}: unknown key 'colour'"),
                                          ("- a\n", "--slurm-profile: {path} must hold a mapping"),
                                          ("sbatch: [a]\n", "{path}: sbatch: expected a mapping"),
                                          ("time: [\n", "--slurm-profile: {path} is not valid YAML")])
def test_a_bad_profile_is_one_line_naming_the_file_and_key(tmp_path, text, starts):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert str(err.value).startswith(starts.format(path=path)) and "\n" not in str(err.value)


def test_the_command_line_rejects_slurm_options_without_the_slurm_backend(capsys, tmp_path):
    assert main(["reproduce", "fig2", "--scale", "tiny", "--gpus", "1", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "fig2", "--backend", "slurm", "--jobs", "2", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "fig2", "--backend", "slurm", "--slurm-profile", str(tmp_path / "none.yaml"),
                 "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == ["--gpus", "--jobs", "--slurm-profile"]
    assert not (tmp_path / "runs").exists()


def test_without_submitit_the_backend_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` fails, installed or not
    assert main(["reproduce", "fig2", "--scale", "tiny", "--backend", "slurm", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs submitit" in err and "pip install" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_without_slurm_the_backend_says_what_is_missing(capsys, tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="the Slurm extra is not installed: pip install -e '.[all]'")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue or srun
    assert main(["reproduce", "fig2", "--scale", "tiny", "--backend", "slurm", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "sbatch, squeue, srun not found on PATH" in err and len(err.splitlines()) == 1
    # a dry run needs no cluster
    assert main(["reproduce", "fig2", "--scale", "tiny", "--backend", "slurm", "--dry-run",
                 "--out", str(tmp_path)]) == 0


def test_a_job_whose_run_is_being_trained_elsewhere_trains_nothing(tmp_path):
    from birth.launching.slurm import RunTask, _flock
    job = make_job(tmp_path / "runs", {"max_iters": 4, "eval_delta": 2, "model_args.dim": 16,
                                       "data_args.seq_length": 16, "model_args.max_length": 16}, "quick")
    task = RunTask(job, threads=1, lock_dir=str(tmp_path / "locks"))
    with _flock(tmp_path / "locks" / f"{job.key}.lock", wait=False) as held:
        assert held
        assert task() == "busy"
    assert not (tmp_path / "runs").exists()
    assert task() == "completed" and task() == "cached"


def test_the_documented_gpu_profile_loads():
    from pathlib import Path
    profile = load_profile(Path(__file__).parent.parent / "docs" / "cluster-gpu.yaml")
    assert (profile.partition, profile.gpus, profile.time) == ("gpu", 1, 120)
    assert profile.sbatch_parameters()["gpus_per_node"] == 1
