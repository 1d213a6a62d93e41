"""The in-context Markov chains task (birth.tasks.markov): its sampler against the laws it
claims (Dirichlet rows, doubly-stochastic balancing, stationary first tokens, the chain), and its
strategies against independent brute-force computations (Python loops, quadrature)."""
import itertools
import math

import numpy as np
import pytest
import torch

from birth.tasks import Batch, make_task
from birth.tasks.markov import (
    MarkovArgs,
    MarkovTask,
    context_stationary,
    dirichlet_rows,
    log_gamma_samples,
    sinkhorn,
)
from birth.training.config import ConfigError, build_config
from birth.training.validation import validate


def task(**kw) -> MarkovTask:
    kw.setdefault("seq_length", 50)
    return MarkovTask(MarkovArgs(task="markov", **kw))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def z_score(observed: float, expected: float, se: float) -> float:
    return abs(observed - expected) / se


# -- sampling is a pure function of (seed, stream, index) ----------------------------------------

def test_a_batch_is_a_pure_function_of_seed_stream_and_index():
    t = task(order=3)
    later = t.batch(7, "train", 3, 8)                       # drawn first: no state carries between batches
    a, b = t.batch(7, "train", 2, 8), t.batch(7, "train", 2, 8)
    assert torch.equal(a.x, b.x) and torch.equal(a.latents["transition"], b.latents["transition"])
    assert torch.equal(t.batch(7, "train", 3, 8).x, later.x)
    for other in (t.batch(8, "train", 2, 8), t.batch(7, "eval", 2, 8), t.batch(7, "train", 4, 8)):
        assert not torch.equal(a.x, other.x)


@pytest.mark.parametrize("order", [2, 3])
def test_shapes_dtypes_masks_and_latents(order):
    t = task(num_states=4, order=order, seq_length=20)
    b = t.batch(0, "train", 0, 6)
    rows = 4 ** (order - 1)
    assert b.x.shape == b.y.shape == (6, 20) and b.x.dtype == b.y.dtype == torch.long
    assert torch.equal(b.x[:, 1:], b.y[:, :-1])                                       # y is x shifted by one
    assert int(b.x.min()) >= 0 and int(b.x.max()) < 4
    assert t.masks == ("in_context", "last") and set(b.masks) == {"in_context", "last"}
    assert bool(b.masks["in_context"].all())
    assert bool(b.masks["last"][:, -1].all()) and int(b.masks["last"].sum()) == 6      # the last position only
    assert b.latents["transition"].shape == (6, rows, 4) and b.latents["transition"].dtype == torch.float64
    assert b.latents["initial"].shape == (6, rows) and b.latents["stationary"].shape == (6, 4)
    for probs in t.strategies().values():
        p = probs(b)
        assert p.shape == (6, 20, 4) and p.dtype == torch.float64
        assert float((p.sum(-1) - 1).abs().max()) < 1e-12


def test_the_registry_builds_it_and_bad_arguments_name_their_key():
    assert isinstance(make_task(MarkovArgs(task="markov")), MarkovTask)
    bad = {"num_states": 1, "order": 1, "alpha": 0.0, "seq_length": 2}
    for key, value in bad.items():
        kw = {"order": 3} if key == "seq_length" else {}
        with pytest.raises(ValueError, match=f"^data_args.{key}: "):
            MarkovTask.check(MarkovArgs(task="markov", **{**kw, key: value}))
    with pytest.raises(ValueError, match="^data_args.order: .*exceed 4096"):
        MarkovTask.check(MarkovArgs(task="markov", num_states=5, order=7))
    with pytest.raises(ValueError, match="^data_args.doubly_stochastic: only for order 2"):
        MarkovTask.check(MarkovArgs(task="markov", doubly_stochastic=True, order=3))
    with pytest.raises(ValueError, match="^data_args.alpha: doubly_stochastic needs alpha >= 1"):
        MarkovTask.check(MarkovArgs(task="markov", doubly_stochastic=True, alpha=0.5))
    with pytest.raises(ConfigError, match="^data_args.alpha: must be > 0"):
        validate(build_config(None, {"data_args.task": "markov", "data_args.alpha": -1.0}))


