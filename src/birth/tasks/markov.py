"""In-context Markov chains (Edelman et al. 2024, "The evolution of statistical induction heads").

Each sequence draws its own transition table P: one row per context u of n - 1 tokens (order n;
n = 2 is a Markov chain on N states), from the prior ``data_args.prior``:

- ``dirichlet``: each row i.i.d. Dirichlet(alpha) (with the legacy ``doubly_stochastic`` flag, the
  rows then balanced by Sinkhorn: doubly stochastic, but not uniform on the Birkhoff polytope);
- ``doubly-stochastic`` (order 2): an N x N matrix uniform on the Birkhoff polytope, by rejection
  (``birkhoff_rejection``) up to N = REJECTION_MAX_STATES, Sinkhorn-balanced Dirichlet(1) rows
  beyond (not uniform above N = 6); alpha is not used. The stationary law is uniform: the in-context
  unigram is no better than uniform;
- ``unigram-optimal``: every row the same Dirichlet(alpha) draw p, so the tokens are i.i.d. from p
  (Edelman et al.'s ``unigram`` data) and the in-context unigram is the Bayes predictor.

``data_args.mixture`` = PRIOR:SHARE draws the last round(B * SHARE) sequences of each *training*
batch from a second prior (Edelman et al.'s controlled experiment: 75% doubly-stochastic + 25%
unigram-optimal); the other streams (eval, test, floors) are never mixed. The first n - 1 tokens
come from the stationary law of the chain of contexts, then x_{t+1} ~ P(. | x_{t-n+2..t}). Every
target is predicted from in-context statistics: the mask ``in_context`` is every position, ``last``
the last position only (where Edelman et al. evaluate).

Rows are indexed by ``strategies.context_codes``: the newest token is the most significant digit,
u = sum_j x_{t-j} N^(n-2-j). Sampling is vectorised over the batch (a few tensor ops per
position), and batch i of a stream is a pure function of (seed, stream, i) on a given device:
every random number comes from the stream's generator, the Dirichlet rows included (Marsaglia and
Tsang's Gamma sampler on torch.randn/rand, since torch's own Gamma takes no generator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from birth.fields import documented as _f
from birth.measures import strategies as S
from birth.tasks import register
from birth.tasks.base import Batch, Task, TaskArgs, stream_generator

MAX_ROWS = 4096              # N^(n-1): rows of a transition table
DENSE_STATIONARY = 64        # contexts up to which the stationary law is an exact linear solve
POWER_TOL, POWER_ITERS = 1e-13, 100_000   # beyond: power iteration to this L1 change
SINKHORN_TOL, SINKHORN_ITERS = 1e-9, 10_000

PRIORS = ("dirichlet", "doubly-stochastic", "unigram-optimal")
# Uniform doubly-stochastic matrices by rejection (``birkhoff_rejection``). A block uniform in
# [0, 1)^((N-1) x (N-1)) is accepted with probability the polytope's volume; measured on 2^20 x 20
# blocks (N = 5: 10^8): N = 2: 1, 3: 0.1249 (1/8), 4: 9.65e-4 (11/11340), 5: 2.2e-7 (unaffordable).
# Drawing each row of the block uniform on {x >= 0, sum x < 1} instead (the uniform block given its
# row sums < 1: the same law after rejection) multiplies these by ((N-1)!)^(N-1). Measured on
# 2^22 blocks (2^20 x 10 up to N = 5): N = 3: 0.4998 (1/2), 4: 0.2096 (0.2095), 5: 0.0747,
# 6: 0.0235, 7: 0.0066, 8: 0.0017; on one CPU thread a matrix costs 0.8 us at N = 3, 10 us at
# N = 5, 70 us at N = 6, 420 us at N = 7. Rejection up to N = 6 (under 5 ms per batch of 64);
# beyond, Sinkhorn-balanced Dirichlet(1) rows (not uniform).
REJECTION_MAX_STATES = 6
BIRKHOFF_ACCEPTANCE = {2: 1.0, 3: 0.5, 4: 0.2095, 5: 0.0747, 6: 0.0235}   # sizes the rounds only
REJECTION_NUMBERS = 1 << 22   # random numbers drawn per round at most: bounds the memory (32 MB)


@dataclass
class MarkovArgs(TaskArgs):
    """The data of the in-context Markov chains task (``data_args.task=markov``)."""

    num_states: int = _f(3, "markov: number of states N (the tokens)")
    alpha: float = _f(1.0, "markov: Dirichlet concentration of each transition row (1: uniform on the simplex); "
                           "also the pseudo-count of the unigram and ngram strategies")
    order: int = _f(2, "markov: n-gram order n, each context of n-1 tokens has its own row (2: a Markov chain)")
    doubly_stochastic: bool = _f(False, "markov: legacy (kept for old runs; prefer prior=doubly-stochastic): "
                                        "Sinkhorn-balanced Dirichlet rows, doubly stochastic but not uniform on "
                                        "the Birkhoff polytope; prior=dirichlet and order 2 only")
    prior: str = _f("dirichlet", "markov: the prior of each sequence's table: dirichlet (i.i.d. Dirichlet(alpha) "
                                 "rows), doubly-stochastic (order 2: uniform on the Birkhoff polytope by rejection "
                                 f"up to N = {REJECTION_MAX_STATES}, Sinkhorn-balanced Dirichlet(1) rows above, "
                                 "not uniform there; alpha unused) or unigram-optimal (every row one "
                                 "Dirichlet(alpha) draw p: i.i.d. tokens from p)", choices=PRIORS)
    mixture: str = _f("", "markov: PRIOR:SHARE (e.g. unigram-optimal:0.25): the last round(B*SHARE) sequences "
                          "of every training batch from PRIOR (Python's round: 0 or B rows on a batch too small "
                          "are allowed); evaluation streams are never mixed; '' (default): none")


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
    the Birkhoff polytope (Edelman et al. used rejection sampling for N <= 5 and the same Sinkhorn
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


def complete_doubly_stochastic(block: torch.Tensor) -> torch.Tensor:
    """The N x N matrices (B, N, N) whose top-left (N-1) x (N-1) blocks are ``block`` and whose rows
    and columns sum to one: last column 1 - row sums, last row 1 - column sums, and the corner
    1 - (the last row's sum) = sum(block) - (N - 2)."""
    b, m, _ = block.shape
    out = block.new_empty(b, m + 1, m + 1)
    out[:, :m, :m] = block
    out[:, :m, m] = 1 - block.sum(-1)
    out[:, m, :m] = 1 - block.sum(-2)
    out[:, m, m] = block.sum((-1, -2)) - (m - 1)
    return out


def corner_simplex(shape: tuple[int, ...], m: int, gen: torch.Generator) -> torch.Tensor:
    """Points (*shape, m) uniform on {x >= 0, sum x < 1}: the first m coordinates of a Dirichlet(1)
    draw on m + 1 (normalised exponentials), float64."""
    e = torch.empty(*shape, m + 1, dtype=torch.float64, device=gen.device).exponential_(generator=gen)
    return (e / e.sum(-1, keepdim=True))[..., :m]


def birkhoff_rejection(batch_size: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``batch_size`` N x N doubly-stochastic matrices (B, N, N) float64, uniform on the Birkhoff
    polytope (w.r.t. Lebesgue measure on its (N-1)^2 free coordinates), a pure function of the
    generator; N <= REJECTION_MAX_STATES.

    Edelman et al.'s rejection: a block uniform in [0, 1)^((N-1) x (N-1)) is kept iff its completion
    (``complete_doubly_stochastic``) is non-negative, i.e. every partial row and column sum < 1 and
    the corner sum - (N - 2) > 0; the completion is affine and one-to-one, so the kept matrices are
    uniform on the polytope. Here each row of the block is drawn uniform on {x >= 0, sum x < 1}
    (``corner_simplex``): that is the uniform block given its row sums < 1, so only the column and
    corner conditions are left to reject on, ((N-1)!)^(N-1) times less often (BIRKHOFF_ACCEPTANCE).
    Each round draws about 1.25x the blocks still needed over the acceptance rate and keeps the
    first accepted ones in draw order (still i.i.d.).
    """
    m, rate = n - 1, BIRKHOFF_ACCEPTANCE[n]
    kept = [torch.empty(0, m, m, dtype=torch.float64, device=gen.device)]
    need = batch_size
    while need > 0:
        draws = min(REJECTION_NUMBERS // (m * n), math.ceil(1.25 * need / rate) + 16)
        block = corner_simplex((draws, m), m, gen)                                    # rows sum below 1
        ok = (block.sum(-2) < 1).all(-1) & (block.sum((-1, -2)) > m - 1)
        kept.append(block[ok][:need])
        need -= len(kept[-1])
    return complete_doubly_stochastic(torch.cat(kept))


def doubly_stochastic_matrices(batch_size: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """The ``doubly-stochastic`` prior: uniform on the Birkhoff polytope up to REJECTION_MAX_STATES
    states; beyond (not uniform above N = 6), where rejection grows too slow, Sinkhorn-balanced
    Dirichlet(1) rows, as Edelman et al. do above N = 5."""
    if n <= REJECTION_MAX_STATES:
        return birkhoff_rejection(batch_size, n, gen)
    return sinkhorn(dirichlet_rows((batch_size, n, n), 1.0, gen))


def unigram_optimal_tables(batch_size: int, rows: int, n: int, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """The ``unigram-optimal`` prior: every row of a sequence's table (B, rows, N) the same
    Dirichlet(alpha) draw p, so that its tokens are i.i.d. from p."""
    return dirichlet_rows((batch_size, 1, n), alpha, gen).expand(batch_size, rows, n).contiguous()


def parse_mixture(text: str) -> Optional[tuple[str, float]]:
    """``data_args.mixture``: 'PRIOR:SHARE' -> (PRIOR, SHARE); '' -> None; a bad one: ValueError, one
    line naming the key."""
    if not text:
        return None
    prior, colon, share = text.rpartition(":")
    if not colon:
        raise ValueError(f"data_args.mixture: expected PRIOR:SHARE (e.g. unigram-optimal:0.25), got {text!r}")
    if prior not in PRIORS:
        raise ValueError(f"data_args.mixture: unknown prior {prior!r} in {text!r} (one of {', '.join(PRIORS)})")
    try:
        value = float(share)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise ValueError(f"data_args.mixture: the share must be a number in (0, 1), got {share!r} in {text!r}")
    return prior, value


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
    law of single tokens; all three computed from the one table of each sequence, mixed batches
    included. Masks: ``in_context`` (every position) and ``last`` (the last position).
    """

    name = "markov"
    vocab_key = "data_args.num_states"  # what sets N
    stack_keys = ("seq_length", "num_states")  # a stack's batches: one shape, one vocabulary
    Args = MarkovArgs
    masks = ("in_context", "last")
    reference_strategies = ("ngram", "unigram", "uniform")

    def __init__(self, args: MarkovArgs, device: torch.device | str = "cpu"):
        super().__init__(args, device)
        self.n, self.context = args.num_states, args.order - 1
        self.rows = self.n ** self.context
        self.mixture = parse_mixture(args.mixture)
        if args.prior == "unigram-optimal":   # the first reference strategy is the Bayes predictor
            self.reference_strategies = ("unigram", "ngram", "uniform")

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
        require(d.prior in PRIORS, f"data_args.prior: expected one of {', '.join(PRIORS)}, got {d.prior!r}")
        mixture = parse_mixture(d.mixture)
        require(not d.doubly_stochastic or d.prior == "dirichlet",
                f"data_args.doubly_stochastic: the legacy Sinkhorn flag goes with data_args.prior=dirichlet only, "
                f"got data_args.prior={d.prior} (drop data_args.doubly_stochastic)")
        require(not d.doubly_stochastic or mixture is None,
                f"data_args.doubly_stochastic: the legacy flag cannot be mixed (data_args.mixture={d.mixture}); "
                f"use data_args.prior=doubly-stochastic")
        for key, prior in (("prior", d.prior), ("mixture", mixture and mixture[0])):
            require(prior != "doubly-stochastic" or d.order == 2,
                    f"data_args.{key}: doubly-stochastic only for order 2 (a square matrix), got order={d.order}")
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
        info = {**super().info(), "num_states": d.num_states, "order": d.order, "alpha": d.alpha,
                "doubly_stochastic": d.doubly_stochastic, "prior": d.prior,
                "mixture": self.mixture and {"prior": self.mixture[0], "share": self.mixture[1], "streams": ["train"]}}
        if "doubly-stochastic" in (d.prior, self.mixture and self.mixture[0]):
            info["doubly_stochastic_sampler"] = ("uniform on the Birkhoff polytope (rejection)"
                                                 if d.num_states <= REJECTION_MAX_STATES
                                                 else "Sinkhorn-balanced Dirichlet(1) rows (not uniform)")
        return info

    # -- sampling -------------------------------------------------------------------------------
    def mixed_rows(self, batch_size: int, stream: str) -> int:
        """How many sequences of a batch of ``stream`` come from the mixture's prior: round(B * SHARE)
        in the training stream, none elsewhere (evaluation is on the prior's chains)."""
        return round(batch_size * self.mixture[1]) if self.mixture and stream == "train" else 0

    def batch(self, seed: int, stream: str, index: int, batch_size: int) -> Batch:
        gen = stream_generator(seed, stream, index, self.device)
        return self.sample(batch_size, gen, self.mixed_rows(batch_size, stream))

    def tables(self, prior: str, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """``batch_size`` transition tables of ``prior``, (B, N^(n-1), N) float64, rows summing to one."""
        if prior == "doubly-stochastic":
            return doubly_stochastic_matrices(batch_size, self.n, gen)
        if prior == "unigram-optimal":
            return unigram_optimal_tables(batch_size, self.rows, self.n, self.args.alpha, gen)
        p = dirichlet_rows((batch_size, self.rows, self.n), self.args.alpha, gen)
        return sinkhorn(p) if self.args.doubly_stochastic else p     # legacy: balanced Dirichlet rows

    def transitions(self, batch_size: int, gen: torch.Generator, mixed: int = 0) -> torch.Tensor:
        """A transition table per sequence, (B, N^(n-1), N) float64: the first B - ``mixed`` from the
        prior, then ``mixed`` from the mixture's (no draw at all for an unmixed part, so that an
        unmixed batch takes the same random numbers as before the mixture existed)."""
        p = self.tables(self.args.prior, batch_size - mixed, gen)
        return torch.cat([p, self.tables(self.mixture[0], mixed, gen)]) if mixed else p

    def sample(self, batch_size: int, gen: torch.Generator, mixed: int = 0) -> Batch:
        """T + 1 tokens per sequence: the first n - 1 from ``initial``, then the chain; x, y = z[:-1], z[1:].
        The last ``mixed`` sequences from the mixture's prior (``batch`` sets it for the training stream)."""
        b, n, ctx, dev = batch_size, self.n, self.context, self.device
        length = self.args.seq_length + 1
        p = self.transitions(b, gen, mixed)                                           # (B, M, N)
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
        last = torch.zeros_like(x, dtype=torch.bool)
        last[:, -1] = True
        return Batch(x, y, {"in_context": torch.ones_like(x, dtype=torch.bool), "last": last},
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
          prior it is not the exact Bayes predictor (the rows are then not independent Dirichlets).
          Under ``unigram-optimal`` it is consistent but wasteful (it learns each row apart from
          the others, which are all the same p): there ``unigram`` is the exact Bayes predictor,
          the Dirichlet(alpha) posterior mean of i.i.d. tokens (the first ones included, since they
          are drawn from p too), and it leads ``reference_strategies``. On a mixed training batch
          no strategy is Bayes for every sequence (the evaluation batches are never mixed);
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
        """On a fixed batch of 1024 sequences of the prior (never mixed), per mask:
        ``floor_loss_<mask>``, the expected loss of the ``transition`` oracle (the entropy rate, plus
        the entropy of the initial context), and ``nocontext_loss_<mask>`` = log N (every prior is
        symmetric in the states, so the prior predictive is uniform)."""
        batch = self.batch(0, "floors", 0, 1024)
        entropy = S.entropy(self.oracle(batch))
        out = {}
        for mask in self.masks:
            out[f"floor_loss_{mask}"] = float(entropy[batch.masks[mask]].mean())
            out[f"nocontext_loss_{mask}"] = math.log(self.n)
        return {**out, "chance_acc": 1.0 / self.n}

