"""`birth bench`: the induction timer watches a real `birth train` and stops it at the first line over
the threshold; the official script is timed the same way, from its log, only when given a checkout,
and nothing official is printed otherwise; the step and stack benchmarks time computations that agree."""
import os
import re
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from birth import bench
from birth.bench import INDUCTION, OFFICIAL_EVALUATION, time_to_induction
from birth.training.config import ConfigError, build_config, flat_dict

slow = pytest.mark.slow  # trains, or starts a subprocess

# the official script's log format (its logging.info), as three evaluation steps and what surrounds them
OFFICIAL_LOG = """\
INFO:root:0 (0.23, 3.75, 3.75): loss: 4.3238 (4.5438, 4.3238), acc: 0.0220 (0.0222 / 0.0169) \
probes: 0.1562 / 0.2359 / 0.0807 / 0.0171 (0.2382)
INFO:root:memory probes wk0: 0.0157 (0.0159), wk1: 0.2000, wo1: 0.0000, ff1: -1.0000
INFO:root:5 (0.04, 0.31, 5.95): loss: 4.4544 (4.5546, 4.4544), acc: 0.0241 (0.0260 / 0.0326) \
probes: 0.1544 / 0.2195 / 0.0710 / 0.0178 (0.1744)
some warning a library printed
INFO:root:220 (0.00, 0.30, 80.12): loss: 0.9001 (4.5133, 0.9001), acc: 0.9093 (0.9184 / 0.9215) \
probes: 0.2000 / 0.3156 / 0.0621 / 0.1287 (0.3168)
INFO:root:225 (0.00, 0.30, 81.60): loss: 0.8001 (4.5133, 0.8001), \
acc: 0.9193 (0.9284 / 0.9"""  # cut short: still being written


def bench_args(**kw) -> SimpleNamespace:
    return SimpleNamespace(**{"what": "induction", "device": "cpu", "threads": None, "official": None,
                              "official_workers": None, "timeout": 600.0, **kw})


def fake_timings(monkeypatch) -> list:
    """birth's and the official timers replaced by stand-ins that record their calls."""
    calls = []
    def ours(timeout=600.0, threads=None, extra=()):
        calls.append(("birth", extra))
        return {"seconds": 30.0 if extra else 40.0, "cpu_seconds": 20.0 if extra else 40.0, "iter": 220,
                "acc_end_test": 0.92, "command": "birth train"}
    def theirs(root, timeout=600.0, threads=None, workers=None):
        calls.append(("official", root))
        return {"seconds": 90.0, "cpu_seconds": 120.0, "iter": 225, "acc_end_test": 0.91, "workers": workers or 1,
                "cuda": False,
                "command": f"cd {root} && python ihead_basic_main.py"}
    monkeypatch.setattr(bench, "time_to_induction", ours)
    monkeypatch.setattr(bench, "official_time_to_induction", theirs)
    return calls


