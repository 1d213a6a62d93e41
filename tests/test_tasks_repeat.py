"""The repeated-random-tokens task (birth.tasks.repeat): its sampler, masks and exact strategies."""
import itertools
import math

import numpy as np
import pytest
import torch

from birth.tasks import Batch, make_task
from birth.tasks.repeat import RepeatArgs, RepeatTask
from birth.training.config import ConfigError, build_config
from birth.training.validation import validate


def task(**kw) -> RepeatTask:
    return RepeatTask(RepeatArgs(task="repeat", **kw))


def test_a_batch_is_a_pure_function_of_seed_stream_and_index():
    t = task(seq_length=20)
    later = t.batch(5, "train", 1, 4)
    a = t.batch(5, "train", 0, 4)
    assert torch.equal(a.x, t.batch(5, "train", 0, 4).x) and torch.equal(t.batch(5, "train", 1, 4).x, later.x)
    for other in (t.batch(6, "train", 0, 4), t.batch(5, "eval", 0, 4), later):
        assert not torch.equal(a.x, other.x)


@pytest.mark.parametrize("length", [3, 4, 63, 64])
def test_the_second_half_repeats_the_first_and_the_masks_split_positions(length):
    t = task(vocab_size=10, seq_length=length)
    b = t.batch(0, "train", 0, 8)
    assert b.x.shape == b.y.shape == (8, length) and b.x.dtype == torch.long
    z = torch.cat([b.x, b.y[:, -1:]], 1)                                           # the T + 1 tokens
    assert torch.equal(b.x[:, 1:], b.y[:, :-1])
    h = math.ceil((length + 1) / 2)
    assert list(t.periods) == [h] and (b.latents["period"] == h).all()
    assert torch.equal(z[:, h:], z[:, : length + 1 - h])                            # the repeat, cut to T + 1
    t_ = np.arange(length)
    assert (b.masks["in_context"][0].numpy() == (t_ >= h)).all()
    assert (b.masks["global"][0].numpy() == (t_ < h - 1)).all()
    assert (b.masks["first"][0].numpy() == (t_ == h - 1)).all()
    for m in t.masks:                                                               # one mask per position
        assert b.masks[m].any() or (m == "global" and h == 1)
    assert (sum(b.masks[m].long() for m in t.masks) == 1).all()


def test_first_half_tokens_are_uniform():
    b = task(vocab_size=8, seq_length=64).batch(0, "train", 0, 2000)
    counts = np.bincount(b.x[:, :32].flatten().numpy(), minlength=8)
    expected = counts.sum() / 8
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 30                                                                 # chi^2 with 7 d.o.f.: p < 1e-4


def test_bayes_copies_by_position_and_equals_a_loop():
    t = task(vocab_size=7, seq_length=13)
    b = t.batch(2, "eval", 0, 5)
    bayes = t.strategies()["bayes"](b).numpy()
    (h,) = t.periods
    for i in range(5):
        x = b.x[i].tolist()
        for s in range(13):
            want = np.full(7, 1 / 7)
            # z_{s+1} = z_{s+1-h}, in the context
            if s + 1 >= h:
                want = np.eye(7)[x[s + 1 - h]]
            np.testing.assert_array_equal(bayes[i, s], want)
    # exact: probability one on every copied target, and hence loss 0 off the global positions
    p_true = np.take_along_axis(bayes, b.y.numpy()[..., None], -1)[..., 0]
    assert (p_true[~b.masks["global"].numpy()] == 1).all()
    assert np.allclose(p_true[b.masks["global"].numpy()], 1 / 7)
    uniform = t.strategies()["uniform"](b).numpy()
    assert np.allclose(uniform, 1 / 7)


def test_random_periods_repeat_each_sequence_with_its_own_period():
    t = task(vocab_size=5, seq_length=40, random_period=True)
    assert list(t.periods) == list(range(11, 22))                                    # ceil(41/4) .. ceil(41/2)
    b = t.batch(0, "train", 0, 400)
    z = torch.cat([b.x, b.y[:, -1:]], 1)
    h = b.latents["period"]
    assert set(h.tolist()) == set(t.periods)                                         # every period drawn
    tt = torch.arange(40)
    for i in range(400):
        hi = int(h[i])
        assert torch.equal(z[i, hi:], z[i, :41 - hi])                                # period h to the end
        assert torch.equal(b.masks["in_context"][i], tt >= hi) and torch.equal(b.masks["first"][i], tt == hi - 1)
        assert torch.equal(b.masks["global"][i], tt < hi - 1)
    counts = np.bincount(h.numpy() - 11, minlength=11)
    assert ((counts - 400 / 11) ** 2 / (400 / 11)).sum() < 35                         # chi^2, 10 d.o.f.: p < 1e-4
    assert torch.equal(known := t.known_period(b), t.known_period(b)) and known.shape == (400, 40, 5)