# -- the laws of the latent variables -------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.3, 2.5])
def test_gamma_and_dirichlet_draws_have_their_moments(alpha):
    # Gamma(alpha): mean alpha, variance alpha; n draws give a standard error sqrt(alpha / n) on the mean
    n = 100_000
    g = torch.exp(log_gamma_samples((n,), alpha, gen(1)))
    assert z_score(float(g.mean()), alpha, math.sqrt(alpha / n)) < 5
    fourth = float(((g - alpha) ** 2).var())                                      # spread of (g - alpha)^2
    assert z_score(float(((g - alpha) ** 2).mean()), alpha, math.sqrt(fourth / n)) < 5
    # Dirichlet(alpha) on N = 4: each coordinate has mean 1/4, variance (N - 1) / (N^2 (N alpha + 1))
    d = dirichlet_rows((n, 4), alpha, gen(2))
    var = 3 / (16 * (4 * alpha + 1))
    assert (d >= 0).all() and torch.allclose(d.sum(-1), torch.ones(n, dtype=torch.float64), atol=1e-12)
    for v in range(4):
        assert z_score(float(d[:, v].mean()), 0.25, math.sqrt(var / n)) < 5
        assert abs(float(d[:, v].var()) / var - 1) < 0.05                          # 5%: about 10 standard errors


@pytest.mark.parametrize("n", [2, 3, 5])
def test_doubly_stochastic_matrices_balance_rows_and_columns(n):
    t = task(num_states=n, doubly_stochastic=True)
    p = t.batch(0, "train", 0, 64).latents["transition"]
    assert (p > 0).all()
    assert float((p.sum(-1) - 1).abs().max()) < 1e-12
    assert float((p.sum(-2) - 1).abs().max()) < 1e-9


def test_the_two_state_balancing_is_the_limit_of_sinkhorn_iterations():
    p = dirichlet_rows((20, 2, 2), 1.0, gen(3))
    slow = p.clone()
    for _ in range(5000):       # plain Sinkhorn: the slowest of 4096 such draws balances in under 2000 rounds
        slow = slow / slow.sum(-2, keepdim=True)
        slow = slow / slow.sum(-1, keepdim=True)
    assert float((sinkhorn(p) - slow).abs().max()) < 1e-9


def context_matrix(p: np.ndarray, n: int, ctx: int) -> np.ndarray:
    """The (M, M) transition matrix of the chain of contexts, by explicit tuples (oldest first)."""
    tuples = list(itertools.product(range(n), repeat=ctx))
    code = lambda u: sum(tok * n ** i for i, tok in enumerate(u))   # newest most significant
    q = np.zeros((n ** ctx, n ** ctx))
    for u in tuples:
        for v in range(n):
            q[code(u), code(u[1:] + (v,))] += p[code(u), v]
    return q


@pytest.mark.parametrize("n,order", [(3, 2), (2, 3), (9, 3)])  # (9, 3): 81 contexts, power iteration
def test_the_initial_law_is_the_stationary_law_of_the_contexts(n, order):
    p = dirichlet_rows((5, n ** (order - 1), n), 1.0, gen(4))
    mu = context_stationary(p, n).numpy()
    for b in range(5):
        q = context_matrix(p[b].numpy(), n, order - 1)
        vals, vecs = np.linalg.eig(q.T)
        ref = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
        np.testing.assert_allclose(mu[b], ref / ref.sum(), atol=1e-10)


def calibration_errors(prob: np.ndarray, hit: np.ndarray, bins: int = 10) -> list[float]:
    """Per quantile bin of ``prob``: |frequency of hit - mean prob| in standard errors of the bin."""
    order = np.argsort(prob)
    out = []
    for part in np.array_split(order, bins):
        p = prob[part]
        out.append(abs(hit[part].mean() - p.mean()) / math.sqrt(max((p * (1 - p)).mean(), 1e-6) / len(part)))
    return out


@pytest.mark.parametrize("order", [2, 3])
def test_first_tokens_follow_each_sequence_s_stationary_law(order):
    # Each sequence has its own law, so marginal frequencies would not tell a stationary draw from a
    # uniform one (both average to 1/N). Binning the sequences by their probability of an event and
    # comparing its frequency in each bin (2000 sequences: a standard error <= 0.011) does: a uniform
    # draw would be off by > 0.2 in the outer bins. 6 standard errors: 20 bins never fail by chance.
    t = task(num_states=3, order=order, seq_length=order)
    b = t.batch(0, "train", 0, 20_000)
    ctx = order - 1
    code = sum(b.x[:, j] * 3 ** j for j in range(ctx)).numpy()                   # x_0 least significant
    for c in (0, 4 if ctx == 2 else 1):
        errors = calibration_errors(b.latents["initial"][:, c].numpy(), code == c)
        assert max(errors) < 6, errors
    errors = calibration_errors(b.latents["stationary"][:, 2].numpy(), b.x[:, 0].numpy() == 2)
    assert max(errors) < 6, errors


