"""`birth sweep`, `birth.load_sweep`, `birth.events` and `birth plot DIR --by KEY`: parsing, one-line
errors before any work, grid and zip expansion, dry runs, and a real tiny sweep trained by two
workers, rerun, loaded as one table and drawn."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import birth
from birth.training.config import seed_overrides
from birth.cli import main
from birth.training.config import ConfigError
from birth.launching.local import LocalBackend
from birth.training.runs import RunDir
from birth.launching.plan import Sweep, plan
from birth.launching.sweep import from_command_line, parse_items, run_sweep
from conftest import TINY, deterministic_lines

GRID = ["data_args.k=1,3"]
SPEC = """\
base:
  preset: quick
  {base}
grid:
  data_args.k: [1, 3]
seeds: {{count: 2, first: 0}}
"""


def tiny_base() -> dict:
    """TINY's keys as a spec file's base mapping (its preset aside)."""
    return dict(item.split("=", 1) for item in TINY[2:])


def write_spec(path: Path) -> Path:
    base = "\n  ".join(f"{k}: {v}" for k, v in tiny_base().items())
    path.write_text(SPEC.format(base=base))
    return path


# ---------------------------------------------------------------------------------------------
# Parsing and expansion

def test_commas_split_values_but_not_free_text_keys_and_a_repeated_key_replaces():
    values = parse_items(["model.dim=32,64", "optim_args.lr=1e-2,0.03", "model_args.arch=simplified,full",
                          "freeze_until=300:W_K1,W_K2", "max_iters=60", "max_iters=20,40"])
    assert values == {"model_args.dim": [32, 64], "optim_args.learning_rate": [0.01, 0.03],
                      "model_args.arch": ["simplified", "full"], "freeze_until": ["300:W_K1,W_K2"],
                      "max_iters": [20, 40]}
    sweep = from_command_line(["model.dim=32,64", "max_iters=60"])
    assert sweep.grid == {"model_args.dim": [32, 64]} and sweep.base == {"max_iters": 60}


def test_the_grid_is_the_product_and_zip_pairs_by_position():
    sweep = Sweep(grid={"a": [1, 2], "b": ["x", "y", "z"]}, zips=({"c": [10, 20], "d": [0.1, 0.2]},))
    points = sweep.points()
    assert len(points) == 2 * 3 * 2 and sweep.swept == ["a", "b", "c", "d"]
    assert points[0] == {"a": 1, "b": "x", "c": 10, "d": 0.1} and points[1] == {"a": 1, "b": "x", "c": 20, "d": 0.2}
    assert {(p["c"], p["d"]) for p in points} == {(10, 0.1), (20, 0.2)}  # never 10 with 0.2
    assert Sweep().points() == [{}]  # no axis: the base config alone, over the seeds


def test_seed_i_is_seed_overrides_i_from_the_first_seed(tmp_path):
    planned = plan(from_command_line(["data_args.k=1,3", *TINY[2:]], "quick", seeds=2, first_seed=5), tmp_path)
    assert [(p.values["data_args.k"], p.seed) for p in planned] == [(1, 5), (1, 6), (3, 5), (3, 6)]
    for p in planned:
        assert {k: p.job.config[k] for k in seed_overrides(0)} == seed_overrides(p.seed)
        assert p.job.label == f"data_args.k={p.values['data_args.k']} seed {p.seed}"
    assert len({p.job.run_dir for p in planned}) == 4


def test_a_spec_file_gives_the_same_runs_as_the_inline_grid(tmp_path):
    inline = plan(from_command_line([*GRID, *TINY[2:]], "quick", seeds=2), tmp_path)
    spec = plan(from_command_line([str(write_spec(tmp_path / "spec.yaml"))]), tmp_path)
    assert [p.job.run_dir for p in spec] == [p.job.run_dir for p in inline]
    assert [p.values for p in spec] == [p.values for p in inline]


def test_a_spec_file_reads_numbers_as_the_command_line_and_sweeps_free_text_keys(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text('base: {preset: quick}\ngrid: {optim_args.lr: [1e-2, 3e-2], freeze_until: ["300:W_K1,W_K2", ""]}\n')
    planned = plan(from_command_line([str(spec)]), tmp_path)
    assert [p.job.label for p in planned[:2]] == ["optim_args.learning_rate=0.01 freeze_until=300:W_K1,W_K2 seed 0",
                                                  "optim_args.learning_rate=0.01 freeze_until= seed 0"]
    inline = plan(from_command_line(["optim_args.lr=0.01,0.03"], "quick"), tmp_path)  # YAML 1.1's '1e-2' is 0.01
    assert {p.job.run_dir for p in inline} == {p.job.run_dir for p in planned if p.values["freeze_until"] == ""}


@pytest.mark.parametrize("argv, starts", [
    (["data_args.kk=1,3"], "data_args.kk: unknown key; did you mean data_args.k?"),
    (["data_args.k=1,x"], "data_args.k: expected an integer, got 'x' (run data_args.k=x seed 0)"),
    (["data_args.k=1,,3"], "data_args.k: an empty value in '1,,3'"),
    (["data_args.k=3,3"], "data_args.k: the value 3 is given twice"),
    (["save_dir=x"], "save_dir: not in a sweep"),
    (["model_args.dim=32,33", "model_args.arch=full", "model_args.n_heads=2", "data_args.k=3"],
     "model_args.dim: 33 is not divisible by model_args.n_heads=2 (run model_args.dim=33 seed 0)"),
    (["k"], "'k': expected KEY=VALUE"),
    (["--seeds", "0"], "--seeds: must be >= 1"),
    (["--first-seed", "-1"], "--first-seed: must be >= 0"),
    (["--jobs", "0"], "--jobs: must be >= 1"),
    (["--gpus", "1"], "--gpus: only with --backend slurm"),
    (["--stack", "2", "--backend", "slurm"], "--stack: stacks train on the local backend"),
])
def test_bad_input_is_one_line_naming_it_before_any_work(capsys, tmp_path, argv, starts):
    assert main(["sweep", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"birth: error: {starts}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, starts", [
    ("grid: {}\n", "grid: empty; give each key a list of values"),
    ("grid: {data_args.k: []}\n", "grid: data_args.k: an empty list of values"),
    ("grid: {data_args.k: 3}\n", "grid: data_args.k: expected a list of values, got 3"),
    ("grid: {data_args.kk: [1]}\n", "grid: data_args.kk: unknown key"),
    ("zip: {max_iters: [10, 20], eval_delta: [5]}\n",
     "zip: lists of unequal lengths (max_iters has 2, eval_delta has 1)"),
    ("gird: {data_args.k: [1]}\n", "unknown section 'gird'"),
    ("seeds: {count: 2, frist: 1}\n", "seeds: unknown key 'frist'"),
    ("grid: [\n", "not valid YAML"),
])
def test_a_bad_spec_file_is_one_line_naming_the_file_and_section(capsys, tmp_path, text, starts):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"birth: error: {spec}: {starts}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_an_inline_key_over_a_spec_sets_it_but_may_not_resweep_it(tmp_path):
    spec = str(write_spec(tmp_path / "spec.yaml"))
    assert from_command_line([spec, "max_iters=20"]).base["max_iters"] == 20
    assert from_command_line([spec, "model_args.dim=16,32"]).grid == {"data_args.k": [1, 3],
                                                                      "model_args.dim": [16, 32]}
    with pytest.raises(ConfigError, match="data_args.k: swept in .* already"):
        from_command_line([spec, "data_args.k=5"])


def test_dry_run_lists_every_run_and_show_config_prints_them_resolved(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["sweep", *GRID, *TINY, "--seeds", "2", "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("birth: sweep: 4 runs (0 already complete, 4 to train)")
    assert [line.split()[0] for line in lines[1:]] == ["todo"] * 4
    assert lines[1].endswith("data_args.k=1 seed 0") and lines[4].endswith("data_args.k=3 seed 1")
    assert not out.exists()  # nothing written, not even the index
    assert main(["sweep", *GRID, *TINY, "--seeds", "2", "--out", str(out), "--show-config"]) == 0
    import yaml
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [(d["data_args"]["k"], d["init_seed"], d["model_args"]["dim"]) for d in docs] == \
        [(1, 0, 32), (1, 1, 32), (3, 0, 32), (3, 1, 32)]
    assert not out.exists()


def test_events_give_the_first_iteration_at_the_threshold_or_nan():
    df = pd.DataFrame({"data_args.k": [1, 1, 1, 3, 3, 3], "seed": 0, "run": ["a"] * 3 + ["b"] * 3,
                       "label": "", "path": ["A"] * 3 + ["B"] * 3, "iter": [0, 10, 20] * 2,
                       "acc": [0.1, 0.9, 0.95, 0.1, 0.5, 0.7], "loss": [4.0, 1.0, 0.5, 4.0, 3.0, 2.0]})
    ev = birth.events(df, "acc", 0.9)
    assert ev["data_args.k"].tolist() == [1, 3] and ev["iter"].iloc[0] == 10 and math.isnan(ev["iter"].iloc[1])
    assert birth.events(df, "loss", 2.0, below=True)["iter"].tolist() == [10, 20]
    with pytest.raises(ConfigError, match="events: no metric 'accc'"):
        birth.events(df, "accc", 0.9)


# ---------------------------------------------------------------------------------------------
# A real tiny sweep: trained by two workers, rerun, loaded, drawn

@pytest.fixture(scope="module")
def trained(cli, tmp_path_factory):
    """The 4 runs of data_args.k=1,3 x 2 seeds at TINY, trained by `birth sweep` with 2 workers."""
    out = tmp_path_factory.mktemp("sweep") / "S"
    proc = cli.run("sweep", *GRID, *TINY, "--seeds", "2", "--jobs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "with 2 worker(s)" in proc.stderr and "4 runs trained, 0 reused, 0 failed" in proc.stderr
    return out


@pytest.mark.slow
def test_a_sweep_trains_every_run_and_indexes_it(trained):
    index = json.loads((trained / "sweep.json").read_text())
    assert index["swept"] == ["data_args.k"] and index["seeds"] == {"count": 2, "first": 0}
    assert index["command"].startswith("birth sweep data_args.k=1,3 ")
    assert "--seeds 2 --first-seed 0" in index["command"]
    assert [(r["values"], r["seed"], r["status"]) for r in index["runs"]] == [
        ({"data_args.k": k}, s, "completed") for k in (1, 3) for s in (0, 1)]
    for r in index["runs"]:
        run = RunDir(trained / r["run_dir"])
        cfg, rows = run.read_config(), run.read_metrics()
        assert (cfg.data_args.k, cfg.init_seed, cfg.seed) == (r["values"]["data_args.k"], r["seed"], 42 + r["seed"])
        # 60 tiny steps: W_O2 already recalls more outputs than at its start (chance 1/65) in every run
        assert len(rows) == 16 and rows[-1]["wo1_acc"] >= rows[0]["wo1_acc"] + 0.03
    first, last = (sum(RunDir(trained / r["run_dir"]).read_metrics()[i]["eval_loss_head"] for r in index["runs"])
                   for i in (0, -1))
    assert last < first - 0.5  # and the in-context loss fell, over the sweep


@pytest.mark.slow
def test_a_rerun_and_the_same_sweep_from_a_spec_file_train_nothing(cli, trained, tmp_path):
    before = {p: deterministic_lines(p) for p in trained.glob("runs/*/metrics.jsonl")}
    proc = cli.run("sweep", *GRID, *TINY, "--seeds", "2", "--jobs", "2", "--out", str(trained))
    assert proc.returncode == 0 and "0 runs trained, 4 reused" in proc.stderr, proc.stderr
    proc = cli.run("sweep", str(write_spec(tmp_path / "spec.yaml")), "--out", str(trained))
    assert proc.returncode == 0 and "0 runs trained, 4 reused" in proc.stderr, proc.stderr
    assert {p: deterministic_lines(p) for p in trained.glob("runs/*/metrics.jsonl")} == before


@pytest.mark.slow
def test_load_sweep_is_one_row_per_run_and_evaluation(trained):
    df = birth.load_sweep(trained)
    assert list(df.columns[:6]) == ["data_args.k", "seed", "run", "label", "path", "iter"]
    assert len(df) == 4 * 16 and df.groupby(["data_args.k", "seed"]).size().tolist() == [16] * 4
    assert {"eval_acc_end", "eval_loss_head", "wo1_acc", "elapsed"} <= set(df.columns)
    run = df[(df["data_args.k"] == 3) & (df["seed"] == 1)]
    rows = RunDir(run["path"].iloc[0]).read_metrics()
    assert run["eval_loss_head"].tolist() == [r["eval_loss_head"] for r in rows]
    one = birth.load_sweep(run["path"].iloc[0])  # a single run: seed index read back from its seeds
    assert one["seed"].unique().tolist() == [1] and one["iter"].tolist() == run["iter"].tolist()
    ev = birth.events(df, "eval_loss_head", 4.0, below=True)
    assert len(ev) == 4 and list(ev.columns[:2]) == ["data_args.k", "seed"]
    for _, e in ev.iterrows():
        hits = [r["iter"] for r in RunDir(e["path"]).read_metrics() if r["eval_loss_head"] <= 4.0]
        assert (e["iter"] == hits[0]) if hits else math.isnan(e["iter"])


@pytest.mark.slow
def test_plot_by_a_key_writes_its_figure(cli, trained):
    proc = cli.run("plot", str(trained), "--by", "data_args.k", "--metric", "eval_acc_end", "--metric", "wo1_acc")
    assert proc.returncode == 0, proc.stderr
    figure = Path(proc.stdout.strip())
    assert figure == trained / "figures" / "sweep_data_args.k.png"
    import matplotlib.image
    height, width, _ = matplotlib.image.imread(figure).shape
    assert width > 1.5 * height  # two panels side by side, one row: no other swept key
    from birth.analysis.sweep_plots import reference_lines
    task = RunDir(next(trained.glob("runs/*"))).read_task()
    lines = {label: (v, style) for v, label, style in reference_lines(task, "eval_loss_head", ["eval_loss_head"])}
    assert lines["floor_loss_head"] == (task["floors"]["floor_loss_head"], "--")
    assert lines["strategy: counts"][1] == ":" and "strategy: bigram" not in lines  # an infinite loss is not drawn
    assert [lab for _, lab, _ in reference_lines(task, "eval_acc_end", ["eval_acc_end"])] == ["chance"]


@pytest.mark.slow
def test_the_report_of_a_sweep_shows_its_figure_and_runs(trained):
    from birth.analysis.report.collect import collect
    payload = collect(trained)
    assert payload["kind"] == "reproduction" and payload["command"].startswith("birth sweep ")
    assert [f["name"] for f in payload["figures"]] == ["sweep_data_args.k"]
    assert payload["runs_total"] == 4 and payload["runs"][0]["name"].startswith("data_args.k=1 seed 0 (")


@pytest.mark.slow
def test_load_sweep_reads_a_reproduction(tmp_path):
    from conftest import reproduce_tiny
    assert reproduce_tiny("layers", tmp_path).exit_code == 0
    df = birth.load_sweep(tmp_path)
    assert df.attrs["swept"] == ["model_args.n_layers"]
    runs = df.drop_duplicates("run")
    assert sorted(zip(runs["group"], runs["model_args.n_layers"], runs["recipe"], runs["seed"], strict=True)) == \
        [("1 layer", 1, "layers", 0), ("2 layers", 2, "layers", 0)]


@pytest.mark.slow
def test_run_sweep_in_process_equals_its_plan(tmp_path):
    """The API without the command line: one run, in this process; its index is the plan."""
    sweep = from_command_line([*TINY[2:], "max_iters=8", "checkpoint_every=0", "checkpoint_steps="], "quick")
    report = run_sweep(sweep, tmp_path, LocalBackend(jobs=1, in_process=True), log=lambda s: None)
    index = json.loads((tmp_path / "sweep.json").read_text())
    assert report.exit_code == 0 and report.trained == 1
    assert [r["run_dir"] for r in index["runs"]] == [str(Path(p.job.run_dir).relative_to(tmp_path))
                                                    for p in plan(sweep, tmp_path)]
    assert len(birth.load_sweep(tmp_path)) == 3  # iterations 0, 4, 7


@pytest.mark.slow
def test_a_stopped_sweep_says_how_to_continue_and_its_index_says_interrupted(cli, tmp_path):
    import signal
    import time
    out = tmp_path / "S"
    proc = cli.start("sweep", *GRID, *TINY, "max_iters=5000", "eval_delta=50", "--jobs", "2", "--out", str(out))
    t0 = time.monotonic()
    while len(list(out.glob("runs/*/metrics.jsonl"))) < 2 and proc.poll() is None:  # both runs training
        assert time.monotonic() - t0 < 120, "the runs never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    index = json.loads((out / "sweep.json").read_text())
    assert f"continue with: {index['command']}" in err and "--out " + str(out) in index["command"]
    assert [r["status"] for r in index["runs"]] == ["interrupted"] * 2


# ---------------------------------------------------------------------------------------------
# Slurm

@pytest.mark.slow
@pytest.mark.slurm
def test_the_same_sweep_through_slurm_gives_the_same_table(cli, trained, tmp_path):
    from test_slurm import _slurm_missing
    if why := _slurm_missing():
        pytest.skip(why)
    proc = cli.run("sweep", *GRID, *TINY, "--seeds", "2", "--backend", "slurm", "--out", str(tmp_path), timeout=600)
    assert proc.returncode == 0 and "4 runs trained" in proc.stderr, proc.stderr
    assert len(list((tmp_path / "slurm" / "logs").glob("*_submission.sh"))) == 4
    local, slurm = birth.load_sweep(trained), birth.load_sweep(tmp_path)
    drop = ["path", "elapsed"]  # where the runs live, and the wall seconds: the rest is the computation
    pd.testing.assert_frame_equal(local.drop(columns=drop), slurm.drop(columns=drop))

