"""Theorem 3 (SPEC §3.4), run: three top-down population-gradient steps from zero build an induction head.

The model is ``birth.model.transformer.Transformer(arch='simplified', zero_init=True, frozen embeddings and W_U)``;
W_O2, W_K2 and W_K1 start at zero and receive one step each, on the in-context loss (cross-entropy on
outs >= 2), in a given order. Each gradient is a large-batch estimate of the population gradient.

Exact evaluation in embedding coordinates. With frozen w_E, p_t, W_V1, W_O1, W_V2, W_U, every
layer-1 residual vector is a combination of 2(N+T) fixed vectors B = [w_E(.), p_., W_O1 W_V1 w_E(.),
W_O1 W_V1 p_.]: x_t has coordinates [onehot(z_t), e_t, 0, 0] and h1_t = [onehot(z_t), e_t, A1_t oh,
A1_t]. The trained d x d matrices then enter only through

    M1 = X W_K1 X^T / sqrt(d)   (X = first N+T rows of B)       layer-1 scores  c_x M1 c_x^T
    M2 = B W_K2 B^T / sqrt(d)                                  layer-2 scores  c M2 c^T
    L2 = B W_V2^T W_O2^T W_U^T                                 logits          c B W_U^T + A2 c L2

so a forward pass costs O(T^2 (N+T)) per sequence at any width; autograd through (M1, M2, L2) gives
exactly the model's gradients (tests compare both with the model itself). This is what makes
population gradients over thousands of sequences affordable at d = 1024 on a CPU. The loss reads
the in-context targets only (about 1 position in 6), so layer 2 is evaluated there only
(``ReducedModel.target_logits``); in the idealised model layer-1 attention reads positions only,
the same for every sequence, and the whole pass is a few (M, T) and (M, N) products.

``ideal=True`` is the idealised model of the theory [R]: each trained matrix reads only its designated
components (W_K1: positions with positions; W_K2: query tokens with remapped keys w_1; W_O2: token
values), implemented by masking the blocks of M1, M2, L2 (finite-d cross-talk inside them is kept).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birth.model.args import ModelArgs
from birth.tasks.triggers.task import DataArgs
from birth.tasks.triggers.corpus import CorpusStats, bundled_stats
from birth.tasks.triggers import probes
from birth.model.transformer import Transformer
from birth.tasks.triggers.task import TriggerBatch as Batch, TriggersTask

TOP_DOWN = ("W_O2", "W_K2", "W_K1")


@dataclass
class ThreeStepConfig:
    """Everything that defines one three-step run; every Theorem 3 choice is a field."""
    dim: int = 256
    seq_length: int = 64                  # T (short for CPU speed; the paper uses 256)
    k: int = 3                            # number of triggers K
    fixed_triggers: bool = True           # the K most frequent tokens (else random per sequence)
    no_repeat: bool = True                # forbid output == trigger (removes self-loop sequences, SPEC §1.4)
    corpus: str = "shakespeare"           # 'shakespeare' (bundled pi_u, pi_b) or 'uniform' (i.i.d. tokens)
    sqrtd_embeddings: bool = True         # variance-1/d embeddings: logits start near 0, as in the theory
    ideal: bool = False                   # idealised components (see module docstring)
    n_seqs: int = 4096                    # sequences in each population-gradient estimate
    chunk: int = 128                      # sequences per forward pass (speed: small chunks stay in cache)
    search_seqs: int = 512                # held-out batch for the step-size search ('eval' stream)
    test_seqs: int = 2048                 # batch for the reported accuracy ('test' stream)
    step_norms: tuple = (None, None, None)  # fixed ||update||_F of the 1st, 2nd, 3rd step; None: line search
    grid: tuple = field(default_factory=lambda: tuple(10.0 ** (k / 2) for k in range(-2, 17)))
    criterion: str = "loss"               # step sizes minimise the held-out 'loss' or maximise its 'acc'
    search: str = "greedy"                # 'greedy': each step size alone; 'joint': steps 2 and 3 together
    precision: str = "float32"            # 'float64': near-ties at the grid's top (||update|| 1e8) exact; 2x the time
    seed: int = 0                         # model init and data

    def __post_init__(self) -> None:
        if self.criterion not in ("loss", "acc"):
            raise ValueError(f"criterion: expected 'loss' or 'acc', got {self.criterion!r}")
        if self.search not in ("greedy", "joint"):
            raise ValueError(f"search: expected 'greedy' or 'joint', got {self.search!r}")
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision: expected 'float32' or 'float64', got {self.precision!r}")


def trained_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """The three matrices of Theorem 3 by paper name (nn.Linear weights: applied as x @ W.T)."""
    a0, a1 = model.layers[0].attention, model.layers[1].attention
    return {"W_O2": a1.wo.weight, "W_K2": a1.wk.weight, "W_K1": a0.wk.weight}


class ReducedModel:
    """Exact evaluation of a simplified ``Transformer`` (no FFN, absolute positions) in coordinates."""

    def __init__(self, model: nn.Module, seq_length: int, ideal: bool = False):
        a0, a1 = model.layers[0].attention, model.layers[1].attention
        self.n, self.t, self.scale = model.vocab_size, seq_length, a0.scale
        self.params = trained_params(model)
        with torch.no_grad():
            x_basis = torch.cat([model.tok_embeddings.weight, model.positions(seq_length)])  # (N+T, d)
            remap = x_basis @ a0.wv.weight.T @ a0.wo.weight.T                               # W_O1 W_V1 x
            self.x_basis, self.basis = x_basis, torch.cat([x_basis, remap])                 # B: (D, d)
            self.w_u = model.output.weight.detach().clone()                                 # (N, d)
            self.direct = self.basis @ self.w_u.T                                           # (D, N)
            self.values = self.basis @ a1.wv.weight.T                                       # (D, d)
        self.causal = torch.ones(seq_length, seq_length, dtype=torch.bool, device=self.direct.device).triu(1)
        self.masks = self._ideal_masks() if ideal else None

    def _ideal_masks(self) -> tuple[torch.Tensor, ...]:
        n, t = self.n, self.t
        m1 = torch.zeros(n + t, n + t)
        m1[n:, n:] = 1                                  # positions attend by positions
        m2 = torch.zeros(2 * (n + t), 2 * (n + t))
        m2[:n, n + t:2 * n + t] = 1                     # query token -> remapped key token w_1
        l2 = torch.zeros(2 * (n + t), n)
        l2[:n] = 1                                      # values: token embeddings only
        return m1, m2, l2

    def small(self, weights: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """(M1, M2, L2) from ``weights`` (default: the model's current weights, detached)."""
        w = weights if weights is not None else {k: v.detach() for k, v in self.params.items()}
        mats = (self.x_basis @ w["W_K1"] @ self.x_basis.T * self.scale,              # (N+T, N+T)
                self.basis @ w["W_K2"] @ self.basis.T * self.scale,                  # (D, D)
                self.values @ w["W_O2"].T @ self.w_u.T)                              # (D, N)
        return mats if self.masks is None else tuple(m * k for m, k in zip(mats, self.masks))

    def _right(self, x: torch.Tensor, a1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """c @ w for the layer-1 coordinates c of every position: (B, T, D) @ (D, k) -> (B, T, k)."""
        n, t = self.n, self.t
        # one-hot coordinates become gathers; the attention-averaged ones a single (T x T) product
        # F.embedding rather than w[x]: its backward is a sum by token, not a slow scattered index_put
        return F.embedding(x, w[:n]) + w[n:n + t] + a1 @ (F.embedding(x, w[n + t:2 * n + t]) + w[2 * n + t:])

    def logits(self, x: torch.Tensor, mats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Logits (B, T, N) of tokens x (B, T) for small matrices ``mats`` = (M1, M2, L2)."""
        m1, m2, l2 = mats
        n, t = self.n, self.t
        keys = x[:, None, :].expand(-1, t, -1)                                       # (B, T, T)
        a1 = self._layer1(x, m1)
        q2 = self._right(x, a1, m2)                                                  # (B, T, D)
        s2 = (q2[..., :n].gather(-1, keys) + q2[..., n:n + t]
              + (q2[..., n + t:2 * n + t].gather(-1, keys) + q2[..., 2 * n + t:]) @ a1.transpose(1, 2))
        a2 = torch.softmax(s2.masked_fill(self.causal, -math.inf), -1)               # (B, T, T)
        return self._right(x, a1, self.direct) + a2 @ self._right(x, a1, l2)         # (B, T, N)

    def target_logits(self, x: torch.Tensor, mats: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        """``logits(x, mats)[mask]``: the logits (M, N) at the M positions where ``mask`` (B, T) is set.

        Layer 2 is evaluated at those positions only (the in-context targets: about 1 position in 6);
        the idealised model's layer-1 attention reads positions only, so it is computed once. Tests:
        the full pass's logits and gradients up to float rounding; ``benchmarks/theory_passes.py``."""
        at = _Targets(x, mask, self.n)
        return self._target_logits(x, mats, at) if self.masks is None else self._ideal_target_logits(x, mats, at)

    def every_position_logits(self, x: torch.Tensor, mats: tuple, mask: torch.Tensor) -> torch.Tensor:
        """The naive reference of ``target_logits``: the logits at every position, then the targets'."""
        return self.logits(x, mats)[mask]

    def _layer1(self, x: torch.Tensor, m1: torch.Tensor) -> torch.Tensor:
        """Layer-1 attention (B, T, T) of tokens x."""
        n, t = self.n, self.t
        q1 = F.embedding(x, m1) + m1[n:n + t]                                        # (B, T, N+T)
        scores = q1[..., :n].gather(-1, x[:, None, :].expand(-1, t, -1)) + q1[..., n:]
        return torch.softmax(scores.masked_fill(self.causal, -math.inf), -1)

    def _rows(self, at: "_Targets", a1q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """c @ w for the layer-1 coordinates c of the targets (layer-1 attention rows a1q): (M, k)."""
        n, t = self.n, self.t
        return w[at.query] + w[n + at.pos] + at.by_token(a1q) @ w[n + t:2 * n + t] + a1q @ w[2 * n + t:]

    def _target_logits(self, x: torch.Tensor, mats: tuple[torch.Tensor, ...], at: "_Targets") -> torch.Tensor:
        """The model as coded. Coordinates of position j in sequence b: c_j = [onehot(x_j), e_j, a1_j U, a1_j]
        with U's rows [onehot(x_l), e_l]; each product of a target's vector with a1 of its sequence
        goes through one padded batched product."""
        m1, m2, l2 = mats
        n, t = self.n, self.t
        a1 = self._layer1(x, m1)                                                       # (B, T, T)
        a1q = a1[at.seq, at.pos]                                                       # (M, T)
        counts = at.counts
        slot = torch.arange(len(at.seq), device=x.device) - (counts.cumsum(0) - counts)[at.seq]  # rank in its sequence

        def through_a1(v: torch.Tensor, transpose: bool) -> torch.Tensor:              # v_m @ a1_b (or a1_b^T): (M, T)
            padded = torch.zeros(x.shape[0], int(counts.max()), t, dtype=v.dtype, device=x.device)
            padded = padded.index_put((at.seq, slot), v)
            return (padded @ (a1.transpose(1, 2) if transpose else a1))[at.seq, slot]

        q2 = self._rows(at, a1q, m2)                                                   # (M, D)
        remapped = q2[:, n + t:2 * n + t].gather(1, at.keys) + q2[:, 2 * n + t:]       # (M, T): q2 . (remap of key l)
        s2 = q2[:, :n].gather(1, at.keys) + q2[:, n:n + t] + through_a1(remapped, transpose=True)
        a2 = torch.softmax(s2.masked_fill(at.later, -math.inf), -1)                    # (M, T)
        mixed = through_a1(a2, transpose=False)                                        # sum_j a2_j a1_j: (M, T)
        return (self._rows(at, a1q, self.direct) + at.by_token(a2) @ l2[:n] + a2 @ l2[n:n + t]
                + at.by_token(mixed) @ l2[n + t:2 * n + t] + mixed @ l2[2 * n + t:])

    def _ideal_target_logits(self, x: torch.Tensor, mats: tuple[torch.Tensor, ...], at: "_Targets") -> torch.Tensor:
        """The idealised model: layer 1 by positions only, W_K2 on (query token, remapped key token),
        values from token rows only."""
        m1, m2, l2 = mats
        n, t = self.n, self.t
        a1 = torch.softmax(m1[n:, n:].masked_fill(self.causal, -math.inf), -1)        # (T, T), every sequence's
        s2 = m2[:n, n + t:2 * n + t][at.query].gather(1, at.keys) @ a1.T              # (M, T)
        a2 = torch.softmax(s2.masked_fill(at.later, -math.inf), -1)
        return self._rows(at, a1[at.pos], self.direct) + at.by_token(a2) @ l2[:n]


class _Targets:
    """The M positions of a chunk where logits are needed: each one's sequence, position and token,
    its sequence's tokens (the keys), and which keys come after it."""

    def __init__(self, x: torch.Tensor, mask: torch.Tensor, n: int):
        self.n, self.counts = n, mask.sum(1)                                           # targets per sequence
        self.seq, self.pos = mask.nonzero(as_tuple=True)                               # (M,), sorted by sequence
        self.keys, self.query = x[self.seq], x[self.seq, self.pos]                     # (M, T), (M,)
        self.later = torch.arange(x.shape[1], device=x.device)[None, :] > self.pos[:, None]  # (M, T)

    def by_token(self, weights: torch.Tensor) -> torch.Tensor:
        """Weights (M, T) over each target's keys, added up by key token: (M, N)."""
        return torch.zeros(len(self.pos), self.n, dtype=weights.dtype,
                           device=weights.device).scatter_add(1, self.keys, weights)


def make_task(cfg: ThreeStepConfig) -> TriggersTask:
    stats = bundled_stats()
    if cfg.corpus == "uniform":  # i.i.d. uniform tokens: the bigram structure removed
        n = stats.num_tokens
        stats = CorpusStats(stats.vocab, np.ones(n), np.ones((n, n)), "uniform")
    elif cfg.corpus != "shakespeare":
        raise ValueError(f"corpus: expected 'shakespeare' or 'uniform', got {cfg.corpus!r}")
    data = DataArgs(k=cfg.k, seq_length=cfg.seq_length, fixed_special_toks=cfg.fixed_triggers,
                    no_repeat=cfg.no_repeat)
    return TriggersTask(data, stats=stats)


def make_model(cfg: ThreeStepConfig, vocab_size: int) -> Transformer:
    torch.manual_seed(cfg.seed)
    args = ModelArgs(arch="simplified", dim=cfg.dim, max_length=cfg.seq_length, zero_init=True,
                     freeze_embeddings=True, freeze_output=True, sqrtd_embeddings=cfg.sqrtd_embeddings)
    return Transformer(args, vocab_size)


def _chunks(batch: Batch, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    for i in range(0, batch.x.shape[0], size):
        yield batch.x[i:i + size], batch.y[i:i + size], batch.outs[i:i + size] >= 2


# Which of the small matrices (M1, M2, L2) each trained weight enters: only that one needs a gradient,
# so the backward pass stops where the others' would begin (for W_O2 and W_K2, before layer 1).
ENTERS = {"W_K1": 0, "W_K2": 1, "W_O2": 2}


def population_gradient(red: ReducedModel, batch: Batch, name: str, chunk: int = 128) -> torch.Tensor:
    """Gradient (d, d) of the mean in-context loss over all outs >= 2 targets of ``batch``."""
    mats = [m.detach().clone().requires_grad_(i == ENTERS[name]) for i, m in enumerate(red.small())]
    n_targets = 0
    for x, y, mask in _chunks(batch, chunk):
        logits = red.target_logits(x, mats, mask)                             # (M, N)
        F.cross_entropy(logits, y[mask], reduction="sum").backward()  # accumulates into mats[i].grad
        n_targets += int(mask.sum())
    weights = {k: v.detach().clone().requires_grad_(k == name) for k, v in red.params.items()}
    pairs = [(m, g.grad / max(n_targets, 1)) for m, g in zip(red.small(weights), mats) if m.requires_grad]
    # chain rule from the small matrices back to the d x d weight, in one backward pass
    (grad,) = torch.autograd.grad([m for m, _ in pairs], weights[name], [g for _, g in pairs])
    return grad


@torch.no_grad()
def in_context(red: ReducedModel, batch: Batch, chunk: int = 128) -> tuple[float, float]:
    """(loss, accuracy) on the outs >= 2 targets of ``batch`` with the model's current weights."""
    mats, loss, hits, count = red.small(), 0.0, 0, 0
    for x, y, mask in _chunks(batch, chunk):
        logits = red.target_logits(x, mats, mask)
        loss += float(F.cross_entropy(logits, y[mask], reduction="sum"))
        hits += int((logits.argmax(-1) == y[mask]).sum())
        count += int(mask.sum())
    return loss / max(count, 1), hits / max(count, 1)


@torch.no_grad()
def memory_probes(model: nn.Module, triggers: list[int] | None) -> dict[str, float]:
    """wo1_acc, wk1_acc (K-way for fixed triggers), wk1_all_acc (N-way) and wk0_acc of SPEC §4.1."""
    res = probes.memory_probes(model, triggers=triggers, n_train_toks=model.vocab_size)
    return {"wo1_acc": res["wo1_acc"], "wk1_acc": res["wk1_acc"],
            "wk1_all_acc": res.get("wk1_full_acc", res["wk1_acc"]), "wk0_acc": res["wk0_acc"]}


class ThreeSteps:
    """One model, its data, and the step machinery; states are dicts of the three weights."""

    def __init__(self, cfg: ThreeStepConfig):
        self.cfg = cfg
        self.task = make_task(cfg)
        self.model = make_model(cfg, self.task.num_tokens).to(getattr(torch, cfg.precision))
        self.red = ReducedModel(self.model, cfg.seq_length, ideal=cfg.ideal)
        self.train = self.task.batch(cfg.seed, "train", 0, cfg.n_seqs)
        self.search = self.task.batch(cfg.seed, "eval", 0, cfg.search_seqs)
        self.test = self.task.batch(cfg.seed, "test", 0, cfg.test_seqs)
        self.zero = {k: torch.zeros_like(v) for k, v in self.red.params.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in self.red.params.items():
                v.copy_(state[k])

    def evaluate(self, state: dict[str, torch.Tensor], batch: Batch | None = None) -> dict[str, float]:
        self.load(state)
        loss, acc = in_context(self.red, batch if batch is not None else self.test, self.cfg.chunk)
        return {"loss": loss, "acc": acc, **memory_probes(self.model, self.task.fixed)}

    def direction(self, state: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, float]:
        """(-gradient / ||gradient||, ||gradient||) of ``name`` at ``state``; zero direction if the norm is 0."""
        self.load(state)
        grad = population_gradient(self.red, self.train, name, self.cfg.chunk)
        norm = float(grad.norm())
        return (-grad / norm if norm > 0 else torch.zeros_like(grad)), norm

    def line_search(self, state: dict, name: str, direction: torch.Tensor, criterion: str | None = None) -> float:
        """The update norm that is best on the held-out search batch (``criterion``, default ``cfg.criterion``).

        'loss': lowest in-context loss; 'acc': highest in-context accuracy, ties to the smallest norm.
        """
        criterion = criterion or self.cfg.criterion
        score = lambda s: in_context_at(self, {**state, name: state[name] + s * direction})
        key = (lambda v, s: v[0]) if criterion == "loss" else (lambda v, s: (-v[1], s))
        return grid_search(self.cfg.grid, score, key)[0]

    def joint_steps(self, order: tuple[str, str, str]) -> list[tuple[str, torch.Tensor, float, float]]:
        """The three steps of ``order`` with the sizes of steps 2 and 3 chosen together.

        Theorem 3 asks for step sizes that make the model right after the last step; a size that is
        best for step 2 alone (layer-1 attention still uniform) need not be. Step 1 takes its own
        lowest held-out loss; then every size of step 2 on ``cfg.grid`` is followed by step 3's gradient
        and line search, and the pair with the highest held-out accuracy after step 3 wins (ties: the
        lower loss). Returns (name, direction, grad_norm, update_norm) for each step.
        """
        first, second, third = order
        d1, g1 = self.direction(self.zero, first)
        s1 = self.line_search(self.zero, first, d1, "loss") if g1 > 0 else 0.0
        state1 = {**self.zero, first: s1 * d1}
        d2, g2 = self.direction(state1, second)
        tried: dict[float, tuple] = {}

        def after_third(s2: float) -> tuple[float, float]:
            state2 = {**state1, second: state1[second] + s2 * d2}
            d3, g3 = self.direction(state2, third)
            s3, value = grid_search(self.cfg.grid,
                                    lambda s: in_context_at(self, {**state2, third: state2[third] + s * d3}),
                                    lambda v, s: (-v[1], v[0], s))
            tried[s2] = (d3, g3, s3)
            return value

        s2 = grid_search(self.cfg.grid, after_third, lambda v, s: (-v[1], v[0], s))[0] if g2 > 0 else 0.0
        if s2 not in tried:
            after_third(s2)
        d3, g3, s3 = tried[s2]
        return [(first, d1, g1, s1), (second, d2, g2, s2), (third, d3, g3, s3 if g3 > 0 else 0.0)]


def grid_search(grid: tuple, score: Callable[[float], tuple],
                key: Callable[[tuple, float], tuple]) -> tuple[float, tuple]:
    """(best s, its score) over ``grid``, minimising key(score(s), s): whole decades (every other
    entry) first, then the entries on either side of the best."""
    grid, scores = list(grid), {}

    def best(norms):
        for s in norms:
            if s not in scores:
                scores[s] = score(s)
        return min(norms, key=lambda s: key(scores[s], s))

    i = grid.index(best(grid[::2]))
    s = best(grid[max(i - 1, 0):i + 2])
    return s, scores[s]


def in_context_at(ts: ThreeSteps, state: dict) -> tuple[float, float]:
    ts.load(state)
    return in_context(ts.red, ts.search, ts.cfg.chunk)


ORDERS = (TOP_DOWN, ("W_O2", "W_K1", "W_K2"), ("W_K2", "W_O2", "W_K1"), ("W_K2", "W_K1", "W_O2"),
          ("W_K1", "W_O2", "W_K2"), ("W_K1", "W_K2", "W_O2"), ("W_O2",), ("W_K2",), ("W_K1",))


def order_label(order: tuple[str, ...]) -> str:
    return ">".join(n[2:] for n in order)          # ('W_O2', 'W_K2', 'W_K1') -> 'O2>K2>K1'


def run_orders(cfg: ThreeStepConfig, orders: tuple[tuple[str, ...], ...] = ORDERS,
               log: Callable[[str], None] = print) -> list[dict]:
    """One row per step of every order: weights, gradient norm, update norm, probes, in-context accuracy.

    With ``cfg.search == 'joint'`` each (complete) order chooses its step sizes together (``joint_steps``).
    Steps whose gradient is exactly zero (W_K2 while W_O2 = 0) leave the weights unchanged and are
    recorded with grad_norm 0.0; states reached by the same effective steps are computed once.
    """
    ts = ThreeSteps(cfg)
    if cfg.search == "joint":
        return [row for order in orders for row in _joint_rows(ts, order, log)]
    memo: dict[tuple, dict] = {}       # effective steps so far -> {'state', 'metrics'}
    edges: dict[tuple, tuple] = {}     # (effective steps, name) -> (direction, grad_norm, norm, new key)
    rows = []
    for order in orders:
        key, state, effective = (), dict(ts.zero), []
        for i, name in enumerate(order):
            if (key, name) not in edges:
                direction, gnorm = ts.direction(state, name)
                fixed = cfg.step_norms[i] if i < len(cfg.step_norms) else None
                norm = 0.0 if gnorm == 0 else (fixed if fixed is not None else ts.line_search(state, name, direction))
                new_key = key + ((name, norm),) if gnorm > 0 else key
                edges[(key, name)] = (direction, gnorm, norm, new_key)
            direction, gnorm, norm, key = edges[(key, name)]
            if gnorm > 0:
                state = {**state, name: state[name] + norm * direction}
                effective.append((name, direction, norm))
            if key not in memo:
                memo[key] = {"state": state, "metrics": ts.evaluate(state)}
            rows.append(_row(cfg, order, i + 1, name, gnorm, norm, memo[key]["metrics"]))
            log(_fmt(rows[-1]))
    return rows


def _joint_rows(ts: ThreeSteps, order: tuple[str, ...], log: Callable[[str], None]) -> list[dict]:
    if len(order) != 3:
        raise ValueError(f"search='joint' needs complete orders of three steps, got {order_label(order)}")
    rows, state = [], dict(ts.zero)
    for i, (name, direction, gnorm, norm) in enumerate(ts.joint_steps(order)):
        state = {**state, name: state[name] + norm * direction}
        rows.append(_row(ts.cfg, order, i + 1, name, gnorm, norm, ts.evaluate(state)))
        log(_fmt(rows[-1]))
    return rows


def _row(cfg: ThreeStepConfig, order: tuple[str, ...], step: int, name: str, gnorm: float, norm: float,
         metrics: dict) -> dict:
    row = {"dim": cfg.dim, "ideal": cfg.ideal, "order": order_label(order), "step": step, "param": name,
           "grad_norm": gnorm, "update_norm": norm,
           "eta": norm / gnorm if gnorm > 0 else 0.0, **metrics}
    return row


def _fmt(row: dict) -> str:
    return (f"d={row['dim']:<5} {row['order']:<9} step {row['step']!s:<5} {row['param']:<14} "
            f"|g|={row['grad_norm']:.3g} acc={row['acc']:.3f} loss={row['loss']:.3f} "
            f"wo1={row['wo1_acc']:.2f} wk1={row['wk1_acc']:.2f} wk0={row['wk0_acc']:.2f}")