@pytest.mark.parametrize("order", [2, 3])
def test_a_long_sequence_follows_its_transition_table(order):
    t = task(num_states=3, order=order, seq_length=12_000)
    b = t.batch(1, "train", 0, 1)
    x, p = b.x[0].tolist() + [int(b.y[0, -1])], b.latents["transition"][0].numpy()
    ctx = order - 1
    counts = np.zeros_like(p)
    for s in range(ctx - 1, len(x) - 1):
        row = sum(x[s - j] * 3 ** (ctx - 1 - j) for j in range(ctx))              # newest most significant
        counts[row, x[s + 1]] += 1
    for row in range(len(p)):
        total = counts[row].sum()
        assert total > 200
        se = np.sqrt(p[row] * (1 - p[row]) / total)
        assert (np.abs(counts[row] / total - p[row]) < 5 * se + 1e-9).all(), (row, counts[row] / total, p[row])


# -- strategies, against independent computations --------------------------------------------------

def loop_ngram(x: list[int], n: int, ctx: int, alpha: float) -> np.ndarray:
    """The in-context n-gram by explicit loops: at t, count the earlier transitions out of the same context."""
    out = np.full((len(x), n), 1.0 / n)
    for t in range(ctx - 1, len(x)):
        here = tuple(x[t - ctx + 1: t + 1])
        counts = np.full(n, alpha)
        for s in range(ctx - 1, t):
            if tuple(x[s - ctx + 1: s + 1]) == here:
                counts[x[s + 1]] += 1
        out[t] = counts / counts.sum()
    return out


@pytest.mark.parametrize("n,order,alpha", [(3, 2, 1.0), (2, 3, 0.5), (4, 4, 2.0)])
def test_unigram_ngram_and_oracles_equal_explicit_loops(n, order, alpha):
    t = task(num_states=n, order=order, alpha=alpha, seq_length=40)
    b = t.batch(3, "eval", 0, 4)
    st = t.strategies()
    ngram, unigram, oracle, stationary = (st[k](b).numpy() for k in ("ngram", "unigram", "transition", "stationary"))
    ctx = order - 1
    for i in range(4):
        x = b.x[i].tolist()
        np.testing.assert_allclose(ngram[i], loop_ngram(x, n, ctx, alpha), atol=1e-12)
        for s in range(len(x)):
            counts = np.bincount(x[: s + 1], minlength=n) + alpha
            np.testing.assert_allclose(unigram[i, s], counts / counts.sum(), atol=1e-12)
        np.testing.assert_allclose(stationary[i], np.broadcast_to(b.latents["stationary"][i].numpy(), (40, n)))
        p, mu = b.latents["transition"][i].numpy(), b.latents["initial"][i].numpy()
        code = lambda u: sum(tok * n ** i for i, tok in enumerate(u))  # newest most significant
        for s in range(len(x)):
            if s >= ctx - 1:
                want = p[code(x[s - ctx + 1: s + 1])]
            else:  # inside the initial context: condition its law on the tokens seen
                want = np.zeros(n)
                for u in itertools.product(range(n), repeat=ctx):
                    if list(u[: s + 1]) == x[: s + 1]:
                        want[u[s + 1]] += mu[code(u)]
                want /= want.sum()
            np.testing.assert_allclose(oracle[i, s], want, atol=1e-12)


