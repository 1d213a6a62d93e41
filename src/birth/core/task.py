"""The bigram-with-triggers task (SPEC §1), sampled in torch on the training device.

Each sequence draws K triggers q_k (fixed, or from pi_u without replacement) and outputs o_k
(uniform or from pi_b(.|q_k)); then z_1 ~ pi_u and z_{t+1} = o_k if z_t = q_k, else
z_{t+1} ~ pi_b(.|z_t). Sampling is vectorised over the batch (one torch op per position), and
batch i of a stream is a pure function of (seed, stream, i) on a given device.

``outs[t]`` is the occurrence count n >= 1 when x_t is a trigger (y_t is then its output, at its
n-th appearance), 0 otherwise, and -1 on the latent prefix of ``show_latents``: exactly the
official ``outputs_seq`` semantics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from birth.running.config import DataArgs
from birth.core.corpus import CorpusStats

# Independent random streams derived from one seed.
TRAIN_OUTPUT_FRACTION = 0.75  # the official 75/25 split: training outputs from the first 75% of token ids


def n_train_outputs(num_tokens: int) -> int:
    """How many token ids (the first ones) the training side of the 75/25 output split may output."""
    return int(TRAIN_OUTPUT_FRACTION * num_tokens)


STREAMS = {"train": 0, "eval": 1, "test": 2, "split_test": 3, "floors": 4}


@dataclass
class Batch:
    x: torch.Tensor         # (B, T) input tokens
    y: torch.Tensor         # (B, T) next tokens
    outs: torch.Tensor      # (B, T) occurrence counts (see module docstring)
    triggers: torch.Tensor  # (B, K) trigger tokens of each sequence
    outputs: torch.Tensor   # (B, K) their outputs


def stream_generator(seed: int, stream: str, index: int, device: torch.device | str) -> torch.Generator:
    """A torch generator whose state depends only on (seed, stream, index)."""
    state = np.random.SeedSequence([int(seed), STREAMS[stream], int(index)]).generate_state(2, np.uint64)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state[0]) & ((1 << 63) - 1))
    return gen


def fixed_triggers(marginal: np.ndarray, k: int, offset: int) -> list[int]:
    """The K most frequent tokens after skipping ``offset``, in increasing frequency (as official)."""
    order = np.argsort(marginal, kind="stable")
    n = len(marginal)
    return [int(i) for i in order[n - offset - k: n - offset]]


class Task:
    """Sampler of one data distribution (training, evaluation or out-of-distribution).

    ``bigram_outs`` draws outputs from pi_b(.|q); ``split`` ('train' or 'test') restricts outputs
    to the first 75% of the output pool or to the rest (the official ``train_test``).
    """

    def __init__(self, data: DataArgs, stats: CorpusStats, *, bigram_outs: bool = False,
                 split: str | None = None, device: torch.device | str = "cpu"):
        self.data = data
        self.stats = stats
        self.bigram_outs = bigram_outs
        self.split = split
        self.device = torch.device(device)
        self.num_tokens = stats.num_tokens
        self.n_train_toks = n_train_outputs(self.num_tokens) if split else self.num_tokens
        marginal = torch.as_tensor(stats.marginal, dtype=torch.float64)
        cond = torch.as_tensor(stats.cond, dtype=torch.float64)
        self.marginal = marginal.to(self.device)
        self.log_marginal = torch.log(self.marginal)
        self.cond = cond.to(self.device)
        # Inverse-CDF tables; the last entry of each row is forced to 1 so that u < 1 always finds a token.
        self.cdf_u = _cdf(marginal).to(self.device)
        threshold, index = alias_tables(stats.cond)
        self.alias_threshold = torch.as_tensor(threshold).to(self.device)             # (N, N)
        self.alias_index = torch.as_tensor(index).to(self.device)                     # (N, N)
        self._table_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self.fixed = (fixed_triggers(stats.marginal, data.k, data.special_toks_offset)
                      if data.fixed_special_toks else None)

    # -- per-sequence latent variables ------------------------------------------------------
    def _triggers(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        k = self.data.k
        if self.fixed is not None:
            return torch.tensor(self.fixed, dtype=torch.long, device=self.device).expand(batch_size, k).clone()
        if k == 0:
            return torch.empty(batch_size, 0, dtype=torch.long, device=self.device)
        # Gumbel top-k: the same law as successive draws renormalised (rng.choice(replace=False))
        return _gumbel(self.log_marginal.expand(batch_size, -1), gen).topk(k, dim=-1).indices

    def output_pool(self, triggers: torch.Tensor) -> torch.Tensor:
        """Tokens each trigger may output, (..., N) bool for triggers of any shape (...)."""
        pool = torch.ones(*triggers.shape, self.num_tokens, dtype=torch.bool, device=triggers.device)
        if self.data.no_repeat:
            pool.scatter_(-1, triggers[..., None], False)
        if self.split is not None:
            # the official code slices the pool *list*, so with no_repeat the cut shifts by one
            rank = pool.long().cumsum(-1) - 1
            pool &= (rank < self.n_train_toks) if self.split == "train" else (rank >= self.n_train_toks)
        return pool

    def _outputs(self, triggers: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, k = triggers.shape
        n = self.num_tokens
        if k == 0:
            return triggers.clone()
        pool = self.output_pool(triggers)                                             # (B, K, N)
        if not self.bigram_outs:
            # uniform over the pool: the r-th allowed token, r uniform below the pool size
            allowed = pool.view(b * k, n).cumsum(-1)                                  # (B*K, N)
            u = torch.rand(b * k, 1, dtype=torch.float64, device=self.device, generator=gen)
            rank = (u * allowed[:, -1:]).long()                                       # (B*K, 1)
            return torch.searchsorted(allowed, rank, right=True).view(b, k)
        weights = pool.double() * self.cond[triggers]                                 # (B, K, N)
        weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, pool.double())
        # Gumbel argmax draws one token with probability proportional to its weight
        return _gumbel(torch.log(weights), gen).argmax(-1)                            # (B, K)

    # -- sequences --------------------------------------------------------------------------
    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        """One batch of ``batch_size`` sequences of T+1 tokens, split into x, y and outs."""
        d = self.data
        triggers = self._triggers(batch_size, gen)                                    # (B, K)
        outputs = self._outputs(triggers, gen)                                        # (B, K)
        n_latent = d.k if d.show_latents else 0
        length = d.seq_length + 1 - n_latent
        seq = self._chain(triggers, outputs, length, gen)                             # (B, L)
        outs = self._occurrences(seq, triggers)                                       # (B, L)
        if n_latent:
            seq = torch.cat([triggers, seq], dim=1)
            outs = torch.cat([torch.full_like(triggers, -1), outs], dim=1)
        return Batch(x=seq[:, :-1], y=seq[:, 1:], outs=outs[:, :-1], triggers=triggers, outputs=outputs)

    def _chain(self, triggers: torch.Tensor, outputs: torch.Tensor, length: int,
               gen: torch.Generator) -> torch.Tensor:
        """z_1 ~ pi_u, then z_{t+1} = out(z_t) for triggers, else ~ pi_b(.|z_t): (B, L) tokens.

        Walker's alias method makes each draw O(1): with s = u*N and j = floor(s), the next token
        is j if s < j + threshold[r, j], else alias[r, j] (row r = the current token). Rows 0..N-1
        are pi_b; one extra row per (sequence, trigger) has threshold 0 and its output as every
        alias, so forced transitions cost nothing extra. A step is seven tensor ops on (B,)
        vectors, whatever the batch size.
        """
        b, k = triggers.shape
        n, dev = self.num_tokens, self.device
        threshold, alias = self._tables(b * k)
        alias.view(-1, n)[n:] = outputs.reshape(-1, 1)  # forced rows: every alias is the output
        # row_of[b*N + v] = table row of token v in sequence b
        row_of = torch.arange(n, device=dev).repeat(b)                                # (B*N,)
        row_of.view(b, n).scatter_(1, triggers, n + torch.arange(b * k, device=dev).view(b, k))
        row_start = torch.arange(b, device=dev) * n                                   # (B,)
        u = torch.rand(length, b, dtype=torch.float64, device=dev, generator=gen)     # (L, B)
        scaled = u * n                                                                # (L, B) s
        # per-step slices made once, and preallocated outputs: at B = 512 the loop costs what its
        # op calls cost, so each avoided view or allocation counts
        columns, scaled_steps = list(scaled.long()), list(scaled)
        steps = torch.empty(length, b, dtype=torch.long, device=dev)                  # (L, B)
        tokens = list(steps)
        torch.searchsorted(self.cdf_u, u[0], right=True, out=tokens[0])
        key, row, entry = (torch.empty(b, dtype=torch.long, device=dev) for _ in range(3))
        cut, other = torch.empty(b, dtype=torch.float64, device=dev), torch.empty(b, dtype=torch.long, device=dev)
        keep = torch.empty(b, dtype=torch.bool, device=dev)
        for t in range(1, length):
            torch.add(row_start, tokens[t - 1], out=key)
            torch.take(row_of, key, out=row)
            torch.add(columns[t], row, alpha=n, out=entry)
            torch.take(threshold, entry, out=cut)
            torch.lt(scaled_steps[t], cut, out=keep)
            torch.take(alias, entry, out=other)
            torch.where(keep, columns[t], other, out=tokens[t])
        return steps.t()

    def _tables(self, forced_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat alias tables with room for ``forced_rows`` forced rows: (j + threshold, alias).

        The thresholds never change (forced rows have threshold 0), so they are built once per
        table size; the alias table is reused and its forced rows overwritten by each batch.
        """
        if self._table_cache is None or self._table_cache[0] != forced_rows:
            n, dev = self.num_tokens, self.device
            threshold = torch.cat([self.alias_threshold, torch.zeros(forced_rows, n, dtype=torch.float64, device=dev)])
            threshold = (threshold + torch.arange(n, device=dev)).flatten()           # j + threshold[r, j]
            alias = torch.cat([self.alias_index, torch.zeros(forced_rows, n, dtype=torch.long, device=dev)]).flatten()
            self._table_cache = (forced_rows, threshold, alias)
        return self._table_cache[1], self._table_cache[2]

    def _occurrences(self, seq: torch.Tensor, triggers: torch.Tensor) -> torch.Tensor:
        """n at the n-th occurrence of a trigger (1 for all without ``output_counter``), else 0."""
        # a position matches at most one trigger; int16 counts are exact for sequences under 32768
        small = torch.int16 if seq.shape[1] < 2 ** 15 else torch.int32
        same = (seq.unsqueeze(2) == triggers.unsqueeze(1)).to(small)                  # (B, L, K)
        counts = (same.cumsum(1, dtype=small) * same).sum(-1).long()                  # (B, L)
        if not self.data.output_counter:
            counts.clamp_(max=1)
        counts[:, -1] = 0  # the last token has no next token in the sequence
        return counts

    def batch(self, seed: int, stream: str, index: int, batch_size: int) -> Batch:
        """Batch ``index`` of a stream: a pure function of (seed, stream, index) on this device."""
        return self.sample(batch_size, stream_generator(seed, stream, index, self.device))


