"""Dropout of the full architecture (``model_args.dropout``): off at 0 (no module, the same run),
on in training steps only (every evaluation, probe and hook sees the model in eval mode or the
values before dropout), a pure function of the config that resumes exactly, never stacked, and
refused, in one line naming the key, where it cannot apply."""
import os
import signal

import pytest
import torch
from torch import nn

from birth.launching.jobs import Job
from birth.launching.local import stack_units
from birth.launching.stacked import stack_key
from birth.model.transformer import Transformer
from birth.training import loop
from birth.training.build import build_setup
from birth.training.config import ConfigError, to_dict
from birth.training.evaluation import (Evaluation, Evaluator, evaluation_batch, heads, in_context_score,
                                       out_of_distribution, strategies)
from birth.training.loop import probe_pass, train
from birth.training.runs import RunDir
from birth.training.validation import resolve_config
from conftest import deterministic_lines

# a tiny full model with feed-forwards and 2 heads: every place dropout acts is in the pass
TINY = ["data_args.seq_length=24", "model_args.max_length=24", "model_args.dim=16", "model_args.no_ffn=false",
        "model_args.n_heads=2", "optim_args.batch_size=8", "eval_batch_size=16", "max_iters=12", "eval_delta=4",
        "device=cpu"]
P = 0.2
REASON = "dropout draws random masks per run"


def _cfg(*overrides: str):
    return resolve_config("repeat-quick", TINY + list(overrides), warn=lambda line: None)


def _train(tmp_path, name: str, *overrides: str, **kw) -> list[dict]:
    summary = train(_cfg(*overrides), tmp_path / name, quiet=True, **kw)
    assert summary["status"] == "completed", summary
    return deterministic_lines(RunDir(tmp_path / name).metrics_path)


def _weights(run_dir) -> dict:
    return RunDir.load_checkpoint(RunDir(run_dir).latest_checkpoint())["model"]


def _model(p: float) -> Transformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Transformer(_cfg(f"model_args.dropout={p}").model_args, 8)


# -- the model -----------------------------------------------------------------------------------

def test_without_dropout_there_is_no_dropout_module():
    assert not any(isinstance(m, nn.Dropout) for m in _model(0.0).modules())
    # embeddings, attention probabilities and one residual branch module per block
    assert sum(isinstance(m, nn.Dropout) for m in _model(P).modules()) == 1 + 2 * 2


def test_dropout_acts_in_train_mode_only_and_the_weights_are_the_same():
    off, on = _model(0.0), _model(P)
    assert all(torch.equal(a, b) for a, b in zip(off.state_dict().values(), on.state_dict().values()))
    x = torch.randint(0, 8, (4, 24))
    assert not torch.equal(on(x), on(x))                       # two masks
    assert torch.equal(on.eval()(x), off.eval()(x))
    assert torch.equal(off.train()(x), off.eval()(x))          # p = 0: no randomness at all


def test_the_pattern_hook_and_the_returned_patterns_are_before_dropout():
    model = _model(P).train()
    seen = []
    model.add_hook("blocks.0.attn.hook_pattern", lambda t, hook: seen.append(t))
    _, patterns = model(torch.randint(0, 8, (4, 24)), return_attn=True)
    assert torch.equal(seen[0], patterns[0])
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(4, 2, 24))  # softmax rows, no dropped entry
    _, cache = model.eval().run_with_cache(torch.randint(0, 8, (4, 24)))
    assert "blocks.1.attn.hook_pattern" in cache and "blocks.1.hook_mlp_out" in cache


# -- validation and stacking ---------------------------------------------------------------------

