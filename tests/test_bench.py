"""`birth bench`: the induction timer watches a real `birth train` and stops it at the first line over
the threshold; the step and stack benchmarks time computations that agree."""
import pytest

from birth.bench import INDUCTION, OFFICIAL_EVALUATION, time_to_induction

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def test_induction_timer_stops_at_the_first_line_over_the_threshold():
    r = time_to_induction(threshold=0.0, timeout=300, threads=1)  # every line qualifies: the first one wins
    assert r["iter"] == 0 and r["acc_end_test"] >= 0.0 and 0 < r["seconds"] < 300
    assert r["command"] == "birth train " + " ".join(INDUCTION)


def test_induction_timer_can_run_the_official_evaluation_work_only():
    r = time_to_induction(threshold=0.0, timeout=300, threads=1, extra=OFFICIAL_EVALUATION)
    assert r["iter"] == 0 and r["command"].endswith("eval_fixed_batch=false")


def test_induction_timer_reports_a_run_that_cannot_reach_it():
    with pytest.raises(RuntimeError, match="did not reach 2.0 within"):
        time_to_induction(threshold=2.0, timeout=8, threads=1)   # accuracy never exceeds 1


def test_step_bench_times_every_path_on_the_same_function():
    import torch
    from birth.bench import step_times
    r = step_times(batch=8, seq_len=32, dim=32, repeats=2, device=torch.device("cpu"))
    assert r["loss_gap"] < 1e-5  # the rearranged step, the full pass and the official one: one function
    assert r["attention"] == "explicit" and all(r[k] > 0 for k in ("ours_s", "full_s", "official_s"))
    assert r["speedup"] == pytest.approx(r["official_s"] / r["ours_s"])


def test_stack_bench_trains_both_ways_to_the_same_metrics():
    import torch
    from birth.bench import stack_times
    r = stack_times(runs=3, steps=21, batch=8, seq_len=32, dim=32, repeats=1, device=torch.device("cpu"))
    assert r["metric_gap"] < 1e-3 and r["alone_s"] > 0 and r["stacked_s"] > 0


def test_one_by_one_trains_the_runs_reproduce_plans(tmp_path):
    """benchmarks/one_by_one.py compares like with like: each `birth train` command resolves to the
    config of one distinct planned run (same hash, so the same run), and every run has one."""
    import importlib.util
    from pathlib import Path

    from birth.analysis.experiments.recipe import Output
    from birth.analysis.experiments.reproduce import plan, resolve_names
    from birth.running.launch import config_hash
    from birth.running.validation import resolve_config
    path = Path(__file__).parents[1] / "benchmarks" / "one_by_one.py"
    spec = importlib.util.spec_from_file_location("one_by_one", path)
    one_by_one = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(one_by_one)
    commands = one_by_one.train_commands("all", "tiny", 1, tmp_path)
    planned = {Path(job.run_dir).name for pairs in plan(resolve_names("all"), "tiny", 1, Output(tmp_path)).values()
               for _, job in pairs}
    trained = [config_hash(resolve_config(None, cmd[cmd.index("train") + 1:cmd.index("--quiet")])) for cmd in commands]
    assert sorted(trained) == sorted(planned) and len(trained) == len(planned)
