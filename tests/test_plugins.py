"""Plug-ins by name, end to end through the real command line: docs/api.md's task with its own
keys, a metric (``metrics=MODULE:ATTR``), an intervention kind with a step window that reads the
step from its context, and a recipe (``birth reproduce MODULE:ATTR``), each a module outside the
package (tests/plugins/mylab, the task taken from the docs). The same plug-ins in a 2-worker sweep."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import birth

pytestmark = pytest.mark.slow  # starts subprocesses

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
PLUGINS = Path(__file__).resolve().parent / "plugins" / "mylab"
TASK = ["data_args.task=mylab.tasks:LookupTask", "data_args.seq_length=16", "model_args.max_length=16",
        "model_args.arch=full", "model_args.n_heads=1", "model_args.dim=16", "model_args.no_ffn=true",
        "loss_head_only=false", "optim_args.use_sgd=false", "optim_args.learning_rate=0.01",
        "optim_args.batch_size=16", "eval_batch_size=32", "device=cpu"]
# layer 1's attention uniform from step 5 (the window) until step 15 (the kind reads the step)
WINDOWED = ["metrics=mylab.probes:from_uniform", "interventions=mylab.kinds:uniform_until:1:15@5-25"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A folder holding the package ``mylab``: its task is the one docs/api.md shows."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(PLUGINS, root / "mylab")
    code = re.search(r"<!-- example task: lookup.py.*?-->\n```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    (root / "mylab" / "tasks.py").write_text(code)
    return root


def _birth(lab: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(lab), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "birth", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_takes_a_task_its_keys_a_metric_and_a_windowed_kind_by_name(lab, tmp_path):
    done = _birth(lab, "train", *TASK, "data_args.keys=6", *WINDOWED, "max_iters=30", "eval_delta=1",
                  "--out", "run", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-800:]
    deviation = {r["iter"]: r["layer1_from_uniform"] for r in _lines(tmp_path / "run")}
    assert sorted(deviation) == list(range(30))
    assert all(deviation[s] < 1e-6 for s in range(5, 15)), deviation       # in the window, before step 15
    assert all(deviation[s] > 1e-3 for s in (*range(5), *range(15, 30))), deviation
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interventions"] == ["mylab.kinds:uniform_until:1:15@5-25"]
    assert summary["config"]["data_args"]["keys"] == 6


@pytest.mark.parametrize("args, words", [
    (["data_args.kys=6"], "data_args.kys: unknown key of task mylab.tasks:LookupTask; did you mean data_args.keys?"),
    (["metrics=mylab.probes:nosuch"], "metrics: metric 'mylab.probes:nosuch': module 'mylab.probes' has no 'nosuch'"),
    (["interventions=mylab.kinds:uniform_until:3:15"], "the model has 2 layers"),
    (["data_args.task=mylab.nosuch:Task"], "data_args.task: task 'mylab.nosuch:Task': cannot import 'mylab.nosuch'"),
])
def test_a_bad_plug_in_is_one_line_naming_it(lab, tmp_path, args, words):
    done = _birth(lab, "train", *TASK, *args, "--out", "run", cwd=tmp_path)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_two_worker_sweep_runs_the_same_plug_ins_and_its_table_has_the_metric(lab, tmp_path):
    done = _birth(lab, "sweep", *TASK, "data_args.keys=4,6", *WINDOWED, "max_iters=20", "eval_delta=5",
                  "--jobs", "2", "--out", "sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-800:]
    assert "2 runs trained, 0 reused, 0 failed" in done.stderr
    df = birth.load_sweep(tmp_path / "sweep")
    assert sorted(df["data_args.keys"].unique()) == [4, 6]
    inside = df[df["iter"].isin([5, 10])]["layer1_from_uniform"]
    outside = df[df["iter"].isin([0, 15])]["layer1_from_uniform"]
    assert len(inside) == 4 and (inside < 1e-6).all() and (outside > 1e-3).all()


def test_reproduce_takes_a_recipe_by_name_with_two_workers(lab, tmp_path):
    done = _birth(lab, "reproduce", "mylab.recipes:lookup", "--scale", "tiny", "--seeds", "1", "--held-out", "0",
                  "--jobs", "2", "--out", "rep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-800:]
    assert "lookup/4 keys/seed 20" in done.stderr and "2 runs trained" in done.stderr
    assert (tmp_path / "rep" / "figures" / "lookup.png").stat().st_size > 0
    claims = json.loads((tmp_path / "rep" / "claims" / "lookup.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["L1"] and claims[0]["verdict"] in ("PASS", "FAIL")
    bad = _birth(lab, "reproduce", "mylab.recipes:nosuch", "--scale", "tiny", "--out", "rep2", cwd=tmp_path)
    assert bad.returncode == 2 and "module 'mylab.recipes' has no 'nosuch'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slurm
def test_slurm_jobs_import_the_plug_ins_from_the_config(lab, tmp_path):
    from test_slurm import _slurm_missing
    why = _slurm_missing()
    if why:
        pytest.skip(why)
    done = _birth(lab, "sweep", *TASK, "data_args.keys=4,6", *WINDOWED, "max_iters=20", "eval_delta=5",
                  "--backend", "slurm", "--out", "slurm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-800:]
    df = birth.load_sweep(tmp_path / "slurm")
    assert sorted(df["data_args.keys"].unique()) == [4, 6]
    assert (df[df["iter"] == 10]["layer1_from_uniform"] < 1e-6).all()
