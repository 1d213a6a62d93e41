"""Repeated random tokens: the induction test of TransformerLens and Olsson et al. (2022).

Each sequence is h = ceil((T+1)/2) tokens drawn uniformly from V, then the same tokens again, cut to
T + 1 tokens z (z_s = z_{s-h} for s >= h); the model sees x = z[:-1] and predicts y = z[1:]. With
positions t counted from 0, y_t = z_{t+1} is a fresh token for t < h - 1 and a copy of x_{t+1-h} for
t >= h - 1. Target masks, per sequence:

- ``in_context``: t >= h. The current token x_t = x_{t-h} occurred h positions earlier, and the
  token after that occurrence is the target: what an induction head copies.
- ``first``: t = h - 1, the first token of the repeat. Its target is x_0, which follows no earlier
  occurrence of x_{h-1}, so no induction head can copy it; with a fixed h, a model that knows the
  position of the repeat can (the Bayes predictor is then certain).
- ``global``: t < h - 1, fresh uniform tokens that no predictor beats (loss log V).

With a fixed h a model can also copy by position, from the fixed offset h - 1 back, with one
attention layer and no induction head (it does: a pilot's layer-1 head learned exactly that).
``random_period`` draws h per sequence, uniformly from max(2, ceil((T+1)/4)) .. ceil((T+1)/2),
and repeats the block with period h to the end, so only the context tells where to copy from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Optional

import torch
import torch.nn.functional as F

from birth.fields import documented as _f
from birth.measures import strategies as S
from birth.tasks import register
from birth.tasks.base import Batch, PatchExample, Task, TaskArgs


@dataclass
class RepeatArgs(TaskArgs):
    """The data of the repeated-random-tokens task (``data_args.task=repeat``)."""

    vocab_size: int = _f(64, "repeat: number of tokens V, drawn uniformly")
    random_period: bool = _f(False, "repeat: a period h per sequence, uniform in ceil((T+1)/4)..ceil((T+1)/2), "
                                    "repeated to the end (else h = ceil((T+1)/2)): no fixed offset to copy from")


@register
class RepeatTask(Task):
    """Uniform random tokens repeated with period h, one block or several (module docstring)."""

    name = "repeat"
    vocab_key = "data_args.vocab_size"  # what sets N
    stack_keys = ("seq_length", "vocab_size")  # a stack's batches: one shape, one vocabulary
    Args = RepeatArgs
    masks = ("in_context", "global", "first")
    reference_strategies = ("bayes", "uniform")

    @classmethod
    def check(cls, d: RepeatArgs, *, loss_head_only: bool = False) -> None:
        if d.vocab_size < 2:
            raise ValueError(f"data_args.vocab_size: must be >= 2, got {d.vocab_size}")
        if d.seq_length < 3:
            raise ValueError(f"data_args.seq_length: must be >= 3 for a repeated target, got {d.seq_length}")

    @property
    def num_tokens(self) -> int:
        return self.args.vocab_size

    @property
    def periods(self) -> range:
        """The periods h a sequence may have: ceil((T+1)/2) alone, or a range with ``random_period``."""
        longest = (self.args.seq_length + 2) // 2                                    # ceil((T+1)/2)
        return range(max(2, (self.args.seq_length + 4) // 4) if self.args.random_period else longest, longest + 1)

    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        b, dev, periods = batch_size, self.device, self.periods
        block = torch.randint(self.num_tokens, (b, periods[-1]), generator=gen, device=dev)
        h = periods[0] + torch.randint(len(periods), (b, 1), generator=gen, device=dev)    # (B, 1)
        z = block.gather(1, torch.arange(self.args.seq_length + 1, device=dev) % h)       # z_s = block[s mod h]
        t = torch.arange(self.args.seq_length, device=dev)
        masks = {"in_context": t >= h, "global": t < h - 1, "first": t == h - 1}
        return Batch(z[:, :-1], z[:, 1:], masks, {"period": h.squeeze(1)})

    def patch_example(self, b: Batch, gen: torch.Generator) -> Optional[PatchExample]:
        """The first copy (positions 0 .. h-1) resampled, the rest kept: the second copy can no
        longer be read off the context; the metric is the mean log-probability of the next token over
        the second copy (the in-context targets). Marks: the first copy's end and the second copy's start."""
        h = b.latents["period"]                                                         # (B,)
        t = torch.arange(b.x.shape[1], device=b.x.device)
        first = t < h[:, None]
        fresh = torch.randint(self.num_tokens, b.x.shape, generator=gen, device=b.x.device)
        corrupted = torch.where(first, fresh, b.x)
        marks = [{"first copy ends": int(p) - 1, "second copy starts": int(p)} for p in h]
        return PatchExample(b.x, corrupted, b.y, b.masks["in_context"], marks)

    def strategies(self) -> dict:
        """``uniform``; and ``bayes``, the exact posterior predictive (with a fixed period: a copy of
        x_{t+1-h} from t = h - 1 on, uniform before)."""
        return {"uniform": lambda b: S.uniform(b.x, self.num_tokens), "bayes": self._bayes}

    def _bayes(self, b: Batch) -> torch.Tensor:
        """p(y_t | x_0..x_t) = sum over periods h of p(h | x_0..x_t) p(y_t | h, x_0..x_t): a prefix has
        likelihood V^-min(t+1, h) under every h it agrees with (x_s = x_{s-h} for h <= s <= t), 0 under
        the others; given h, y_t is x_{t+1-h} once t + 1 >= h, else uniform."""
        x, n = b.x, self.num_tokens
        t = torch.arange(x.shape[1], device=x.device)
        h = torch.tensor(list(self.periods), device=x.device)[:, None]                  # (K, 1)
        src = (t - h).clamp(min=0)                                                      # (K, T)
        agree = (t < h) | (x[:, None, :] == x[:, src])                                  # (B, K, T)
        consistent = agree.long().cumprod(-1).bool()
        log_w = torch.where(consistent, -torch.minimum(t + 1, h).double() * math.log(n), -math.inf)
        w = torch.softmax(log_w, 1)                                                     # (B, K, T): p(h | prefix)
        copies = t + 1 >= h                                                             # (K, T)
        probs = (w * ~copies).sum(1, keepdim=True).transpose(1, 2) / n * torch.ones(n, dtype=torch.float64,
                                                                                   device=x.device)
        for k in range(len(h)):
            source = x[:, (t + 1 - h[k]).clamp(min=0)]                                  # (B, T): x_{t+1-h}
            probs.scatter_add_(2, source[..., None], (w[:, k] * copies[k])[..., None])
        return probs

    def known_period(self, b: Batch) -> torch.Tensor:
        """The law of y_t given the context *and* the sequence's period h (an oracle): a copy of
        x_{t+1-h} from t = h - 1 on, uniform before. With a fixed period it is ``bayes``."""
        t = torch.arange(b.x.shape[1], device=b.x.device)
        h = b.latents["period"][:, None]                                                # (B, 1)
        probs = S.uniform(b.x, self.num_tokens)
        copies = t + 1 >= h                                                             # (B, T)
        probs[copies] = F.one_hot(b.x.gather(1, (t + 1 - h).clamp(min=0))[copies], self.num_tokens).double()
        return probs

    def floors(self) -> dict[str, float]:
        """``floor_loss_<mask>``: the Bayes predictor's expected loss on each mask of a fixed batch of
        1024 sequences, its cross-entropy to the true law of each target given the context and the
        period (exact for a fixed period: log V on ``global``, 0 on ``in_context`` and ``first``; with
        ``random_period`` the masks depend on the unseen period, so Bayes pays above log V on
        ``global`` what it gains on ``first``); and log V without the context."""
        b = self.batch(0, "floors", 0, 1024)
        bayes = self._bayes(b)
        loss = -(self.known_period(b) * torch.log(bayes.clamp(min=1e-300))).sum(-1)     # (B, T)
        res = {f"floor_loss_{m}": float(loss[b.masks[m]].mean()) for m in self.masks}
        return {**res, "nocontext_loss_in_context": math.log(self.num_tokens), "chance_acc": 1.0 / self.num_tokens}