@pytest.mark.parametrize("length", [5, 7])
def test_bayes_with_random_periods_is_the_exact_posterior_predictive(length):
    # enumerate the process: a period h uniform over the allowed ones, then h uniform tokens repeated
    v = 3
    t = task(vocab_size=v, seq_length=length, random_period=True)
    periods = list(t.periods)
    assert len(periods) >= 2
    law: dict[tuple, float] = {}
    for h in periods:
        for block in itertools.product(range(v), repeat=h):
            z = tuple(block[s % h] for s in range(length + 1))
            law[z] = law.get(z, 0.0) + 1 / len(periods) / v ** h
    assert abs(sum(law.values()) - 1) < 1e-12
    seqs = torch.tensor(sorted(law))
    bayes = t.strategies()["bayes"](Batch(seqs[:, :-1], seqs[:, 1:], {})).numpy()
    mass: dict[tuple, np.ndarray] = {}
    for z, p in law.items():
        for s in range(length):
            mass.setdefault(z[: s + 1], np.zeros(v))[z[s + 1]] += p
    for i, z in enumerate(seqs.tolist()):
        for s in range(length):
            exact = mass[tuple(z[: s + 1])]
            np.testing.assert_allclose(bayes[i, s], exact / exact.sum(), atol=1e-12)


def test_floors_bad_arguments_and_registry():
    t = task(vocab_size=16)
    floors = t.floors()
    assert abs(floors["floor_loss_global"] - math.log(16)) < 1e-12
    assert floors["floor_loss_in_context"] == floors["floor_loss_first"] == 0
    shifted = task(vocab_size=16, seq_length=64, random_period=True).floors()   # the unseen period costs
    assert shifted["floor_loss_global"] > math.log(16) and 0 < shifted["floor_loss_in_context"] < 0.1
    assert 0 < shifted["floor_loss_first"] < math.log(16)
    assert isinstance(make_task(RepeatArgs(task="repeat")), RepeatTask)
    with pytest.raises(ValueError, match="^data_args.vocab_size: "):
        RepeatTask.check(RepeatArgs(task="repeat", vocab_size=1))
    with pytest.raises(ValueError, match="^data_args.seq_length: "):
        RepeatTask.check(RepeatArgs(task="repeat", seq_length=2))
    with pytest.raises(ConfigError, match="^data_args.vocab_size: must be >= 2"):
        validate(build_config(None, {"data_args.task": "repeat", "data_args.vocab_size": 0}))
    with pytest.raises(ConfigError, match="^data_args.k: a key of task triggers"):
        build_config(None, {"data_args.task": "repeat", "data_args.k": 3})


@pytest.mark.slow
def test_a_trained_model_learns_the_repeat_and_does_not_beat_bayes(tmp_path):
    from birth.training.build import trained_setup
    from birth.training.loop import train
    from birth.training.validation import resolve_config
    cfg = resolve_config("repeat-quick", {"seed": 100, "init_seed": 100, "eval_seed": 100})
    train(cfg, tmp_path / "run", quiet=True)
    setup = trained_setup(tmp_path / "run")
    b = setup.eval_batches()["eval"]
    with torch.no_grad():
        logits = setup.model(b.x)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b.y.flatten(), reduction="none").view_as(b.y)
    assert float(loss[b.masks["in_context"]].mean()) < 0.25 * math.log(setup.task.num_tokens)   # learned the copy
    # Bayes minimises the expected loss at every position, so over all positions together no model
    # beats it beyond sampling noise (per mask it can: the masks depend on the unseen period).
    bayes = -torch.log(setup.task.strategies()["bayes"](b).gather(-1, b.y[..., None]).squeeze(-1))
    diff = (loss.double() - bayes).mean(1)                                          # per sequence: i.i.d.
    se = float(diff.std() / math.sqrt(len(diff)))
    assert float(diff.mean()) > -4 * se, (float(diff.mean()), se)
