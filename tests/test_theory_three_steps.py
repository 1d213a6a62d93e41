"""Theorem 3 machinery: the exact coordinate evaluation, the zero gradient of W_K2, the three top-down steps."""
import pytest
import torch
import torch.nn.functional as F

from birth.experiments.theory.three_steps import (TOP_DOWN, ReducedModel, ThreeStepConfig, ThreeSteps, in_context_at,
                                              population_gradient, run_orders)

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

SMALL = dict(dim=48, seq_length=32, n_seqs=64, search_seqs=32, test_seqs=32)


def _random_weights(ts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ts.red.params.values():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 2)


@pytest.mark.parametrize("ideal_embeddings", [True, False])
def test_coordinate_evaluation_reproduces_the_transformer_logits_and_gradients(ideal_embeddings):
    ts = ThreeSteps(ThreeStepConfig(sqrtd_embeddings=ideal_embeddings, **SMALL))
    model = ts.model.double()
    red = ReducedModel(model, ts.cfg.seq_length)
    _random_weights(ts)
    red = ReducedModel(model, ts.cfg.seq_length)
    x, y, mask = ts.train.x, ts.train.y, ts.train.outs >= 2
    reference = model(x).detach()                                                    # (B, T, N), float32 output
    ours = red.logits(x, red.small()).detach()
    assert torch.allclose(ours.float(), reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    for name, param in red.params.items():
        param.requires_grad_(True)
        (auto,) = torch.autograd.grad(F.cross_entropy(model(x).double()[mask], y[mask]), param)
        ours = population_gradient(red, ts.train, name, chunk=16)
        assert float((ours - auto).norm() / auto.norm()) < 1e-5, name


def test_w_k2_gradient_is_exactly_zero_while_w_o2_is_zero():
    ts = ThreeSteps(ThreeStepConfig(**SMALL))
    _random_weights(ts)                                                              # W_K1, W_K2 anything ...
    state = {k: v.detach().clone() for k, v in ts.red.params.items()}
    state["W_O2"] = torch.zeros_like(state["W_O2"])                                  # ... but W_O2 = 0
    _, norm = ts.direction(state, "W_K2")
    assert norm == 0.0
    _, norm_k1 = ts.direction(state, "W_K1")
    assert norm_k1 > 0                                       # W_K1 still gets a gradient through the residual


def test_three_top_down_steps_build_an_in_context_predictor_well_above_chance():
    cfg = ThreeStepConfig(dim=256, n_seqs=1024, search_seqs=256, test_seqs=512)
    rows = run_orders(cfg, (TOP_DOWN, ("W_K2",)), log=lambda s: None)
    by_step = {r["step"]: r for r in rows if r["order"] == "O2>K2>K1"}
    chance = 1 / 65
    assert by_step[3]["acc"] > 4 * chance
    # W_K2's step adds in-context skill
    assert by_step[2]["acc"] > by_step[1]["acc"] + 0.01
    assert by_step[1]["wo1_acc"] > 0.5                                                  # W_O2 stores w_E(k) -> w_U(k)
    k2_alone = next(r for r in rows if r["order"] == "K2")
    assert k2_alone["grad_norm"] == 0.0 and k2_alone["acc"] < 2 * chance


def test_joint_search_picks_the_step_sizes_with_the_best_accuracy_after_the_last_step():
    """Brute force over every decade pair (step 2, step 3) agrees with the search, at a small size."""
    grid = (1.0, 10.0 ** 0.5, 10.0, 10.0 ** 1.5, 100.0, 10.0 ** 2.5, 1000.0)
    ts = ThreeSteps(ThreeStepConfig(search="joint", grid=grid, **SMALL))
    (n1, d1, _, s1), (n2, d2, g2, s2), (n3, d3, g3, s3) = ts.joint_steps(TOP_DOWN)
    assert (n1, n2, n3) == TOP_DOWN and g2 > 0 and g3 > 0
    state1 = {**ts.zero, n1: s1 * d1}
    chosen = in_context_at(ts, {**state1, n2: s2 * d2, n3: s3 * d3})
    best_acc = 0.0
    for a in grid[::2]:                       # every decade of step 2, each with step 3's own gradient
        state2 = {**state1, n2: a * d2}
        direction, _ = ts.direction(state2, n3)
        best_acc = max([best_acc] + [in_context_at(ts, {**state2, n3: b * direction})[1] for b in grid[::2]])
    assert chosen[1] >= best_acc - 1e-12


def test_joint_search_needs_complete_orders():
    with pytest.raises(ValueError, match="complete orders"):
        run_orders(ThreeStepConfig(search="joint", **SMALL), (("W_O2",),), log=lambda s: None)
    with pytest.raises(ValueError, match="search"):
        ThreeStepConfig(search="both")
    with pytest.raises(ValueError, match="precision"):
        ThreeStepConfig(precision="float16")


def test_float64_computes_in_float64_and_agrees_with_float32_away_from_ties():
    rows = {p: run_orders(ThreeStepConfig(precision=p, **SMALL), (TOP_DOWN,), log=lambda s: None)
            for p in ("float32", "float64")}
    assert ThreeSteps(ThreeStepConfig(precision="float64", **SMALL)).red.direct.dtype == torch.float64
    for a, b in zip(rows["float32"], rows["float64"]):
        assert a["update_norm"] == b["update_norm"] and abs(a["acc"] - b["acc"]) <= 1e-9
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * b["grad_norm"]


def test_the_gradient_of_one_matrix_is_the_same_bits_as_through_all_three():
    """population_gradient takes the backward pass only into the small matrix the weight enters (the
    speed-up of the theory recipe): bit for bit the gradient of the pass through all three."""
    ts = ThreeSteps(ThreeStepConfig(ideal=True, **SMALL))
    _random_weights(ts, seed=1)
    for name in ("W_O2", "W_K2", "W_K1"):
        mats = [m.detach().clone().requires_grad_(True) for m in ts.red.small()]
        n = 0
        for i in range(0, len(ts.train.x), 16):
            x, y, mask = ts.train.x[i:i + 16], ts.train.y[i:i + 16], ts.train.outs[i:i + 16] >= 2
            F.cross_entropy(ts.red.target_logits(x, mats, mask), y[mask], reduction="sum").backward()
            n += int(mask.sum())
        weights = {k: v.detach().clone().requires_grad_(k == name) for k, v in ts.red.params.items()}
        pairs = [(m, g.grad / n) for m, g in zip(ts.red.small(weights), mats) if m.requires_grad]
        (through_all,) = torch.autograd.grad([m for m, _ in pairs], weights[name], [g for _, g in pairs])
        assert torch.equal(population_gradient(ts.red, ts.train, name, chunk=16), through_all), name


@pytest.mark.parametrize("ideal", [False, True])
def test_the_targets_only_pass_is_the_full_pass_at_the_targets(ideal, monkeypatch):
    """Stated tolerance of the speed-up: in float64 the logits and population gradients of the
    targets-only pass are the full pass's to 1e-12 (relative); in float32, to 1e-5."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        ts = ThreeSteps(ThreeStepConfig(ideal=ideal, **SMALL))
        ts.model.to(dtype)
        _random_weights(ts, seed=2)
        red = ReducedModel(ts.model, ts.cfg.seq_length, ideal=ideal)
        mats, x, mask = red.small(), ts.train.x, ts.train.outs >= 2
        full = red.logits(x, mats)[mask]
        assert float((red.target_logits(x, mats, mask) - full).abs().max() / full.abs().max()) < tol
        fast = {name: population_gradient(red, ts.train, name, chunk=16) for name in red.params}
        monkeypatch.setattr(red, "target_logits", red.every_position_logits)
        for name, grad in fast.items():
            reference = population_gradient(red, ts.train, name, chunk=16)
            assert float((grad - reference).norm() / reference.norm()) < tol, (dtype, name)


@pytest.mark.parametrize("ideal", [False, True])
def test_three_steps_choose_the_same_steps_with_the_targets_only_pass(ideal, monkeypatch):
    """What the recipe publishes from the speed-up: the same step sizes and accuracies, and loss and
    gradient norms to 1e-4 (relative): after a step of norm 1e5 attention scores are about that large,
    where float32 rounds at about 1e-5 relative in either summation order."""
    cfg = ThreeStepConfig(ideal=ideal, search="joint" if ideal else "greedy", **SMALL)
    orders = (TOP_DOWN, ("W_K1", "W_O2", "W_K2"))
    fast = run_orders(cfg, orders, log=lambda s: None)
    monkeypatch.setattr(ReducedModel, "target_logits", ReducedModel.every_position_logits)
    full = run_orders(cfg, orders, log=lambda s: None)
    assert [(r["order"], r["step"], r["update_norm"]) for r in fast] == \
        [(r["order"], r["step"], r["update_norm"]) for r in full]
    for a, b in zip(fast, full):
        assert abs(a["acc"] - b["acc"]) <= 1e-9 and abs(a["loss"] - b["loss"]) <= 1e-4 * abs(b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * abs(b["grad_norm"])