@pytest.mark.parametrize("preset, value, message", [
    ("repeat-quick", "1.5", "must be in [0, 1), got 1.5"),
    ("repeat-quick", "1", "must be in [0, 1), got 1.0"),
    ("repeat-quick", "-0.1", "must be in [0, 1), got -0.1"),
    ("quick", "0.1", "the simplified model has no dropout (full architecture only)"),
])
def test_bad_dropout_is_refused_naming_the_key(preset, value, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(preset, [f"model_args.dropout={value}"])
    assert str(err.value) == f"model_args.dropout: {message}"


def test_runs_with_dropout_never_stack():
    key = stack_key(_cfg(f"model_args.dropout={P}"))
    assert key.key is None and key.why == REASON
    assert stack_key(_cfg()).key is not None


def test_a_sweep_of_two_seeds_with_dropout_trains_them_alone_and_says_why(tmp_path):
    jobs = [Job(to_dict(_cfg(f"model_args.dropout={P}", f"seed={s}", f"init_seed={s}")), str(tmp_path / str(s)))
            for s in (0, 1)]
    logged = []
    units = stack_units(jobs, size=4, workers=1, log=logged.append)
    assert units == [[jobs[0]], [jobs[1]]]
    assert logged == [f"birth: 2 run(s) train alone, not in a stack: {REASON}"]


# -- training ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_zero_dropout_is_the_run_without_the_key_and_leaves_the_global_rng_alone(tmp_path):
    before = torch.get_rng_state()
    assert _train(tmp_path, "zero", "model_args.dropout=0") == _train(tmp_path, "none")
    assert torch.equal(torch.get_rng_state(), before)  # nothing seeded, nothing drawn


@pytest.mark.slow
def test_dropout_changes_the_training_losses_and_is_deterministic(tmp_path):
    torch.manual_seed(123)  # whatever state a caller leaves: the run seeds its own masks
    once = _train(tmp_path, "once", f"model_args.dropout={P}")
    torch.manual_seed(456)
    assert _train(tmp_path, "again", f"model_args.dropout={P}") == once
    without = _train(tmp_path, "without")
    assert all(a["loss"] != b["loss"] for a, b in zip(once, without))
    # another data seed draws other masks too (the seed of the masks comes from it)
    other = _train(tmp_path, "other", f"model_args.dropout={P}", "seed=43")
    assert other[0]["loss"] != once[0]["loss"]


@pytest.mark.slow
def test_evaluation_and_probes_see_no_dropout(tmp_path):
    """At step 0 the probes of the training batch read the initial weights, and the fixed batches
    the weights after the first update (checkpointed at step 1): with dropout they are exactly what
    the same weights give without it. Every metric function runs in eval mode."""
    modes = []
    lines = _train(tmp_path, "run", f"model_args.dropout={P}", "checkpoint_steps=1",
                   callbacks=[lambda ev: modes.append(ev.model.training)])
    assert modes == [False] * len(lines)
    first = lines[0]
    # the training batch's probes: the initial model without dropout
    setup = build_setup(_cfg())
    batch = setup.train_batch(0)
    expected = setup.task.batch_metrics(*probe_pass(setup.model, batch.x), batch)
    assert expected and all(first[k] == v for k, v in expected.items())
    # the fixed batches: the metric functions called on a model left in train mode switch to eval mode
    weights = RunDir.load_checkpoint(dict(RunDir(tmp_path / "run").checkpoints())[1])["model"]
    for p in (P, 0.0):
        setup = build_setup(_cfg(f"model_args.dropout={p}"))
        setup.model.load_state_dict(weights)
        ev = Evaluation(0, Evaluator(setup), stepped=None)
        for fn in (out_of_distribution, evaluation_batch, strategies, in_context_score, heads):
            ev.metrics.update(fn(ev))
        assert setup.model.training
        assert ev.metrics and all(first[k] == v for k, v in ev.metrics.items()), p


@pytest.mark.slow
def test_a_run_with_dropout_resumes_with_the_masks_of_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = _train(tmp_path, "whole", f"model_args.dropout={P}")
    step_of = loop._train_step

    def interrupt_at_5(setup, optimizer, step, timings):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # seen before step 6, as a Ctrl-C would be
        return step_of(setup, optimizer, step, timings)

    monkeypatch.setattr(loop, "_train_step", interrupt_at_5)
    cfg = _cfg(f"model_args.dropout={P}")
    assert train(cfg, tmp_path / "cut", quiet=True)["status"] == "interrupted"
    assert RunDir(tmp_path / "cut").checkpoints()[-1][0] == 6
    monkeypatch.setattr(loop, "_train_step", step_of)
    torch.manual_seed(789)  # the checkpoint's RNG state, not the caller's, draws the masks
    assert train(cfg, tmp_path / "cut", resume=True, quiet=True)["status"] == "completed"
    assert deterministic_lines(RunDir(tmp_path / "cut").metrics_path) == whole
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- the command line ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args", [["--preset", "repeat-quick", "model_args.dropout=1.5"],
                                  ["--preset", "quick", "model_args.dropout=0.1"]], ids=["range", "simplified"])
def test_the_command_line_refuses_bad_dropout_in_one_line_before_any_file(cli, tmp_path, args):
    out = tmp_path / "run"
    proc = cli.run("train", *args, "--out", str(out), "--quiet")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("birth: error: model_args.dropout: ")
    assert not out.exists()
