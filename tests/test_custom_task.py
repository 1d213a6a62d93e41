"""A task of one's own, as docs/api.md writes it (the example is read from that page): named
MODULE:CLASS in the config, it trains, evaluates and reports like the paper's task, from its masks
and strategies alone; its Bayes strategy is exact and no trained model beats it."""
import re
import sys
from pathlib import Path

import pytest
import torch

import birth
from birth import tasks
from birth.training.validation import resolve_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
CONFIG = {"data_args.task": "lookup:LookupTask", "data_args.keys": 6, "data_args.seq_length": 24,
          "model_args.max_length": 24, "model_args.arch": "full", "model_args.n_heads": 1, "model_args.dim": 32,
          "model_args.no_ffn": True, "loss_head_only": False, "optim_args.use_sgd": False,
          "optim_args.learning_rate": 0.01, "optim_args.batch_size": 32, "max_iters": 60, "eval_delta": 20,
          "eval_batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def lookup(tmp_path_factory):
    code = re.search(r"<!-- example task: lookup.py.*?-->\n```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(code.splitlines()) < 60  # the promise of the docs: a task in under 60 lines
    folder = tmp_path_factory.mktemp("lookup")
    (folder / "lookup.py").write_text(code)
    sys.path.insert(0, str(folder))
    yield tasks.task_class("lookup:LookupTask")
    sys.path.remove(str(folder))


def test_the_docs_task_samples_what_it_says(lookup):
    task = lookup(lookup.Args(keys=6, seq_length=24))
    b = task.batch(0, "train", 0, 16)
    assert b.x.shape == (16, 24) and torch.equal(b.x[:, 1:], b.y[:, :-1])
    assert torch.equal(task.batch(0, "train", 0, 16).x, b.x)                  # a pure function of the stream
    keys, values = b.x[:, 0::2], b.x[:, 1::2]
    assert bool((keys < 6).all()) and bool((values >= 6).all())
    table = b.latents["table"]
    assert torch.equal(values, table.gather(1, keys[:, :values.shape[1]]))    # each key shows its value
    probs = task.strategies()["bayes"](b)
    assert torch.allclose(probs.sum(-1), torch.ones(16, 24, dtype=torch.float64))
    hit = probs.argmax(-1) == b.y
    assert bool(hit[b.masks["in_context"]].all())                             # a seen key: its value, surely


@pytest.mark.slow
def test_the_docs_task_trains_and_no_model_beats_its_bayes_strategy(lookup, tmp_path):
    assert resolve_config(None, CONFIG).data_args.task == "lookup:LookupTask"
    run = birth.train(CONFIG, tmp_path / "run")
    last, strategies = run.metrics[-1], run.task["strategies"]
    assert {"eval_loss_in_context", "eval_acc_global", "eval_kl_bayes_in_context", "head_induction_max"} <= set(last)
    assert last["eval_loss"] < run.metrics[0]["eval_loss"] - 0.3                # it learned (the token types, at least)
    for mask in ("in_context", "global"):  # below the Bayes loss only by the luck of 64 sequences, if at all
        assert last[f"eval_loss_{mask}"] >= strategies["bayes"][mask]["loss"] - 0.02
    assert strategies["bayes"]["in_context"] == {"acc": 1.0, "loss": 0.0}
