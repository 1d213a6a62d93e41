"""Runs trained as one stack (``birth.launching.stacked``) learn what they learn alone: the stacked
pass gives each run its own loss and gradient; after 50 steps a stacked run's metrics equal the
same run's alone to float noise, freeze schedules, learning rates and optimizers included; a
stack resumes exactly; a run that diverges leaves the others going."""
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from birth.model import simplified_pass as targets
from birth.launching import stacked
from birth.training.config import build_config, to_dict
from birth.launching.jobs import Job, run_jobs
from birth.launching.local import LocalBackend, stack_units
from birth.training.runs import RunDir
from birth.launching.stacked import stack_key, train_stacked
from birth.training.loop import train

SMALL = {"max_iters": 50, "eval_delta": 10, "data_args.seq_length": 32, "model_args.max_length": 32,
         "model_args.dim": 32, "optim_args.batch_size": 16, "eval_batch_size": 32, "device": "cpu",
         "optim_args.learning_rate": 0.2}
# seeds, freeze schedules, learning rates and optimizers differ within one stack
PER_RUN = [{"seed": 42, "init_seed": 0},
           {"seed": 43, "init_seed": 1, "freeze_until": "20:W_O2"},
           {"seed": 44, "init_seed": 2, "freeze_until": "25:W_K1,W_K2", "optim_args.learning_rate": 0.1},
           {"seed": 45, "init_seed": 3, "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01}]


def _configs(per_run=PER_RUN, **common):
    return [build_config("paper-readme", {**SMALL, **common, **p}) for p in per_run]


def _lines(run_dir) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "elapsed"} for row in RunDir(run_dir).read_metrics()]


def _tolerance(key: str) -> float:
    """An accuracy counts argmaxes: float noise may flip a near-tie, one position of the hundred
    first occurrences an attention probe counts (the full model's 4 heads tie often early on)."""
    return 0.03 if "acc" in key else 1e-4


def _assert_close_lines(ours: list[dict], alone: list[dict]) -> None:
    assert [r["iter"] for r in ours] == [r["iter"] for r in alone]
    for a, b in zip(ours, alone):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=1e-3, abs=_tolerance(key)), (a["iter"], key)
            else:
                assert value == b[key], (a["iter"], key)


def test_each_run_of_a_stack_gets_its_own_loss_and_gradient():
    cfgs = _configs(PER_RUN[:3])
    from birth.training.build import build_setup
    setups = [build_setup(c) for c in cfgs]
    for s in setups:  # non-zero memories, so that every weight matters
        with torch.no_grad():
            for p in s.model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    batches = [s.train_batch(0) for s in setups]
    assert len({int((b.outs >= 2).sum()) for b in batches}) > 1  # the padding to the longest run is exercised
    stack = stacked._Stack([s.model for s in setups], cfgs[0])
    stack.prepare()
    stacked_batch = [torch.stack([b.x for b in batches]), torch.stack([b.y for b in batches]),
                     torch.stack([b.masks["in_context"] for b in batches])]
    losses = targets.stacked_losses(stack.weights(), *stacked_batch)
    losses.sum().backward()
    for r, (s, b) in enumerate(zip(setups, batches)):
        trained = [p for p in s.model.parameters() if p.requires_grad]
        alone = F.cross_entropy(s.model(b.x, targets=b.masks["in_context"]), b.y[b.masks["in_context"]])
        assert float(losses[r].detach()) == pytest.approx(float(alone.detach()), rel=1e-5)
        grads = torch.autograd.grad(alone, trained)
        stack.hand_out(r)
        for p, g in zip(trained, grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5 * float(g.abs().max()))


