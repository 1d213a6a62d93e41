"""Determinism: the same config and seeds give the same metrics.jsonl; the data seed (``seed``)
and the initialisation seed (``init_seed``) each move only what they name."""
import pytest
import torch

from birth.training.build import build_setup
from birth.training.validation import resolve_config
from conftest import same_metrics

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

TINY = ["optim_args.batch_size=8", "eval_batch_size=8", "data_args.seq_length=32", "model_args.max_length=32",
        "model_args.dim=32"]


def test_same_config_and_seeds_give_identical_metrics(cli, reference_run, tmp_path):
    again = tmp_path / "again"
    proc = cli.run("train", *cli.tiny, "--out", str(again), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert same_metrics(again / "metrics.jsonl", reference_run / "metrics.jsonl")
    assert (again / "config.yaml").read_bytes() == (reference_run / "config.yaml").read_bytes()


def _setup(*overrides: str):
    return build_setup(resolve_config("quick", TINY + list(overrides)))


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _same_batch(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x", "y", "outs", "triggers", "outputs"))


def _same_data(a, b, steps=(0, 1, 7)) -> bool:
    return all(_same_batch(a.train_batch(i), b.train_batch(i)) for i in steps)


@pytest.fixture(scope="module")
def setups():
    return {"base": _setup(), "seed": _setup("seed=7"), "init_seed": _setup("init_seed=7"),
            "random": _setup("data_args.fixed_special_toks=false"),
            "random_seed": _setup("data_args.fixed_special_toks=false", "seed=7")}


def test_data_seed_changes_the_data_and_not_the_initial_weights(setups):
    base, other = setups["base"], setups["seed"]
    assert _same_weights(base, other)
    assert not any(_same_batch(base.train_batch(i), other.train_batch(i)) for i in (0, 1, 7))
    # with random triggers the per-sequence triggers and outputs move too
    random, random_seed = setups["random"], setups["random_seed"]
    assert not torch.equal(random.train_batch(0).triggers, random_seed.train_batch(0).triggers)


def test_init_seed_changes_the_initial_weights_and_not_the_data(setups):
    base, other = setups["base"], setups["init_seed"]
    assert not _same_weights(base, other)
    assert _same_data(base, other)


def test_neither_seed_moves_the_fixed_evaluation_batches(setups):
    base = setups["base"].eval_batches()
    for name in ("seed", "init_seed"):
        other = setups[name].eval_batches()
        assert all(_same_batch(base[k], other[k]) for k in base)


def test_same_seeds_rebuild_the_same_weights_and_data(setups):
    again = _setup()
    assert _same_weights(setups["base"], again)
    assert _same_data(setups["base"], again)


def test_a_batch_depends_on_its_index_not_on_the_batches_drawn_before(setups):
    s = setups["random"]
    late_first = s.train_batch(9)
    for i in range(9):
        s.train_batch(i)
    assert _same_batch(late_first, s.train_batch(9))
    assert not _same_batch(s.train_batch(8), s.train_batch(9))
