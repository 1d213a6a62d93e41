"""The priors of the markov task (birth.tasks.markov): uniform doubly-stochastic matrices by rejection
against an independent numpy rejection sampler, unigram-optimal chains, the training-only mixture,
and the ``last`` mask end to end in a tiny run."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from birth.tasks.markov import (
    REJECTION_MAX_STATES,
    MarkovArgs,
    MarkovTask,
    birkhoff_rejection,
    dirichlet_rows,
    sinkhorn,
)
from birth.training.config import ConfigError, build_config
from birth.training.validation import validate
from test_tasks_markov import gen, task


def identical_rows(p: torch.Tensor) -> list[bool]:
    """Per sequence: whether every row of its table is the same (the unigram-optimal prior's mark)."""
    return ((p - p[:, :1]).abs().amax((1, 2)) == 0).tolist()


# -- uniform on the Birkhoff polytope ------------------------------------------------------------------

def numpy_birkhoff(count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Edelman et al.'s plain rejection, written apart: a uniform (n-1) x (n-1) block, kept when its
    partial row and column sums are < 1 and the completed corner is > 0."""
    m, kept = n - 1, []
    while sum(map(len, kept)) < count:
        b = rng.random((200_000, m, m))
        ok = (b.sum(2) < 1).all(1) & (b.sum(1) < 1).all(1) & (b.sum((1, 2)) - (m - 1) > 0)
        kept.append(b[ok])
    b = np.concatenate(kept)[:count]
    out = np.empty((count, n, n))
    out[:, :m, :m], out[:, :m, m], out[:, m, :m] = b, 1 - b.sum(2), 1 - b.sum(1)
    out[:, m, m] = b.sum((1, 2)) - (m - 1)
    return out


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.concatenate([a, b])
    cdf = lambda s: np.searchsorted(np.sort(s), grid, side="right") / len(s)
    return float(np.abs(cdf(a) - cdf(b)).max())


def ks_critical(n: int, m: int, level: float = 1e-4) -> float:
    """The distance two samples of one law exceed with probability ``level`` (Kolmogorov's limit)."""
    return math.sqrt(-math.log(level / 2) / 2) * math.sqrt((n + m) / (n * m))


# an entry, the completed corner, and the largest entry (which tells Sinkhorn's law apart best)
STATISTICS = {"entry 0,0": lambda p: p[:, 0, 0], "corner": lambda p: p[:, -1, -1],
              "max entry": lambda p: p.max((1, 2))}


def distances(sample: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {name: ks_distance(f(sample), f(reference)) for name, f in STATISTICS.items()}


@pytest.mark.parametrize("n", range(2, REJECTION_MAX_STATES + 2))   # the last one: Sinkhorn beyond the limit
def test_doubly_stochastic_prior_draws_doubly_stochastic_matrices(n):
    b = task(num_states=n, prior="doubly-stochastic").batch(0, "train", 0, 64)
    p = b.latents["transition"]
    assert (p >= 0).all()
    assert float((p.sum(-1) - 1).abs().max()) < 1e-12 and float((p.sum(-2) - 1).abs().max()) < 1e-9
    assert float((b.latents["stationary"] - 1 / n).abs().max()) < 1e-9           # the uniform stationary law


@pytest.mark.parametrize("n,count", [(3, 20_000), (4, 5_000)])
def test_the_rejection_sampler_is_uniform_on_the_polytope(n, count):
    ours = birkhoff_rejection(count, n, gen(5)).numpy()
    reference = numpy_birkhoff(count, n, np.random.default_rng(0))
    far = {k: d for k, d in distances(ours, reference).items() if d > ks_critical(count, count)}
    assert not far, far


def test_the_uniformity_test_tells_the_legacy_sinkhorn_matrices_apart():
    # the same test, on Sinkhorn-balanced Dirichlet(1) matrices (the legacy flag): 3x the critical distance
    count = 20_000
    legacy = sinkhorn(dirichlet_rows((count, 3, 3), 1.0, gen(6))).numpy()
    gaps = distances(legacy, numpy_birkhoff(count, 3, np.random.default_rng(1)))
    assert gaps["max entry"] > 2 * ks_critical(count, count), gaps


def test_the_rejection_sampler_is_a_pure_function_of_the_generator():
    for n in (2, 4):
        assert torch.equal(birkhoff_rejection(50, n, gen(3)), birkhoff_rejection(50, n, gen(3)))
        assert birkhoff_rejection(0, n, gen(3)).shape == (0, n, n)


# -- unigram-optimal -------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [2, 3])
def test_unigram_optimal_tables_repeat_one_row_whose_law_is_stationary(order):
    b = task(prior="unigram-optimal", order=order, alpha=0.5).batch(0, "train", 0, 32)
    p, pi = b.latents["transition"], b.latents["stationary"]
    assert all(identical_rows(p))
    assert torch.allclose(pi, p[:, 0], atol=1e-12)
    if order == 3:   # the first two tokens: i.i.d. from p too (x_0 the least significant digit)
        assert torch.allclose(b.latents["initial"], (p[:, 0, None, :] * p[:, 0, :, None]).flatten(1), atol=1e-12)


@pytest.mark.parametrize("order", [2, 3])
def test_unigram_optimal_tokens_are_iid(order):
    # one long sequence: after every context the next token follows p (5 standard errors)
    b = task(num_states=3, prior="unigram-optimal", order=order, seq_length=20_000).batch(2, "train", 0, 1)
    x, p = b.x[0].tolist() + [int(b.y[0, -1])], b.latents["stationary"][0].numpy()
    ctx = order - 1
    counts = np.zeros((3 ** ctx, 3))
    for s in range(ctx - 1, len(x) - 1):
        counts[sum(x[s - j] * 3 ** j for j in range(ctx)), x[s + 1]] += 1
    for row in counts:
        assert row.sum() > 300
        se = np.sqrt(p * (1 - p) / row.sum())
        assert (np.abs(row / row.sum() - p) < 5 * se + 1e-9).all(), (row / row.sum(), p)


def test_unigram_is_the_best_strategy_under_the_unigram_optimal_prior():
    t = task(prior="unigram-optimal", num_states=3, seq_length=50)
    assert t.reference_strategies[0] == "unigram"
    b = t.batch(0, "eval", 0, 2000)
    st = t.strategies()
    loss = {k: -torch.log(st[k](b).gather(-1, b.y[..., None]).squeeze(-1)).mean(1)
            for k in ("uniform", "unigram", "ngram")}                              # per-sequence means
    for other in ("ngram", "uniform"):
        diff = loss["unigram"] - loss[other]
        assert float(diff.mean()) < -4 * float(diff.std()) / math.sqrt(len(diff)), other
    assert torch.allclose(st["transition"](b), st["stationary"](b), atol=1e-12)    # the oracles agree


# -- the mixture (training stream only) -------------------------------------------------------------

@pytest.mark.parametrize("size,mixed", [(64, 16), (10, 2), (3, 1)])     # Python's round: 2.5 -> 2, 0.75 -> 1
def test_a_training_batch_ends_with_round_b_share_mixed_sequences(size, mixed):
    t = task(num_states=3, prior="doubly-stochastic", mixture="unigram-optimal:0.25")
    b = t.batch(1, "train", 4, size)
    assert identical_rows(b.latents["transition"]) == [False] * (size - mixed) + [True] * mixed
    p = b.latents["transition"][: size - mixed]
    assert float((p.sum(-2) - 1).abs().max()) < 1e-12                          # the rest: the prior's
    same = t.batch(1, "train", 4, size)
    assert torch.equal(b.x, same.x) and torch.equal(b.latents["transition"], same.latents["transition"])
    assert not torch.equal(b.x, t.batch(1, "train", 5, size).x)


def test_the_latents_of_a_mixed_batch_belong_to_each_sequence():
    t = task(num_states=3, order=2, mixture="unigram-optimal:0.5")
    b = t.batch(0, "train", 0, 16)
    p, pi = b.latents["transition"], b.latents["stationary"]
    assert torch.allclose(torch.einsum("bu,buv->bv", pi, p), pi, atol=1e-12)    # stationary for its own table
    rows = p.gather(1, b.x[..., None].expand(-1, -1, 3))                          # P(. | x_t) of its own table
    assert torch.allclose(t.oracle(b), rows, atol=1e-12)


@pytest.mark.parametrize("stream", ["eval", "test", "floors"])
def test_other_streams_are_never_mixed(stream):
    mixed = task(num_states=3, prior="doubly-stochastic", mixture="unigram-optimal:0.25")
    pure = task(num_states=3, prior="doubly-stochastic")
    b = mixed.batch(1, stream, 0, 64)
    assert not any(identical_rows(b.latents["transition"]))
    assert torch.equal(b.x, pure.batch(1, stream, 0, 64).x)
    assert mixed.floors() == pure.floors()


def test_the_mixture_is_recorded_in_task_info():
    info = task(num_states=3, prior="doubly-stochastic", mixture="unigram-optimal:0.25").info()
    assert info["prior"] == "doubly-stochastic"
    assert info["mixture"] == {"prior": "unigram-optimal", "share": 0.25, "streams": ["train"]}
    assert info["doubly_stochastic_sampler"].startswith("uniform")
    assert task().info()["mixture"] is None and "doubly_stochastic_sampler" not in task().info()


@pytest.mark.parametrize("kw,key", [
    ({"mixture": "foo:0.2"}, "mixture"), ({"mixture": "unigram-optimal"}, "mixture"),
    ({"mixture": "unigram-optimal:0"}, "mixture"), ({"mixture": "unigram-optimal:1"}, "mixture"),
    ({"mixture": "unigram-optimal:x"}, "mixture"), ({"mixture": "unigram-optimal:nan"}, "mixture"),
    ({"mixture": ":0.5"}, "mixture"), ({"mixture": "doubly-stochastic:0.5", "order": 3}, "mixture"),
    ({"prior": "doubly-stochastic", "order": 3}, "prior"), ({"prior": "uniform"}, "prior"),
    ({"doubly_stochastic": True, "mixture": "unigram-optimal:0.25"}, "doubly_stochastic"),
])
def test_bad_priors_and_mixtures_name_their_key(kw, key):
    with pytest.raises(ValueError, match=f"^data_args.{key}: [^\n]*$"):
        MarkovTask.check(MarkovArgs(task="markov", **kw))


def test_the_legacy_flag_with_another_prior_names_both_keys():
    with pytest.raises(ValueError, match="^data_args.doubly_stochastic: .*data_args.prior=unigram-optimal"):
        MarkovTask.check(MarkovArgs(task="markov", doubly_stochastic=True, prior="unigram-optimal"))
    with pytest.raises(ConfigError, match="^data_args.prior: expected one of"):
        validate(build_config(None, {"data_args.task": "markov", "data_args.prior": "uniform"}))


@pytest.mark.slow  # trains, or starts a subprocess
def test_the_command_line_refuses_a_bad_mixture_before_any_work(cli, tmp_path):
    out = tmp_path / "run"
    proc = cli.run("train", "--preset", "markov-quick", "data_args.mixture=foo:2", "--out", str(out), "--quiet")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("birth: error: data_args.mixture: ")
    assert not out.exists()


def test_runs_of_every_prior_stack_together():
    from birth.launching.stacked import stack_key
    cfgs = [build_config("markov-quick", over) for over in
            ({}, {"data_args.prior": "doubly-stochastic", "data_args.mixture": "unigram-optimal:0.25"})]
    assert stack_key(cfgs[0]) == stack_key(cfgs[1])


# -- the last position ----------------------------------------------------------------------------------

def test_last_mask_metrics_are_the_in_context_metrics_at_the_last_position(tmp_path):
    from birth.training.build import trained_setup
    from birth.training.loop import train
    from birth.training.runs import RunDir
    from birth.training.validation import resolve_config
    cfg = resolve_config("markov-quick", {
        "max_iters": 3, "eval_delta": 1, "data_args.seq_length": 16, "model_args.max_length": 16,
        "optim_args.batch_size": 8, "eval_batch_size": 32, "data_args.mixture": "unigram-optimal:0.25"})
    train(cfg, tmp_path / "run", quiet=True)
    run = RunDir(tmp_path / "run")
    final = run.read_metrics()[-1]
    setup = trained_setup(tmp_path / "run")
    b = setup.eval_batches()["eval"]
    with torch.no_grad():
        logits = setup.model(b.x)[:, -1].double()                                   # (B, N) at the last position
    y = b.y[:, -1]
    assert final["eval_loss_last"] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-5)
    assert final["eval_acc_last"] == pytest.approx(float((logits.argmax(-1) == y).double().mean()), abs=1e-6)
    log_model = F.log_softmax(logits, -1)
    for name, fn in setup.task.strategies().items():
        p = fn(b)[:, -1].float().double()                                           # as the evaluator keeps them
        kl = (p * (torch.log(torch.where(p > 0, p, 1.0)) - log_model)).sum(-1).mean()
        assert final[f"eval_kl_{name}_last"] == pytest.approx(float(kl), abs=1e-5), name
    assert {"loss_last", "acc_last", "eval_loss_in_context", "eval_kl_ngram_in_context"} <= set(final)
    info = run.read_task()
    assert info["masks"]["last"] == {"loss": "loss_last", "acc": "acc_last"}
    assert "last" in info["strategies"]["ngram"] and "floor_loss_last" in info["floors"]