def fake_checkout(root: Path, script: str = "") -> Path:
    """A directory with the files ``check_official`` looks for; ``script`` as its ihead_basic_main.py."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "meta.pkl").write_bytes(b"")
    (root / "ihead_data.py").write_text("")
    (root / "ihead_basic_main.py").write_text(script)
    return root


def test_without_official_nothing_official_is_printed(monkeypatch, capsys):
    calls = fake_timings(monkeypatch)
    assert bench.main(bench_args()) == 0
    out = capsys.readouterr().out
    assert [c[0] for c in calls] == ["birth", "birth"]  # the official script never ran
    assert "ihead_basic_main" not in out and "official / birth" not in out and "90.0" not in out
    assert out.count(" s wall") == 2 and "--official PATH" in out
    seconds = [line for line in out.splitlines() if re.search(r"\d(-\d+)? s\b", line)]
    assert len(seconds) == 2 and all(line.lstrip().startswith("birth, ") for line in seconds)  # no typed-in figure


def test_with_official_both_are_printed_side_by_side_with_the_ratio(monkeypatch, capsys, tmp_path):
    calls = fake_timings(monkeypatch)
    monkeypatch.setattr(bench, "check_official", lambda path: Path(path))
    assert bench.main(bench_args(official=str(tmp_path), official_workers=3)) == 0
    out = capsys.readouterr().out
    assert [c[0] for c in calls] == ["birth", "birth", "official"]
    assert "3 data worker(s)" in out and "90.0 s wall" in out
    assert "official / birth, wall time: 2.25x as configured, 3.00x at equal evaluation work" in out  # 90/40, 90/30
    assert "official / birth, CPU time: 3.00x as configured, 6.00x at equal evaluation work" in out  # 120/40, 120/20
    assert f"official command: cd {tmp_path} && python ihead_basic_main.py" in out


def test_an_official_run_that_does_not_get_there_is_one_line(monkeypatch, capsys, tmp_path):
    fake_timings(monkeypatch)
    monkeypatch.setattr(bench, "check_official", lambda path: Path(path))
    def too_slow(root, timeout=600.0, threads=None, workers=None):
        raise RuntimeError(f"acc_end_test did not reach 0.9 within {timeout:.0f} s")
    monkeypatch.setattr(bench, "official_time_to_induction", too_slow)
    assert bench.main(bench_args(official=str(tmp_path), timeout=5.0)) == 1
    err = capsys.readouterr().err
    assert err == "birth bench induction: acc_end_test did not reach 0.9 within 5 s\n"


def test_a_bad_checkout_or_missing_omegaconf_is_one_line_before_any_work(monkeypatch, tmp_path):
    calls = fake_timings(monkeypatch)
    with pytest.raises(ConfigError, match=r"^--official: .*ihead_basic_main.py not found; PATH must be a checkout"):
        bench.main(bench_args(official=str(tmp_path)))
    fake_checkout(tmp_path / "repo")
    real = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None if name == "omegaconf" else real(name))
    with pytest.raises(ConfigError, match=r"needs omegaconf, which is not installed: pip install omegaconf$"):
        bench.main(bench_args(official=str(tmp_path / "repo")))
    with pytest.raises(ConfigError, match=r"^--official: times the official script for `birth bench induction`"):
        bench.main(bench_args(what="sampler", official=str(tmp_path / "repo")))
    assert calls == []


def test_official_log_is_read_line_by_line_and_a_line_cut_short_waits():
    rows = bench.parse_official_log(OFFICIAL_LOG)
    assert rows == [{"iter": 0, "acc_end_test": 0.0169, "loop_seconds": 3.75},
                    {"iter": 5, "acc_end_test": 0.0326, "loop_seconds": 5.95},
                    {"iter": 220, "acc_end_test": 0.9215, "loop_seconds": 80.12}]
    whole = bench.parse_official_log(OFFICIAL_LOG + "234) probes: 0.2000 / 0.3156 / 0.0621 / 0.1287 (0.3168)\n")
    assert whole[-1] == {"iter": 225, "acc_end_test": 0.9234, "loop_seconds": 81.6}  # read once it is whole


def test_the_official_command_has_the_settings_birth_trains():
    args = dict(a.split("=", 1) for a in bench.official_induction_args(workers=2))
    assert args.pop("num_data_workers") == "2"
    ours = flat_dict(build_config(INDUCTION[1], INDUCTION[2:]))
    assert args and all(str(ours[key]) == value for key, value in args.items()), args
    assert (args["optim_args.batch_size"], args["data_args.seq_length"]) == ("64", "128")


def test_official_workers_are_the_default_of_60_as_far_as_the_cores_allow(monkeypatch):
    for cores, workers in ((2, 1), (1, 1), (16, 15), (128, 60)):
        monkeypatch.setattr(bench.os, "cpu_count", lambda: cores)
        assert bench.official_workers() == workers


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except FileNotFoundError:
        return False


@slow
def test_official_timer_stops_at_the_first_line_over_the_threshold_and_kills_its_workers(monkeypatch, tmp_path):
    # a stand-in for the official script (ours): a data worker process, then its log format, then waits
    script = textwrap.dedent("""\
        import logging, multiprocessing as mp, sys, time
        from pathlib import Path
        logging.getLogger().setLevel(logging.INFO)
        worker = mp.Process(target=time.sleep, args=(600,)); worker.start()
        Path("worker.pid").write_text(str(worker.pid))
        for i, acc in enumerate((0.1, 0.5, 0.95, 0.99)):
            logging.info(f"{i * 5} (0.00, 0.10, {i:.2f}): loss: 1.0 (1.0, 1.0), acc: 0.5 (0.5 / {acc:.4f}) probes: 0")
            time.sleep(0.3)
        time.sleep(600)
        """)
    root = fake_checkout(tmp_path / "repo", script)
    real = bench.importlib.util.find_spec  # the stand-in needs no omegaconf
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: object() if name == "omegaconf" else real(name))
    r = bench.official_time_to_induction(root, threshold=0.9, timeout=120, workers=4)
    assert (r["iter"], r["acc_end_test"], r["workers"]) == (10, 0.95, 4) and 0.6 < r["seconds"] < 120
    assert 0 < r["cpu_seconds"] < 60  # torch's import in the wrapper; the sleeping worker adds next to nothing
    assert r["command"].startswith(f"cd {root} && python ihead_basic_main.py ") and "num_data_workers=4" in r["command"]
    pid = int((root / "worker.pid").read_text())
    deadline = time.time() + 10
    while _alive(pid) and time.time() < deadline:  # killed with its group; reaped by init
        time.sleep(0.1)
    assert not _alive(pid)


@slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="CPU seconds are read from Linux's /proc")
def test_cpu_seconds_count_every_process_of_the_session_and_only_those():
    import subprocess
    import sys
    # burns 0.5 s of CPU in a worker process, which it reaps, and 0.5 s itself, then waits
    code = textwrap.dedent("""\
        import os, time
        def burn(seconds):
            t = time.process_time()
            while time.process_time() - t < seconds:
                pass
        if os.fork() == 0:
            burn(0.5)
            os._exit(0)
        burn(0.5)
        os.wait()
        print("done", flush=True)
        time.sleep(60)
        """)
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "done\n"
        assert 0.9 <= bench.session_cpu_seconds(proc.pid) < 10  # its 0.5 s and its reaped worker's 0.5 s
    finally:
        proc.kill()
        proc.wait()
    assert bench.session_cpu_seconds(proc.pid) == 0  # no process of that session is left


@slow
def test_the_real_official_script_is_timed_from_its_log():
    root = os.environ.get("BIRTH_OFFICIAL")
    if not root:
        pytest.skip("set BIRTH_OFFICIAL to a checkout: git clone https://github.com/albietz/transformer-birth")
    pytest.importorskip("omegaconf", reason="the official script needs omegaconf: pip install omegaconf")
    r = bench.official_time_to_induction(root, threshold=0.0, timeout=300, threads=1)  # its first evaluation
    assert r["iter"] == 0 and 0.0 <= r["acc_end_test"] < 0.2  # chance is 1/65 before training
    assert r["seconds"] > r["loop_seconds"]  # start-up included


@slow
def test_induction_timer_stops_at_the_first_line_over_the_threshold():
    r = time_to_induction(threshold=0.0, timeout=300, threads=1)  # every line qualifies: the first one wins
    assert r["iter"] == 0 and r["acc_end_test"] >= 0.0 and 0 < r["seconds"] < 300
    assert r["command"] == "birth train " + " ".join(INDUCTION)


@slow
def test_induction_timer_can_run_the_official_evaluation_work_only():
    r = time_to_induction(threshold=0.0, timeout=300, threads=1, extra=OFFICIAL_EVALUATION)
    assert r["iter"] == 0 and r["command"].endswith("eval_fixed_batch=false")


@slow
def test_induction_timer_reports_a_run_that_cannot_reach_it():
    with pytest.raises(RuntimeError, match="did not reach 2.0 within"):
        time_to_induction(threshold=2.0, timeout=8, threads=1)   # accuracy never exceeds 1


@slow
def test_step_bench_times_every_path_on_the_same_function():
    import torch
    from birth.bench import step_times
    r = step_times(batch=8, seq_len=32, dim=32, repeats=2, device=torch.device("cpu"))
    assert r["loss_gap"] < 1e-5  # the rearranged step, the full pass and the official one: one function
    assert r["attention"] == "explicit" and all(r[k] > 0 for k in ("ours_s", "full_s", "official_s"))
    assert r["speedup"] == pytest.approx(r["official_s"] / r["ours_s"])


@slow
def test_stack_bench_trains_both_ways_to_the_same_metrics():
    import torch
    from birth.bench import stack_times
    r = stack_times(runs=3, steps=21, batch=8, seq_len=32, dim=32, repeats=1, device=torch.device("cpu"))
    assert r["metric_gap"] < 1e-3 and r["alone_s"] > 0 and r["stacked_s"] > 0
    for preset in ("markov-quick", "repeat-quick"):  # every task stacks (its own sizes)
        r = stack_times(runs=2, steps=21, batch=0, seq_len=0, dim=0, repeats=1, device=torch.device("cpu"),
                        preset=preset)
        assert r["metric_gap"] < 1e-3 and r["preset"] == preset and r["accuracy"] == "eval_acc_in_context"


@slow
def test_one_by_one_trains_the_runs_reproduce_plans(tmp_path):
    """benchmarks/one_by_one.py compares like with like: each `birth train` command resolves to the
    config of one distinct planned run (same hash, so the same run), and every run has one."""
    import importlib.util
    from pathlib import Path

    from birth.experiments.recipe import Output
    from birth.experiments.reproduce import plan, resolve
    from birth.training.naming import config_hash
    from birth.training.validation import resolve_config
    path = Path(__file__).parents[1] / "benchmarks" / "one_by_one.py"
    spec = importlib.util.spec_from_file_location("one_by_one", path)
    one_by_one = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(one_by_one)
    commands = one_by_one.train_commands("all", "tiny", 1, tmp_path)
    planned = {Path(job.run_dir).name for pairs in plan(resolve("all"), "tiny", 1, Output(tmp_path)).values()
               for job in (p.job for p in pairs)}
    trained = [config_hash(resolve_config(None, cmd[cmd.index("train") + 1:cmd.index("--quiet")])) for cmd in commands]
    assert sorted(trained) == sorted(planned) and len(trained) == len(planned)
