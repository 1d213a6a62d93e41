"""The vectorised sampler against the official per-token algorithm (birth.tasks.triggers.official_sampler)."""
import numpy as np
import pytest
import torch

from birth.training.config import DataArgs
from birth.tasks.triggers.corpus import bundled_stats
from birth.tasks.triggers.official_sampler import naive_batch
from birth.tasks.triggers.task import TriggersTask, alias_tables, fixed_triggers

STATS = bundled_stats()


def ours(data, n, seed=0, **kw):
    b = TriggersTask(data, stats=STATS, **kw).batch(seed, "train", 0, n)
    return b.x.numpy(), b.y.numpy(), b.outs.numpy(), b


def naive(data, n, seed=0, **kw):
    return naive_batch(np.random.default_rng(seed), data, STATS, n, **kw)


def fractions(outs):
    return np.array([(outs >= 1).mean(), (outs == 1).mean(), (outs >= 2).mean()])


def test_alias_tables_reproduce_the_distribution_exactly():
    probs = np.random.default_rng(0).dirichlet(np.ones(7), size=5)
    thr, alias = alias_tables(probs)
    n = probs.shape[1]
    recovered = np.zeros_like(probs)
    for r in range(len(probs)):
        for j in range(n):
            recovered[r, j] += thr[r, j] / n
            recovered[r, alias[r, j]] += (1 - thr[r, j]) / n
    np.testing.assert_allclose(recovered, probs, atol=1e-12)


def test_global_transitions_follow_the_bigram():
    x, y, outs, _ = ours(DataArgs(k=3, seq_length=256), 1024)
    glob = outs == 0
    counts = np.zeros((65, 65))
    np.add.at(counts, (x[glob], y[glob]), 1)
    common = counts.sum(1) > 2000
    emp = counts[common] / counts[common].sum(1, keepdims=True)
    tv = 0.5 * np.abs(emp - STATS.cond[common]).sum(1)
    assert common.sum() >= 15
    assert tv.max() < 0.05


def test_first_token_follows_the_unigram():
    x, _, _, _ = ours(DataArgs(k=0, seq_length=2), 20000)
    emp = np.bincount(x[:, 0], minlength=65) / len(x)
    assert 0.5 * np.abs(emp - STATS.marginal).sum() < 0.03


@pytest.mark.parametrize("fixed", [True, False])
def test_every_trigger_occurrence_is_followed_by_its_output(fixed):
    _, _, _, b = ours(DataArgs(k=5, fixed_special_toks=fixed, seq_length=128), 256)
    seq = torch.cat([b.x, b.y[:, -1:]], 1)
    for i in range(len(seq)):
        table = dict(zip(b.triggers[i].tolist(), b.outputs[i].tolist()))
        assert len(table) == 5  # distinct triggers
        for t in range(seq.shape[1] - 1):
            tok = int(seq[i, t])
            if tok in table:
                assert int(seq[i, t + 1]) == table[tok]


def test_outs_counts_occurrences_of_each_trigger():
    x, _, outs, b = ours(DataArgs(k=3, seq_length=64), 128)
    for i in range(len(x)):
        seen = {}
        trig = set(b.triggers[i].tolist())
        for t in range(x.shape[1]):
            tok = int(x[i, t])
            if tok in trig:
                seen[tok] = seen.get(tok, 0) + 1
                assert outs[i, t] == seen[tok]
            else:
                assert outs[i, t] == 0


@pytest.mark.parametrize("data", [
    DataArgs(k=5, fixed_special_toks=True),
    DataArgs(k=3),
    DataArgs(k=1, fixed_special_toks=True),
    DataArgs(k=10),
], ids=["fixed5", "random3", "fixed1", "random10"])
def test_token_type_fractions_match_the_official_algorithm(data):
    _, _, o_ours, _ = ours(data, 2048)
    _, _, o_naive = naive(data, 300, seed=1)
    # per-sequence fractions vary a lot with random triggers: compare with a 4-sigma band
    per_seq = np.stack([fractions(o) for o in o_naive])
    sigma = per_seq.std(0) / np.sqrt(len(per_seq)) + 1e-3
    assert np.all(np.abs(fractions(o_ours) - per_seq.mean(0)) < 4 * sigma), (fractions(o_ours), per_seq.mean(0))


def test_fixed_triggers_are_the_most_frequent_tokens():
    five = [STATS.vocab[i] for i in fixed_triggers(STATS.marginal, 5, 0)]
    assert five == ["a", "o", "t", "e", " "]  # SPEC §1.2, increasing frequency
    offset = [STATS.vocab[i] for i in fixed_triggers(STATS.marginal, 2, 3)]
    assert offset == ["a", "o"]


def test_uniform_outputs_are_uniform_and_bigram_outputs_follow_the_bigram():
    data = DataArgs(k=1, fixed_special_toks=True, seq_length=4)
    _, _, _, uni = ours(data, 20000)
    counts = np.bincount(uni.outputs[:, 0].numpy(), minlength=65)
    assert counts.min() > 0 and counts.max() / counts.mean() < 1.4
    _, _, _, big = ours(data, 20000, bigram_outs=True)
    emp = np.bincount(big.outputs[:, 0].numpy(), minlength=65) / 20000
    space = STATS.vocab.index(" ")
    assert 0.5 * np.abs(emp - STATS.cond[space]).sum() < 0.03


def test_no_repeat_excludes_self_loops():
    _, _, _, b = ours(DataArgs(k=10, no_repeat=True, seq_length=8), 4000)
    assert not (b.triggers == b.outputs).any()
    _, _, _, b = ours(DataArgs(k=10, seq_length=8), 4000)
    assert (b.triggers == b.outputs).any()  # 1/N per trigger without no_repeat


def test_output_split_pools_match_the_official_slicing():
    data = DataArgs(k=5, seq_length=8)
    _, _, _, tr = ours(data, 3000, split="train")
    _, _, _, te = ours(data, 3000, split="test")
    assert tr.outputs.max() < 48 and te.outputs.min() >= 48
    # with no_repeat the official code slices the pool list without the trigger: the cut shifts
    nr = DataArgs(k=1, fixed_special_toks=True, no_repeat=True, seq_length=8)  # trigger ' ' = id 1
    _, _, _, tr = ours(nr, 5000, split="train")
    assert set(tr.outputs[:, 0].tolist()) == set(range(49)) - {1}


def test_show_latents_prefix_and_output_counter():
    _, _, outs, b = ours(DataArgs(k=3, show_latents=True, seq_length=32), 64)
    assert (b.x[:, :3] == b.triggers).all() and (outs[:, :3] == -1).all()
    _, _, outs, _ = ours(DataArgs(k=3, output_counter=False, seq_length=64), 64)
    assert set(np.unique(outs)) <= {0, 1} and (outs == 1).any()


def test_batches_are_pure_functions_of_seed_and_index():
    task = TriggersTask(DataArgs(k=3, seq_length=32), stats=STATS)
    a, b = task.batch(7, "train", 3, 16), task.batch(7, "train", 3, 16)
    assert torch.equal(a.x, b.x) and torch.equal(a.outs, b.outs)
    assert not torch.equal(a.x, task.batch(7, "train", 4, 16).x)
    assert not torch.equal(a.x, task.batch(8, "train", 3, 16).x)
    assert not torch.equal(a.x, task.batch(7, "eval", 3, 16).x)
    assert a.x.shape == (16, 32) and a.x.dtype == torch.long
