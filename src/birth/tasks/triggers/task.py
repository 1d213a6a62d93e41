"""The paper's task: bigrams with triggers (SPEC §1), sampled in torch on the training device.

Each sequence draws K triggers q_k (fixed, or from pi_u without replacement) and outputs o_k
(uniform or from pi_b(.|q_k)); then z_1 ~ pi_u and z_{t+1} = o_k if z_t = q_k, else
z_{t+1} ~ pi_b(.|z_t). Sampling is vectorised over the batch (one torch op per position), and
batch i of a stream is a pure function of (seed, stream, i) on a given device.

``outs[t]`` is the occurrence count n >= 1 when x_t is a trigger (y_t is then its output, at its
n-th appearance), 0 otherwise, and -1 on the latent prefix of ``show_latents``: exactly the
official ``outputs_seq`` semantics. The target masks are read from it: ``in_context`` (outs >= 2),
``global`` (outs = 0), ``first`` (outs = 1: a trigger's first occurrence, its output unseen) and
``trigger`` (outs >= 1). Metrics keep the official names (``loss_head``, ``acc_end``, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from birth.fields import documented as _f
from birth.tasks.triggers.corpus import CorpusError, CorpusStats, load_stats
from birth.tasks import register
from birth.tasks.base import Batch, PatchExample, Task, TaskArgs
from birth.measures import strategies as S
from birth.tasks.triggers.probes import attention_probes, loss_metrics, memory_probes

TRAIN_OUTPUT_FRACTION = 0.75  # the official 75/25 split: training outputs from the first 75% of token ids


@dataclass
class DataArgs(TaskArgs):
    """The data of the paper's task (the official ``DataArgs``, and its two TrainerArgs flags)."""

    k: int = _f(0, "number of triggers K per sequence (official default 0 = no triggers)")
    show_latents: bool = _f(False, "put the K triggers at the start of each sequence (marked -1)")
    fixed_special_toks: bool = _f(False, "fixed triggers: the K most frequent tokens (else random per sequence)")
    special_toks_offset: int = _f(0, "fixed triggers skip this many most frequent tokens")
    output_counter: bool = _f(True, "count trigger occurrences in outs (False marks every output 1)")
    no_repeat: bool = _f(False, "forbid an output equal to its trigger")
    output_split: bool = _f(False, "75/25 OOD split: train outputs from the first 75% of token ids, "
                            "evaluate acc_end_split_test on outputs from the rest")
    corpus: str = _f("", "UTF-8 text file for the unigram/bigram statistics (empty: bundled tiny Shakespeare)")
    bigram_outs_train: bool = _f(False, "training outputs drawn from the bigram pi_b(.|trigger) (else uniform); "
                                 "official TrainerArgs name bigram_outs_train accepted")
    bigram_outs_test: bool = _f(False, "outputs of the acc_end_test batch drawn from the bigram; official "
                                "TrainerArgs name bigram_outs_test accepted")


def n_train_outputs(num_tokens: int) -> int:
    """How many token ids (the first ones) the training side of the 75/25 output split may output."""
    return int(TRAIN_OUTPUT_FRACTION * num_tokens)


class TriggerBatch(Batch):
    """A batch of the paper's task: ``outs`` (B, T) occurrence codes, ``triggers`` and ``outputs`` (B, K)."""

    @property
    def outs(self) -> torch.Tensor:
        return self.latents["outs"]

    @property
    def triggers(self) -> torch.Tensor:
        return self.latents["triggers"]

    @property
    def outputs(self) -> torch.Tensor:
        return self.latents["outputs"]


def trigger_masks(outs: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"in_context": outs >= 2, "global": outs == 0, "first": outs == 1, "trigger": outs >= 1}


def fixed_triggers(marginal: np.ndarray, k: int, offset: int) -> list[int]:
    """The K most frequent tokens after skipping ``offset``, in increasing frequency (as official)."""
    order = np.argsort(marginal, kind="stable")
    n = len(marginal)
    return [int(i) for i in order[n - offset - k: n - offset]]


# The official names of the losses and accuracies on each mask (birth.tasks.triggers.probes.loss_metrics)
OFFICIAL_KEYS = {("loss", "in_context"): "loss_head", ("acc", "in_context"): "acc_end",
                 ("loss", "global"): "loss_bigram", ("acc", "global"): "acc_bigram",
                 ("acc", "first"): "acc_first", ("acc", "trigger"): "acc_tot"}


