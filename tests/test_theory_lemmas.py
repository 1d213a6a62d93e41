"""Lemma 1, its corollary and the noisy-input lemma, against autograd in float64."""
import pytest
import torch

from birth.tasks.triggers.corpus import bundled_stats
from birth.experiments.theory import lemmas, memory

F64 = dict(dtype=torch.float64)


def _problem(seed, d=40, n_in=23, n_out=31):
    gen = torch.Generator().manual_seed(seed)
    w_e, w_u = torch.randn(n_in, d, generator=gen, **F64), torch.randn(n_out, d, generator=gen, **F64)
    joint = torch.rand(n_in, n_out, generator=gen, **F64) ** 3
    return w_e, w_u, joint / joint.sum(), torch.randn(d, d, generator=gen, **F64) * 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lemma1_gradient_equals_autograd(seed):
    w_e, w_u, joint, w = _problem(seed)
    w.requires_grad_(True)
    (auto,) = torch.autograd.grad(lemmas.memory_population_loss(w, w_e, w_u, joint), w)
    formula = lemmas.lemma1_gradient(w.detach(), w_e, w_u, joint)
    assert auto.norm() > 1e-3
    assert float((auto - formula).norm() / auto.norm()) < 1e-10


def test_corollary_one_step_from_zero_stores_p_z_times_p_k_given_z_minus_uniform():
    stats = bundled_stats()
    joint = torch.as_tensor(stats.marginal[:, None] * stats.cond, **F64)              # z ~ pi_u, y ~ pi_b(.|z)
    n, d, eta = joint.shape[0], 160, 2.5
    gen = torch.Generator().manual_seed(0)
    w_e, w_u = (memory.random_embeddings(n, d, generator=gen, dtype=torch.float64) for _ in range(2))
    w = torch.zeros(d, d, **F64, requires_grad=True)
    (grad,) = torch.autograd.grad(lemmas.memory_population_loss(w, w_e, w_u, joint), w)
    w1 = -eta * grad
    assert float((w1 - lemmas.one_step_from_zero(eta, w_e, w_u, joint)).norm() / w1.norm()) < 1e-10
    alpha = lemmas.association_weights(w1, w_e, w_u)
    expected = eta * (joint - joint.sum(1, keepdim=True) / n)
    assert float((alpha - expected).abs().max()) < 1e-10
    # the most likely association gets the largest weight
    assert int(alpha.argmax()) == int(joint.argmax())


def test_gradient_descent_with_weight_decay_stays_in_w0_plus_outer_product_span():
    w_e, w_u, joint, _ = _problem(3, d=64, n_in=10, n_out=12)
    w0 = torch.randn(64, 64, generator=torch.Generator().manual_seed(5), **F64)
    lr, wd = 0.5, 0.05
    iterates = lemmas.gradient_descent(w0, w_e, w_u, joint, lr=lr, steps=25, weight_decay=wd)
    assert lemmas.outside_span(w0, w_e, w_u) > 0.5
    for t, wt in enumerate(iterates):
        assert lemmas.outside_span(wt - (1 - lr * wd) ** t * w0, w_e, w_u) < 1e-10


def test_noisy_gradient_formula_equals_autograd():
    gen = torch.Generator().manual_seed(0)
    n, t, d = 13, 17, 24
    w_e, pos, w_u = (torch.randn(m, d, generator=gen, **F64) for m in (n, t, n))
    x, y = lemmas.noisy_inputs(w_e, pos)
    w = (torch.randn(d, d, generator=gen, **F64) * 0.2).requires_grad_(True)
    (auto,) = torch.autograd.grad(lemmas.noisy_loss(w, w_u, x, y), w)
    assert float((auto - lemmas.noisy_gradient(w.detach(), w_u, x, y)).norm() / auto.norm()) < 1e-10
    z = torch.zeros(d, d, **F64, requires_grad=True)
    (g0,) = torch.autograd.grad(lemmas.noisy_loss(z, w_u, x, y), z)
    assert float((-3.0 * g0 - lemmas.noisy_one_step(3.0, w_e, w_u)).norm() / g0.norm()) < 1e-10


def test_one_noisy_step_classifies_almost_perfectly_at_large_d_and_poorly_at_small_d():
    accs = {}
    for d in (16, 1024):
        gen = torch.Generator().manual_seed(1)
        w_e, pos, w_u = (memory.random_embeddings(m, d, generator=gen) for m in (65, 256, 65))
        x, y = lemmas.noisy_inputs(w_e, pos)
        w = torch.zeros(d, d, requires_grad=True)
        (grad,) = torch.autograd.grad(lemmas.noisy_loss(w, w_u, x, y), w)
        accs[d] = lemmas.noisy_accuracy(-grad, w_u, x, y)
    assert accs[1024] > 0.9
    assert accs[16] < 0.5