@pytest.mark.slow  # trains, or starts a subprocess
def test_a_stacked_run_learns_what_it_learns_alone(tmp_path):
    cfgs = _configs()
    assert len({stack_key(c) for c in cfgs}) == 1
    summaries = train_stacked(cfgs, [tmp_path / f"stack{i}" for i in range(len(cfgs))], [False] * len(cfgs))
    assert [s["status"] for s in summaries] == ["completed"] * len(cfgs)
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{i}", quiet=True)
        ours, alone = _lines(tmp_path / f"stack{i}"), _lines(tmp_path / f"alone{i}")
        # each run learned something (on the fixed evaluation batch: 50 steps at this size are early days)
        assert min(r["eval_loss"] for r in ours[1:]) < ours[0]["eval_loss"] - 0.05
        _assert_close_lines(ours, alone)
        weights = [torch.load(RunDir(tmp_path / f"{w}{i}").latest_checkpoint(), weights_only=True)["model"]
                   for w in ("stack", "alone")]
        for name, value in weights[0].items():
            torch.testing.assert_close(value, weights[1][name], rtol=1e-3, atol=1e-4)
    # the frozen parameters did not move while frozen: W_O2 of run 1 is equal at steps 0 and 20
    frozen = [r for r in _lines(tmp_path / "stack1") if r["iter"] in (0, 10)]
    assert frozen[0]["wo1_acc"] == frozen[1]["wo1_acc"]