@register
class TriggersTask(Task):
    """Sampler of one data distribution of the paper's task (training, evaluation or OOD).

    ``bigram_outs`` draws outputs from pi_b(.|q) (default: ``args.bigram_outs_train``); ``split``
    ('train' or 'test') restricts outputs to the first 75% of the output pool or to the rest (the
    official ``train_test``; default: 'train' under ``output_split``). ``stats``: the corpus
    statistics (default: those of ``args.corpus``).
    """

    name = "triggers"
    vocab_key = "data_args.corpus"  # what sets N
    stack_keys = ("seq_length", "corpus")  # a stack's batches: one shape, one vocabulary
    Args = DataArgs
    masks = ("in_context", "global", "first")  # reported; batches also carry "trigger" (outs >= 1)
    reference_strategies = ("bayes", "counts", "bigram", "uniform")

    def __init__(self, args: DataArgs, device: torch.device | str = "cpu", *, stats: Optional[CorpusStats] = None,
                 bigram_outs: Optional[bool] = None, split: Optional[str] = "default"):
        super().__init__(args, device)
        data = args
        self.data = data
        self.stats = stats = stats if stats is not None else load_stats(data.corpus)
        self.bigram_outs = data.bigram_outs_train if bigram_outs is None else bigram_outs
        self.split = ("train" if data.output_split else None) if split == "default" else split
        self.n_train_toks = n_train_outputs(self.num_tokens) if self.split else self.num_tokens
        marginal = torch.as_tensor(stats.marginal, dtype=torch.float64)
        cond = torch.as_tensor(stats.cond, dtype=torch.float64)
        self.marginal = marginal.to(self.device)
        self.log_marginal = torch.log(self.marginal)
        self.cond = cond.to(self.device)
        # Inverse-CDF tables; the last entry of each row is forced to 1 so that u < 1 always finds a token.
        self.cdf_u = _cdf(marginal).to(self.device)
        self._alias: tuple[torch.Tensor, torch.Tensor] | None = None  # made on the first batch (``_tables``)
        self._table_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self.fixed = (fixed_triggers(stats.marginal, data.k, data.special_toks_offset)
                      if data.fixed_special_toks else None)

    @classmethod
    def check(cls, d: DataArgs, *, loss_head_only: bool = False) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)
        require(d.k >= 0, f"data_args.k: must be >= 0, got {d.k}")
        require(d.special_toks_offset >= 0, f"data_args.special_toks_offset: must be >= 0, got {d.special_toks_offset}")
        require(not d.show_latents or d.k < d.seq_length,
                f"data_args.k: show_latents needs k < seq_length, got k={d.k}, seq_length={d.seq_length}")
        require(d.k > 0 or not loss_head_only,
                "data_args.k: k=0 gives no in-context targets, so loss_head_only=True has nothing to train on; "
                "set data_args.k > 0 or loss_head_only=False")
        require(not (d.output_split and (d.bigram_outs_train or d.bigram_outs_test)),
                "data_args.output_split: the 75/25 output split draws uniform outputs; "
                "it cannot be combined with bigram_outs_train/bigram_outs_test")
        try:
            stats = load_stats(d.corpus)
        except CorpusError as err:
            msg = str(err)
            raise ValueError(msg if msg.startswith("data_args.corpus") else f"data_args.corpus: {msg}") from None
        n = stats.num_tokens
        if d.fixed_special_toks:
            require(d.k + d.special_toks_offset <= n,
                    f"data_args.k: k + special_toks_offset = {d.k + d.special_toks_offset} exceeds the {n} tokens")
        else:
            support = int((stats.marginal > 0).sum())
            require(d.k <= support, f"data_args.k: {d.k} random triggers but only {support} tokens to draw from")
        if d.output_split:
            require(n_train_outputs(n) >= 1 and n - n_train_outputs(n) >= 1 + d.no_repeat,
                    f"data_args.output_split: {n} tokens are too few to split 75/25")

    @property
    def num_tokens(self) -> int:
        return self.stats.num_tokens

    @property
    def vocab(self):
        return self.stats.vocab

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

    def output_law(self, triggers: torch.Tensor) -> torch.Tensor:
        """pi_o(.|q) for triggers of any shape (...): (..., N) float64, rows summing to one."""
        pool = self.output_pool(triggers).double()
        w = pool * self.cond[triggers] if self.bigram_outs else pool
        w = torch.where(w.sum(-1, keepdim=True) > 0, w, pool)
        return w / w.sum(-1, keepdim=True)

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
    def sample(self, batch_size: int, gen: torch.Generator) -> TriggerBatch:
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
        outs = outs[:, :-1]
        return TriggerBatch(seq[:, :-1], seq[:, 1:], trigger_masks(outs),
                            {"outs": outs, "triggers": triggers, "outputs": outputs})

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
        if self._alias is None:  # pi_b's own rows, once (a config check builds the task and never samples)
            threshold, index = alias_tables(self.stats.cond)
            self._alias = torch.as_tensor(threshold).to(self.device), torch.as_tensor(index).to(self.device)
        if self._table_cache is None or self._table_cache[0] != forced_rows:
            n, dev = self.num_tokens, self.device
            base_threshold, base_alias = self._alias                                   # (N, N) each
            threshold = torch.cat([base_threshold, torch.zeros(forced_rows, n, dtype=torch.float64, device=dev)])
            threshold = (threshold + torch.arange(n, device=dev)).flatten()           # j + threshold[r, j]
            alias = torch.cat([base_alias, torch.zeros(forced_rows, n, dtype=torch.long, device=dev)]).flatten()
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

    # -- what the trainer and the analysis read ---------------------------------------------
    def metric_key(self, kind: str, mask: str) -> str:
        return OFFICIAL_KEYS.get((kind, mask), f"{kind}_{mask}")

    def evaluation_tasks(self) -> dict[str, "TriggersTask"]:
        """The official OOD batch (``bigram_outs_test``) and, under ``output_split``, the held-out outputs."""
        d = self.data
        out = {"test": TriggersTask(d, self.device, stats=self.stats, bigram_outs=d.bigram_outs_test, split=self.split)}
        if d.output_split:
            out["split_test"] = TriggersTask(d, self.device, stats=self.stats, bigram_outs=False, split="test")
        return out

    def info(self) -> dict:
        vocab = self.stats.vocab
        return {"vocab": list(vocab), "corpus": self.stats.source, "num_tokens": self.num_tokens,
                "fixed_triggers": self.fixed, "fixed_trigger_chars": [vocab[i] for i in self.fixed or []],
                "n_train_toks": self.n_train_toks}

    def floors(self) -> dict[str, float]:
        return bayes_floors(self, n_seqs=1024)

    def strategies(self) -> dict:
        """uniform; the global bigram pi_b(.|x_t); the in-context unigram (counts of x_1..x_t); the
        order-free ``counts`` predictor (what one attention layer can know: the current token and
        the counts of the tokens so far, not which followed which); and Bayes (pi_b on global
        positions, pi_o at a trigger's first occurrence, a copy of its earlier output after)."""
        return {"uniform": lambda b: S.uniform(b.x, self.num_tokens),
                "bigram": lambda b: self.cond[b.x],
                "unigram": lambda b: S.context_unigram(b.x, self.num_tokens),
                "counts": self._order_free,
                "bayes": self._bayes}

    def _by_mask(self, b: TriggerBatch, in_context: torch.Tensor) -> torch.Tensor:
        """pi_b(.|x_t) at global positions, pi_o(.|x_t) at first occurrences, ``in_context`` at the
        others (outs >= 2); uniform on the latent prefix of show_latents."""
        probs = self.cond[b.x].clone()                                                # (B, T, N)
        first = b.masks["first"]
        if first.any():
            probs[first] = self.output_law(b.x[first])
        probs[b.outs < 0] = 1.0 / self.num_tokens
        probs[b.masks["in_context"]] = in_context[b.masks["in_context"]]
        return probs

    def _bayes(self, b: TriggerBatch) -> torch.Tensor:
        """Exact for fixed triggers; with random triggers it knows which tokens are this sequence's
        triggers (an oracle), so no predictor's expected loss is below it."""
        return self._by_mask(b, S.copy_last_occurrence(b.x, b.y, self.num_tokens))

    def _order_free(self, b: TriggerBatch) -> torch.Tensor:
        """At the n-th occurrence of trigger q (n >= 2), with c_v the count of v in x_1..x_t: the
        output is v with probability proportional to pi_o(v|q) c_v! / (c_v - n + 1)! pi_u(v)^-(n-1)
        (zero when c_v < n - 1): the n - 1 copies of the output stand out of counts drawn from pi_u.
        Like Bayes, it knows which tokens are triggers; it never knows which token followed which."""
        x, n = b.x, self.num_tokens
        counts = S.running_counts(x, n)                                               # (B, T, N)
        shown = b.outs.clamp(min=1).double().sub(1).unsqueeze(-1)                     # (B, T, 1): n - 1
        log_law = torch.log(self.output_law(x))                                       # (B, T, N)
        falling = torch.lgamma(counts + 1) - torch.lgamma((counts - shown).clamp(min=0) + 1)
        score = log_law + falling - shown * self.log_marginal
        score = torch.where(counts >= shown, score, -math.inf)
        return self._by_mask(b, torch.softmax(score, -1))

    def patch_example(self, b: TriggerBatch, gen: torch.Generator) -> Optional[PatchExample]:
        """Each sequence with an in-context target, at its first one t (a trigger q at its second
        occurrence): the earlier occurrence of q, at s, is replaced by a token that is no trigger of
        the sequence, so that nothing in the context tells q's output; the metric is the
        log-probability of that output at t. Marks: s, s + 1 (the output seen) and t."""
        has = b.masks["in_context"].any(1)
        if not has.any():
            return None
        x, y, triggers = b.x[has], b.y[has], b.triggers[has]
        t = b.masks["in_context"][has].float().argmax(1)                                  # (B,) first target
        q = x.gather(1, t[:, None])                                                       # (B, 1)
        s = ((x == q) & (torch.arange(x.shape[1], device=x.device) < t[:, None])).float().argmax(1)
        allowed = torch.ones(len(x), self.num_tokens, dtype=torch.bool, device=x.device)
        allowed.scatter_(1, torch.cat([triggers, q], 1), False)                          # no trigger, not q
        weights = allowed.double()
        replacement = torch.multinomial(weights / weights.sum(1, keepdim=True), 1, generator=gen)[:, 0]
        corrupted = x.clone()
        corrupted[torch.arange(len(x)), s] = replacement
        at = torch.zeros_like(x, dtype=torch.bool)
        at[torch.arange(len(x)), t] = True
        marks = [{"first occurrence": int(a), "its output": int(a) + 1, "second occurrence": int(c)}
                 for a, c in zip(s, t)]
        return PatchExample(x, corrupted, y, at, marks)

    def ood_accuracy_mask(self, arch: str) -> str:
        """The positions acc_end_test counts: outs >= 2 for the simplified script, outs >= 1 for the full one."""
        return "trigger" if arch == "full" else "in_context"

    def batch_metrics(self, logits: torch.Tensor, patterns, batch: TriggerBatch, prefix: str = "") -> dict:
        """The official losses and accuracies per token type, and the attention probes."""
        res = loss_metrics(logits, batch.y, batch.outs, prefix)
        if patterns:
            res.update({prefix + k: v
                        for k, v in attention_probes(batch.x, batch.y, batch.outs, logits, patterns).items()})
        return res

    def weight_metrics(self, model) -> dict:
        """The official memory-recall probes (and ff1_loss with a final feed-forward)."""
        final_ffn = len(model.layers) > 1 and hasattr(model.layers[1], "ff")
        return memory_probes(model, triggers=self.fixed, n_train_toks=self.n_train_toks,
                             cond=self.cond if final_ffn else None)


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


def bayes_floors(task: TriggersTask, n_seqs: int = 2048, seed: int = 0) -> dict[str, float]:
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
        "floor_loss_bigram": float(S.entropy(task.cond)[x[glob]].mean()) if glob.any() else float("nan"),
        "floor_loss_head": 0.0,
        "nocontext_loss_head": _nocontext_head_loss(task, x[head]),
        "chance_acc": 1.0 / task.num_tokens,
        "frac_outs_ge1": float((outs >= 1).double().mean()),
        "frac_outs_eq1": float((outs == 1).double().mean()),
        "frac_outs_ge2": float(head.double().mean()),
        "frac_repeat": float((batch.x == batch.y)[outs >= 1].double().mean()) if (outs >= 1).any() else 0.0,
    }


def _nocontext_head_loss(task: TriggersTask, queries: torch.Tensor) -> float:
    """Entropy of the output distribution pi_o(.|q) averaged over the in-context queries q (M,)."""
    if not len(queries):
        return float("nan")
    pool = task.output_pool(queries).double()                                         # (M, N)
    w = pool * task.cond[queries] if task.bigram_outs else pool
    return float(S.entropy(w / w.sum(-1, keepdim=True)).mean())