def _gumbel(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """logits + Gumbel noise; -inf logits (zero weight) stay -inf and are never drawn."""
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=gen)
    return logits - torch.log(-torch.log1p(-u))  # 1 - u in (0, 1]: log1p(-u) is finite


def alias_tables(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias tables of each row of ``probs`` (R, N): thresholds (float64) and aliases.

    Drawing j uniformly, then keeping j with probability threshold[j] or else taking alias[j],
    samples exactly from the row.
    """
    rows, n = probs.shape
    threshold = np.ones((rows, n))
    alias = np.tile(np.arange(n), (rows, 1))
    for r in range(rows):
        scaled = probs[r] / probs[r].sum() * n
        small = [j for j in range(n) if scaled[j] < 1.0]
        large = [j for j in range(n) if scaled[j] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            threshold[r, s], alias[r, s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        # leftovers are 1 up to rounding: they keep themselves
    return threshold, alias


def _cdf(probs: torch.Tensor) -> torch.Tensor:
    cdf = probs.cumsum(-1) / probs.sum(-1, keepdim=True)
    cdf[..., -1] = 1.0
    return cdf


def bayes_floors(task: Task, n_seqs: int = 2048, seed: int = 0) -> dict[str, float]:
    """Reference values of the task, estimated on ``n_seqs`` sequences of the task distribution.

    - ``floor_loss_bigram``: Bayes-optimal loss on global tokens (outs == 0), E[H(pi_b(.|x_t))];
    - ``floor_loss_head``: Bayes-optimal in-context loss (outs >= 2): 0, since the output was seen;
    - ``nocontext_loss_head``: best in-context loss without in-context information, E[H(pi_o(.|q))];
    - ``chance_acc``: 1/N; and the token-type fractions of SPEC §1.5.
    """
    batch = task.batch(seed, "floors", 0, n_seqs)
    x, outs = batch.x, batch.outs
    glob = outs == 0
    head = outs >= 2
    return {
        "floor_loss_bigram": float(_entropy(task.cond)[x[glob]].mean()) if glob.any() else float("nan"),
        "floor_loss_head": 0.0,
        "nocontext_loss_head": _nocontext_head_loss(task, x[head]),
        "chance_acc": 1.0 / task.num_tokens,
        "frac_outs_ge1": float((outs >= 1).double().mean()),
        "frac_outs_eq1": float((outs == 1).double().mean()),
        "frac_outs_ge2": float(head.double().mean()),
        "frac_repeat": float((batch.x == batch.y)[outs >= 1].double().mean()) if (outs >= 1).any() else 0.0,
    }


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of p (..., N), with 0 log 0 = 0."""
    return -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)


def _nocontext_head_loss(task: Task, queries: torch.Tensor) -> float:
    """Entropy of the output distribution pi_o(.|q) averaged over the in-context queries q (M,)."""
    if not len(queries):
        return float("nan")
    pool = task.output_pool(queries).double()                                         # (M, N)
    w = pool * task.cond[queries] if task.bigram_outs else pool
    return float(_entropy(w / w.sum(-1, keepdim=True)).mean())