@pytest.mark.slow  # trains, or starts a subprocess
def test_a_stack_resumes_exactly(tmp_path, monkeypatch):
    cfgs = _configs(PER_RUN[:3])
    whole = [tmp_path / f"whole{i}" for i in range(3)]
    train_stacked(cfgs, whole, [False] * 3)
    step_of = stacked._stacked_step

    def interrupt_at_23(runs, stack, step):
        if step == 23:
            os.kill(os.getpid(), signal.SIGINT)  # seen before step 24, as a Ctrl-C would be
        return step_of(runs, stack, step)

    monkeypatch.setattr(stacked, "_stacked_step", interrupt_at_23)
    cut = [tmp_path / f"cut{i}" for i in range(3)]
    assert [s["status"] for s in train_stacked(cfgs, cut, [False] * 3)] == ["interrupted"] * 3
    monkeypatch.setattr(stacked, "_stacked_step", step_of)
    assert [s["status"] for s in train_stacked(cfgs, cut, [True] * 3)] == ["completed"] * 3
    for a, b in zip(whole, cut):
        assert _lines(a) == _lines(b)
        wa, wb = (torch.load(RunDir(d).latest_checkpoint(), weights_only=True)["model"] for d in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # trains, or starts a subprocess
def test_a_diverging_run_ends_alone_and_the_others_go_on(tmp_path):
    per_run = PER_RUN[:2] + [{"seed": 46, "init_seed": 4, "optim_args.learning_rate": 1e12}]
    cfgs = _configs(per_run)
    dirs = [tmp_path / f"stack{i}" for i in range(3)]
    summaries = train_stacked(cfgs, dirs, [False] * 3)
    assert [s["status"] for s in summaries] == ["completed", "completed", "diverged"]
    train(cfgs[0], tmp_path / "alone0", quiet=True)
    _assert_close_lines(_lines(dirs[0]), _lines(tmp_path / "alone0"))


def test_only_runs_of_equal_shapes_share_a_stack():
    base = _configs(PER_RUN[:1])[0]
    assert stack_key(base) == stack_key(build_config("paper-readme", {**SMALL, "seed": 7, "freeze_until": "5:W_K1",
                                                                      "optim_args.learning_rate": 0.5}))
    for other in ({"model_args.dim": 64}, {"optim_args.batch_size": 8}, {"max_iters": 60}, {"eval_delta": 5}):
        assert stack_key(build_config("paper-readme", {**SMALL, **other})) != stack_key(base)
    full_loss = stack_key(build_config("paper-readme", {**SMALL, "loss_head_only": False}))
    assert full_loss.key is not None and full_loss != stack_key(base)  # every run stacks, with runs of its loss
    assert stack_key(build_config("full", {"device": "cpu"})).key is not None


def test_stack_units_keep_every_worker_busy(tmp_path):
    jobs = [Job(to_dict(c), str(tmp_path / str(i))) for i, c in enumerate(_configs(PER_RUN * 3))]  # 12 of one key
    jobs.append(Job(to_dict(build_config("full", {"device": "cpu"})), str(tmp_path / "full")))
    units = stack_units(jobs, size=4, workers=2)
    assert sorted(len(u) for u in units) == [1, 4, 4, 4]
    assert stack_units(jobs, size=8, workers=2) and sorted(len(u) for u in stack_units(jobs, 8, 2)) == [1, 6, 6]
    assert all(len(u) == 1 for u in stack_units(jobs, size=1, workers=2))


@pytest.mark.slow  # trains, or starts a subprocess
def test_the_local_backend_trains_stacks_into_their_own_directories(tmp_path):
    jobs = [Job(to_dict(c), str(tmp_path / f"run{i}"), label=f"run {i}") for i, c in enumerate(_configs())]
    results = run_jobs(jobs, LocalBackend(jobs=1, in_process=True, stack=4))
    assert sorted(r.status for r in results) == ["completed"] * 4
    for job in jobs:
        summary = RunDir(job.run_dir).read_summary()
        assert summary["status"] == "completed" and summary["config"] == job.config
    again = run_jobs(jobs, LocalBackend(jobs=1, in_process=True, stack=4))
    assert [r.status for r in again] == ["cached"] * 4


@pytest.mark.slow  # trains, or starts a subprocess
def test_birth_reproduce_with_stacks_trains_what_it_trains_without(tmp_path):
    import subprocess
    import sys
    outs = {}
    for stack in ("1", "4"):
        out = tmp_path / f"stack{stack}"
        cmd = [sys.executable, "-m", "birth", "reproduce", "fig3", "--scale", "tiny", "--seeds", "1", "--held-out", "0",
               "--jobs", "2", "--stack", stack, "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-500:]
        assert "6 runs trained, 0 reused, 0 failed" in done.stderr
        outs[stack] = out
    runs = sorted(p.name for p in (outs["1"] / "runs").iterdir())
    assert runs == sorted(p.name for p in (outs["4"] / "runs").iterdir()) and len(runs) == 6
    for name in runs:
        _assert_close_lines(_lines(outs["4"] / "runs" / name), _lines(outs["1"] / "runs" / name))


@pytest.mark.parametrize("preset, per_run", [
    ("markov-quick", [{}, {"data_args.doubly_stochastic": True}]),
    ("repeat-quick", [{}, {"data_args.random_period": False}]),
    # SGD: AdamW's normalised steps amplify float noise in the full model's near-zero gradients
    ("full", [{"data_args.k": 3, "optim_args.use_sgd": True, "optim_args.learning_rate": 0.05},
              {"data_args.k": 3, "data_args.fixed_special_toks": True, "optim_args.use_sgd": True,
               "optim_args.learning_rate": 0.05}]),
], ids=["markov", "repeat", "full-architecture"])
@pytest.mark.slow  # trains, or starts a subprocess
def test_every_task_and_architecture_stacks_and_learns_what_it_learns_alone(preset, per_run, tmp_path):
    small = {"max_iters": 30, "eval_delta": 10, "optim_args.batch_size": 16, "eval_batch_size": 32, "device": "cpu",
             **({"data_args.seq_length": 32, "model_args.max_length": 32, "model_args.dim": 32} if preset == "full"
                else {})}
    cfgs = [build_config(preset, {**small, **over, "seed": 42 + i, "init_seed": i}) for i, over in enumerate(per_run)]
    assert len({stack_key(c) for c in cfgs}) == 1 and stack_key(cfgs[0]).key is not None
    jobs = [Job(to_dict(c), str(tmp_path / f"stack{i}")) for i, c in enumerate(cfgs)]
    assert [len(u) for u in stack_units(jobs, size=4, workers=1)] == [2]       # one stack of both
    summaries = train_stacked(cfgs, [j.run_dir for j in jobs], [False] * 2)
    assert [s["status"] for s in summaries] == ["completed"] * 2
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{i}", quiet=True)
        _assert_close_lines(_lines(tmp_path / f"stack{i}"), _lines(tmp_path / f"alone{i}"))
    first, last = _lines(tmp_path / "stack0")[0], _lines(tmp_path / "stack0")[-1]
    assert last["eval_loss"] < first["eval_loss"]  # it learned something on the way


def test_a_run_that_cannot_stack_says_why_once(tmp_path):
    lines = []
    jobs = [Job({"data_args": {"task": "nosuch"}}, str(tmp_path / f"bad{i}")) for i in range(2)]
    units = stack_units(jobs, size=4, workers=1, log=lines.append)
    assert units == [[jobs[0]], [jobs[1]]]
    assert len(lines) == 1 and lines[0].startswith("birth: 2 run(s) train alone, not in a stack: its config does not")