def beta_quadrature(alpha: float, nodes: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Nodes a in (0, 1) and weights w with sum w f(a) = E[f(a)] for a ~ Beta(alpha, alpha).

    a = sin^2(theta) turns the density a^(alpha-1) (1-a)^(alpha-1) da into 2 (sin cos)^(2 alpha - 1) d theta,
    smooth on [0, pi/2] for alpha >= 1/2, where Gauss-Legendre converges fast.
    """
    z, w = np.polynomial.legendre.leggauss(nodes)
    theta = (z + 1) * np.pi / 4
    w = w * np.pi / 4 * 2 * (np.sin(theta) * np.cos(theta)) ** (2 * alpha - 1)
    return np.sin(theta) ** 2, w / w.sum()


def posterior_predictive(x: tuple[int, ...], alpha: float, stationary_start: bool) -> np.ndarray:
    """p(x_{t+1} = 1 | x_0..x_t) at every t for N = 2, order 2, by quadrature over the two rows
    P(0 -> 1) = a, P(1 -> 0) = c, both Beta(alpha, alpha): the likelihood of the transitions, times
    the stationary probability of x_0 (c / (a + c) for state 0) when ``stationary_start``."""
    a, wa = beta_quadrature(alpha)
    A, C = np.meshgrid(a, a, indexing="ij")
    weight = np.outer(wa, wa)
    if stationary_start:
        weight = weight * (C / (A + C) if x[0] == 0 else A / (A + C))
    out = []
    for t in range(len(x)):
        if t:
            prev, nxt = x[t - 1], x[t]
            weight = weight * (((1 - A) if nxt == 0 else A) if prev == 0 else (C if nxt == 0 else 1 - C))
        p_one = (1 - C) if x[t] == 1 else A
        out.append((weight * p_one).sum() / weight.sum())
    return np.array(out)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_ngram_is_the_posterior_predictive_given_the_transitions(alpha):
    t = task(num_states=2, alpha=alpha, seq_length=6)
    seqs = torch.tensor(list(itertools.product(range(2), repeat=6)))                 # every sequence of 6 tokens
    ngram = t.strategies()["ngram"](Batch(seqs, seqs, {}))[..., 1].numpy()
    for i, x in enumerate(seqs.tolist()):
        np.testing.assert_allclose(ngram[i], posterior_predictive(tuple(x), alpha, False), atol=1e-6)


def test_the_stationary_first_token_moves_the_exact_bayes_predictor_little():
    """ngram ignores the evidence about P in the stationary draw of x_0. On N = 2, T = 6, alpha = 1,
    the exact expected excess loss this costs (the expected KL from the full posterior to ngram,
    weighted by each sequence's probability under the process) is measured here; it bounds by how
    much any predictor, a trained model included, can beat ngram on this task."""
    t = task(num_states=2, alpha=1.0, seq_length=6)
    seqs = torch.tensor(list(itertools.product(range(2), repeat=7)))
    ngram = t.strategies()["ngram"](Batch(seqs[:, :-1], seqs[:, 1:], {}))[..., 1].numpy()
    a, wa = beta_quadrature(1.0)
    A, C = np.meshgrid(a, a, indexing="ij")
    weight0 = np.outer(wa, wa)
    excess, mass = np.zeros(6), 0.0
    for i, z in enumerate(seqs.tolist()):
        # the probability of z under the process: E[ pi(z_0) prod P(z_s -> z_{s+1}) ]
        lik = weight0 * (C / (A + C) if z[0] == 0 else A / (A + C))
        for s in range(6):
            lik = lik * (((1 - A) if z[s + 1] == 0 else A) if z[s] == 0 else (C if z[s + 1] == 0 else 1 - C))
        prob = lik.sum()
        mass += prob
        full = posterior_predictive(tuple(z[:6]), 1.0, True)
        for s in range(6):
            p, q = (full[s], ngram[i, s]) if z[s + 1] == 1 else (1 - full[s], 1 - ngram[i, s])
            excess[s] += prob * (math.log(p) - math.log(q))                          # E[log full - log ngram] = E[KL]
    assert abs(mass - 1) < 1e-9
    assert (excess > 0).all()                                                       # the full posterior is better ...
    # ... by under 0.02 nats (0.0166 at t = 0)
    assert excess.max() < 0.02
    assert (np.diff(excess) < 0).all()                                              # and less so later in the context


def test_floors_and_info():
    t = task(seq_length=100)
    floors = t.floors()
    assert floors == t.floors()                                                    # a fixed batch
    assert 0 < floors["floor_loss_in_context"] < math.log(3) == floors["nocontext_loss_in_context"]
    assert t.info()["order"] == 2 and t.info()["vocab"] == ["0", "1", "2"]


# -- a trained model never beats the Bayes strategy beyond sampling noise ------------------------------

@pytest.mark.slow
def test_a_trained_model_approaches_but_does_not_beat_ngram(tmp_path):
    from birth.training.build import trained_setup
    from birth.training.loop import train
    from birth.training.validation import resolve_config
    cfg = resolve_config("markov-quick", {"max_iters": 300, "seed": 100, "init_seed": 100, "eval_seed": 100})
    train(cfg, tmp_path / "run", quiet=True)
    setup = trained_setup(tmp_path / "run")
    b = setup.eval_batches()["eval"]
    with torch.no_grad():
        logits = setup.model(b.x)
    model_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b.y.flatten(), reduction="none")
    model_loss = model_loss.view_as(b.y).double()
    st = setup.task.strategies()
    loss = {k: -torch.log(st[k](b).gather(-1, b.y[..., None]).squeeze(-1)) for k in ("ngram", "unigram")}
    # per-sequence means of the paired difference: positions of one sequence share its matrix, sequences are i.i.d.
    diff = (model_loss - loss["ngram"]).mean(1)
    se = float(diff.std() / math.sqrt(len(diff)))
    assert float(diff.mean()) > -4 * se, (float(diff.mean()), se)                  # not below Bayes
    assert float(model_loss.mean()) < float(loss["unigram"].mean()) - 0.03          # and it learned
