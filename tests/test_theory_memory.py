"""Associative memories: outer-product recall, its cross-talk, and a memory learned by gradient descent."""
import math

import pytest
import torch

from birth.experiments.theory import memory


def _memory(n, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u, v = memory.random_embeddings(n, d, generator=gen), memory.random_embeddings(n, d, generator=gen)
    return u, v, memory.random_pairs(n, gen)


def test_outer_memory_recalls_every_pair_when_few_pairs_in_large_d():
    u, v, pairs = _memory(32, 512)
    assert memory.pair_recall(memory.outer_memory(u, v, pairs), u, v, pairs) == 1.0


@pytest.mark.parametrize("n, d", [(1024, 16), (4096, 64)])
def test_outer_memory_recall_collapses_when_pairs_far_exceed_d(n, d):
    u, v, pairs = _memory(n, d)
    assert memory.pair_recall(memory.outer_memory(u, v, pairs), u, v, pairs) < 0.15


def test_recall_degrades_monotonically_with_stored_pairs_at_fixed_d():
    recalls = []
    for n in (16, 128, 1024):
        u, v, pairs = _memory(n, 64)
        recalls.append(memory.pair_recall(memory.outer_memory(u, v, pairs), u, v, pairs))
    assert recalls[0] > 0.95 > recalls[1] > recalls[2]


@pytest.mark.parametrize("n, d", [(64, 256), (1024, 64), (256, 16)])
def test_cross_talk_is_about_sqrt_pairs_over_d(n, d):
    u, v, pairs = _memory(n, d)
    measured = memory.cross_talk(u, v, pairs)
    assert measured == pytest.approx(math.sqrt((n - 1) / d), rel=0.15)


def test_cross_talk_uses_the_outer_memory_decomposition():
    # W u_i = v_j |u_i|^2 + interference, so |W u_i - v_j|u_i|^2| / |v_j| |u_i|^2 is the cross-talk of pair i
    u, v, pairs = _memory(8, 32)
    w = memory.outer_memory(u, v, pairs)
    own = (u * u).sum(1)[pairs[:, 0], None] * v[pairs[:, 1]]
    direct = ((u[pairs[:, 0]] @ w.T - own).norm(dim=1) / own.norm(dim=1)).mean()
    assert memory.cross_talk(u, v, pairs) == pytest.approx(float(direct), rel=1e-4)


@pytest.mark.parametrize("n, d", [(256, 64), (64, 16), (4096, 256)])
def test_gaussian_recall_prediction_matches_measurement(n, d):
    measured = sum(memory.pair_recall(memory.outer_memory(u, v, p), u, v, p)
                   for u, v, p in (_memory(n, d, seed) for seed in range(4))) / 4
    assert abs(measured - memory.predicted_recall(n, n, d)) < 0.06


def test_code_scale_embeddings_have_norm_sqrt_d():
    e = memory.random_embeddings(500, 256, scale="code", generator=torch.Generator().manual_seed(0))
    assert e.norm(dim=1).mean() == pytest.approx(16.0, rel=0.05)
    assert memory.random_embeddings(500, 256, generator=torch.Generator().manual_seed(0)).norm(dim=1).mean() \
        == pytest.approx(1.0, rel=0.05)


def test_learned_memory_stores_pairs_beyond_outer_product_capacity():
    u, v, pairs = _memory(256, 64)
    outer = memory.pair_recall(memory.outer_memory(u, v, pairs), u, v, pairs)
    w, losses = memory.learned_memory(u, v, pairs, steps=20)
    assert outer < 0.85
    assert memory.pair_recall(w, u, v, pairs) >= 0.95
    assert losses[-1] < losses[0]


def test_first_gradient_step_from_zero_is_the_centred_outer_memory():
    u, v, pairs = _memory(50, 128)
    w = torch.zeros(128, 128, requires_grad=True)
    (grad,) = torch.autograd.grad(memory.memory_loss(w, u, v, pairs), w)
    n = len(pairs)
    expected = (memory.outer_memory(u, v, pairs) - v.mean(0)[:, None] @ u.sum(0)[None, :]) / n
    assert torch.allclose(-grad, expected, atol=1e-6)
