"""In-context Markov chains (Edelman et al. 2024, "The evolution of statistical induction heads").

Each sequence draws its own transition table P: one row per context u of n - 1 tokens (order n;
n = 2 is a Markov chain on N states), each row drawn from Dirichlet(alpha), or, with
``doubly_stochastic``, an N x N matrix whose columns also sum to one (uniform stationary law: the
in-context unigram is then no better than uniform). The first n - 1 tokens come from the
stationary law of the chain of contexts, then x_{t+1} ~ P(. | x_{t-n+2..t}). Every target is
predicted from in-context statistics, so the one mask is ``in_context`` (every position).

Rows are indexed by ``strategies.context_codes``: the newest token is the most significant digit,
u = sum_j x_{t-j} N^(n-2-j). Sampling is vectorised over the batch (a few tensor ops per
position), and batch i of a stream is a pure function of (seed, stream, i) on a given device:
every random number comes from the stream's generator, the Dirichlet rows included (Marsaglia and
Tsang's Gamma sampler on torch.randn/rand, since torch's own Gamma takes no generator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from birth.fields import documented as _f
from birth.measures import strategies as S
from birth.tasks import register
from birth.tasks.base import Batch, Task, TaskArgs

MAX_ROWS = 4096              # N^(n-1): rows of a transition table
DENSE_STATIONARY = 64        # contexts up to which the stationary law is an exact linear solve
POWER_TOL, POWER_ITERS = 1e-13, 100_000   # beyond: power iteration to this L1 change
SINKHORN_TOL, SINKHORN_ITERS = 1e-9, 10_000


@dataclass
class MarkovArgs(TaskArgs):
    """The data of the in-context Markov chains task (``data_args.task=markov``)."""

    num_states: int = _f(3, "markov: number of states N (the tokens)")
    alpha: float = _f(1.0, "markov: Dirichlet concentration of each transition row (1: uniform on the simplex); "
                           "also the pseudo-count of the unigram and ngram strategies")
    order: int = _f(2, "markov: n-gram order n, each context of n-1 tokens has its own row (2: a Markov chain)")
    doubly_stochastic: bool = _f(False, "markov: doubly-stochastic transition matrices (Sinkhorn-balanced "
                                        "Dirichlet rows): uniform stationary law, no unigram shortcut; order 2 only")


def log_gamma_samples(shape: tuple[int, ...], alpha: float, gen: torch.Generator) -> torch.Tensor:
    """log G for G ~ Gamma(alpha, 1), float64 of ``shape``, a pure function of the generator.

    Marsaglia and Tsang (2000) for a >= 1: with d = a - 1/3, c = 1/sqrt(9d), x ~ N(0, 1), u ~ U(0, 1)
    and v = (1 + cx)^3, accept d v when v > 0 and log u < x^2/2 + d - d v + d log v (exact, not an
    approximation; over 95% accepted, so a few rounds of full-size draws fill every entry). For
    alpha < 1, Gamma(alpha) = Gamma(alpha + 1) U^(1/alpha), kept in logs so that tiny alphas do not
    underflow to all-zero rows.
    """
    dev = gen.device
    a = alpha if alpha >= 1 else alpha + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(shape, dtype=torch.float64, device=dev)
    pending = torch.ones(shape, dtype=torch.bool, device=dev)
    while bool(pending.any()):
        x = torch.randn(shape, dtype=torch.float64, device=dev, generator=gen)
        u = torch.rand(shape, dtype=torch.float64, device=dev, generator=gen)
        v = (1 + c * x) ** 3
        log_v = torch.log(v.clamp(min=1e-300))
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
        take = pending & ok
        out[take] = math.log(d) + log_v[take]
        pending &= ~ok
    if alpha < 1:
        out += torch.log(torch.rand(shape, dtype=torch.float64, device=dev, generator=gen)) / alpha
    return out


def dirichlet_rows(shape: tuple[int, ...], alpha: float, gen: torch.Generator) -> torch.Tensor:
    """Rows (..., N) drawn i.i.d. from the symmetric Dirichlet(alpha): normalised Gamma draws."""
    return torch.softmax(log_gamma_samples(shape, alpha, gen), -1)


def sinkhorn(p: torch.Tensor) -> torch.Tensor:
    """The doubly-stochastic scaling D1 p D2 of positive matrices p (B, N, N), the limit of
    Sinkhorn's balancing, with every column summing to 1 within SINKHORN_TOL (rows to rounding).

    Applied to Dirichlet rows this gives a doubly-stochastic matrix, but *not* the uniform law on
    the Birkhoff polytope (Edelman et al. used rejection sampling for N <= 4 and the same Sinkhorn
    balancing beyond). For N = 2 the limit is closed-form: scaling keeps the cross-ratio
    r = p01 p10 / (p00 p11), and [[1-a, a], [a, 1-a]] has r = a^2 / (1-a)^2. For N >= 3, column then
    row normalisation, each round on the matrices not yet balanced only (at alpha >= 1 the slowest
    of 65536 3 x 3 draws needs under 300 rounds).
    """
    if p.shape[-1] == 2:
        root = torch.sqrt(p[:, 0, 1] * p[:, 1, 0] / (p[:, 0, 0] * p[:, 1, 1]))
        a = root / (1 + root)
        return torch.stack([torch.stack([1 - a, a], -1), torch.stack([a, 1 - a], -1)], -2)
    p = p.clone()
    pending, index = p, torch.arange(len(p), device=p.device)
    for _ in range(SINKHORN_ITERS):
        open_ = (pending.sum(-2) - 1).abs().amax(-1) > SINKHORN_TOL
        if not bool(open_.any()):
            return p
        pending, index = pending[open_], index[open_]
        pending = pending / pending.sum(-2, keepdim=True)
        pending = pending / pending.sum(-1, keepdim=True)
        p[index] = pending
    raise RuntimeError(f"data_args.doubly_stochastic: Sinkhorn did not balance in {SINKHORN_ITERS} rounds")


def context_step(mu: torch.Tensor, p: torch.Tensor, n: int) -> torch.Tensor:
    """One step of the chain of contexts: the law (B, M) of the context u = (x_{t-n+2..t}) -> the law
    of the next one. u = q N + r (r the oldest token) moves to v N^(n-2) + q with probability p[u, v]."""
    b, m = mu.shape
    nxt = torch.einsum("bqr,bqrv->bvq", mu.view(b, m // n, n), p.view(b, m // n, n, n))
    return nxt.reshape(b, m)


def context_stationary(p: torch.Tensor, n: int) -> torch.Tensor:
    """The stationary law (B, M) of the chain of contexts of a table ``p`` (B, M, N), M = N^(n-1).

    Up to DENSE_STATIONARY contexts it is exact: the solution of mu Q = mu, sum(mu) = 1, with Q the
    (M, M) context transition matrix (for order 2, Q = P). Beyond, power iteration from the uniform
    law until an L1 change below POWER_TOL (Dirichlet rows are positive, so the chain is ergodic).
    """
    b, m, _ = p.shape
    if m <= DENSE_STATIONARY:
        codes = torch.arange(m, device=p.device)
        nxt = codes[:, None] // n + torch.arange(n, device=p.device)[None, :] * (m // n)   # (M, N): the next context
        q = torch.zeros(b, m, m, dtype=p.dtype, device=p.device)
        q.scatter_add_(2, nxt.expand(b, m, n), p)
        a = q.transpose(1, 2) - torch.eye(m, dtype=p.dtype, device=p.device)               # (Q^T - I) mu = 0
        a[:, -1, :] = 1.0                                                                   # one equation -> sum = 1
        rhs = torch.zeros(b, m, 1, dtype=p.dtype, device=p.device)
        rhs[:, -1] = 1.0
        return torch.linalg.solve(a, rhs).squeeze(-1).clamp(min=0)
    mu = torch.full((b, m), 1.0 / m, dtype=p.dtype, device=p.device)
    for _ in range(POWER_ITERS):
        nxt = context_step(mu, p, n)
        done = float((nxt - mu).abs().sum(-1).max()) < POWER_TOL
        mu = nxt
        if done:
            break
    return mu


def _cdf(p: torch.Tensor) -> torch.Tensor:
    """Cumulative sums of the last axis, the last entry forced to 1 (a uniform u < 1 always lands)."""
    cdf = p.cumsum(-1)
    cdf[..., -1] = 1.0
    return cdf


@register
class MarkovTask(Task):
    """In-context Markov chains and n-grams, a fresh transition table per sequence (module docstring).

    Latents: ``transition`` (B, N^(n-1), N), ``initial`` (B, N^(n-1)) the law of the first n - 1
    tokens (the stationary law of the contexts) and ``stationary`` (B, N) the chain's stationary
    law of single tokens.
    """

    name = "markov"
    vocab_key = "data_args.num_states"  # what sets N
    stack_keys = ("seq_length", "num_states")  # a stack's batches: one shape, one vocabulary
    Args = MarkovArgs
    masks = ("in_context",)
    reference_strategies = ("ngram", "unigram", "uniform")

    def __init__(self, args: MarkovArgs, device: torch.device | str = "cpu"):
        super().__init__(args, device)
        self.n, self.context = args.num_states, args.order - 1
        self.rows = self.n ** self.context

    @classmethod
    def check(cls, d: MarkovArgs, *, loss_head_only: bool = False) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)
        require(d.num_states >= 2, f"data_args.num_states: must be >= 2, got {d.num_states}")
        require(d.order >= 2, f"data_args.order: must be >= 2 (2 = a Markov chain), got {d.order}")
        require(d.num_states ** (d.order - 1) <= MAX_ROWS,
                f"data_args.order: num_states^(order-1) = {d.num_states}^{d.order - 1} rows exceed {MAX_ROWS}")
        require(d.alpha > 0, f"data_args.alpha: must be > 0, got {d.alpha}")
        require(d.seq_length >= d.order, f"data_args.seq_length: must be >= data_args.order={d.order}, "
                                         f"got {d.seq_length}")
        require(not d.doubly_stochastic or d.order == 2,
                f"data_args.doubly_stochastic: only for order 2 (a square matrix), got order={d.order}")
        require(not d.doubly_stochastic or d.alpha >= 1,
                f"data_args.alpha: doubly_stochastic needs alpha >= 1 (Sinkhorn balancing of near-sparse rows "
                f"takes too long), got {d.alpha}")

    @property
    def num_tokens(self) -> int:
        return self.n

    def info(self) -> dict:
        d = self.args
        return {**super().info(), "num_states": d.num_states, "order": d.order, "alpha": d.alpha,
                "doubly_stochastic": d.doubly_stochastic}

    # -- sampling -------------------------------------------------------------------------------
    def transitions(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """A transition table per sequence, (B, N^(n-1), N) float64, rows summing to one."""
        p = dirichlet_rows((batch_size, self.rows, self.n), self.args.alpha, gen)
        return sinkhorn(p) if self.args.doubly_stochastic else p

    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        """T + 1 tokens per sequence: the first n - 1 from ``initial``, then the chain; x, y = z[:-1], z[1:]."""
        b, n, ctx, dev = batch_size, self.n, self.context, self.device
        length = self.args.seq_length + 1
        p = self.transitions(b, gen)                                                  # (B, M, N)
        initial = context_stationary(p, n)                                            # (B, M)
        u = torch.rand(length - ctx + 1, b, 1, dtype=torch.float64, device=dev, generator=gen)
        code = torch.searchsorted(_cdf(initial), u[0], right=True).squeeze(-1).clamp(max=self.rows - 1)
        z = torch.empty(b, length, dtype=torch.long, device=dev)
        for j in range(ctx):                                                          # digit j of the code is x_j
            z[:, j] = code // n ** j % n
        cdf = _cdf(p).view(b * self.rows, n)
        row_start = torch.arange(b, device=dev) * self.rows
        top = n ** (ctx - 1)
        for t in range(ctx, length):
            tok = torch.searchsorted(cdf[row_start + code], u[t - ctx + 1], right=True).squeeze(-1).clamp(max=n - 1)
            z[:, t] = tok
            code = code // n + tok * top                                              # drop the oldest, add tok
        x, y = z[:, :-1], z[:, 1:]
        stationary = initial.view(b, n, -1).sum(-1)                                   # marginal of the newest token
        return Batch(x, y, {"in_context": torch.ones_like(x, dtype=torch.bool)},
                     {"transition": p, "initial": initial, "stationary": stationary})

    # -- strategies -----------------------------------------------------------------------------
    def strategies(self) -> dict:
        """Each batch -> (B, T, N) float64 probabilities of y_t given x_1..x_t:

        - ``uniform``: 1/N;
        - ``unigram``: the in-context unigram (c_v + alpha) / (t + N alpha) (Edelman et al.'s, with
          pseudo-count alpha instead of 1);
        - ``ngram``: the in-context n-gram with pseudo-count alpha, the Dirichlet(alpha) posterior
          mean of the current context's row given the transitions seen (uniform until n - 1 tokens
          are seen). This is the Bayes predictor given the transitions; it ignores the (weak)
          evidence about P in the stationary-distributed first tokens, as Edelman et al. do
          (tests/test_tasks_markov.py measures that gap by quadrature). Under the doubly-stochastic
          prior it is not the exact Bayes predictor (the rows are then not independent Dirichlets);
        - ``stationary``: the chain's true stationary law (an oracle unigram);
        - ``transition``: the true row P(. | context) (an oracle: the loss floor); within the
          first n - 1 tokens, the true conditional law of the initial context.
        """
        n, a = self.n, self.args.alpha
        return {"uniform": lambda b: S.uniform(b.x, n),
                "unigram": lambda b: S.context_unigram(b.x, n, a),
                "ngram": lambda b: S.context_ngram(b.x, n, self.args.order, a),
                "stationary": lambda b: b.latents["stationary"][:, None, :].expand(-1, b.x.shape[1], -1).clone(),
                "transition": self.oracle}

    def oracle(self, b: Batch) -> torch.Tensor:
        """The true law of y_t given x_1..x_t and the sequence's table (``transition`` strategy)."""
        n, ctx, (bs, t) = self.n, self.context, b.x.shape
        code, _ = S.context_codes(b.x, n, ctx)
        p = b.latents["transition"]
        probs = p.gather(1, code[..., None].expand(-1, -1, n))                        # (B, T, N): rows of the codes
        # y_s is x_{s+1} of the initial context
        for s in range(min(ctx - 1, t)):
            # law of (x_{s+1}, x_s, ..., x_0): sum the initial law over the older digits x_{s+2..}
            joint = b.latents["initial"].view(bs, -1, n ** (s + 2)).sum(1).view(bs, n, n ** (s + 1))
            prefix = sum(b.x[:, i] * n ** i for i in range(s + 1))                    # (B,): x_0..x_s
            rows = joint.gather(2, prefix.view(bs, 1, 1).expand(-1, n, 1)).squeeze(-1)   # (B, N)
            probs[:, s] = rows / rows.sum(-1, keepdim=True)
        return probs

    def floors(self) -> dict[str, float]:
        """On a fixed batch of 1024 sequences: ``floor_loss_in_context``, the expected loss of the
        ``transition`` oracle (the entropy rate, plus the entropy of the initial context), and
        ``nocontext_loss_in_context`` = log N (the prior predictive is uniform by symmetry)."""
        batch = self.batch(0, "floors", 0, 1024)
        return {"floor_loss_in_context": float(S.entropy(self.oracle(batch)).mean()),
                "nocontext_loss_in_context": math.log(self.n), "chance_acc": 1.0 / self.n}

