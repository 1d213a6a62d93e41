"""Building blocks of the tasks' exact strategies: each maps tokens (B, T) to next-token
probabilities (B, T, N), float64, from the context x_1..x_t of every position t (never later tokens).

- ``uniform``: 1/N everywhere;
- ``context_unigram``: the in-context unigram, (c_v + alpha) / (t + N alpha) with c_v the count of v
  in x_1..x_t (alpha = 1: the Dirichlet(1) posterior mean of i.i.d. tokens; Edelman et al.'s
  unigram strategy, which also counts the current token);
- ``context_ngram``: the in-context n-gram, (c(u, v) + alpha) / (c(u) + N alpha) with u the last
  n - 1 tokens x_{t-n+2..t} and c(u, v) the count of u followed by v within x_1..x_t: the Bayes
  predictor of a chain whose rows are Dirichlet(alpha) (uniform before n - 1 tokens are seen);
- ``context_codes``: the last n - 1 tokens of every position as one id (the row of an n-gram table);
- ``copy_last_occurrence``: a copy of the token that followed the latest earlier occurrence of x_t
  (uniform where x_t has none);
- ``running_counts``, ``entropy``: the counts c_v of x_1..x_t, and the entropy of a law in nats.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def uniform(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.full((*x.shape, n), 1.0 / n, dtype=torch.float64, device=x.device)


def running_counts(x: torch.Tensor, n: int) -> torch.Tensor:
    """c[b, t, v] = number of s <= t with x[b, s] = v: (B, T, N) float64."""
    return F.one_hot(x, n).double().cumsum(1)


def context_unigram(x: torch.Tensor, n: int, alpha: float = 1.0) -> torch.Tensor:
    counts = running_counts(x, n) + alpha
    return counts / counts.sum(-1, keepdim=True)


def context_ngram(x: torch.Tensor, n: int, order: int, alpha: float = 1.0) -> torch.Tensor:
    """The in-context n-gram of ``order`` n >= 2 (see the module docstring), (B, T, N) float64."""
    t = x.shape[1]
    code, valid = context_codes(x, n, order - 1)                                       # the last n-1 tokens as one id
    # transitions u -> v ending at s + 1 <= t: context code at s (s >= ctx - 1) followed by x[s + 1]
    same = (code[:, :, None] == code[:, None, :]) & valid[None, None, :] & valid[None, :, None]   # (B, T, S)
    same &= torch.ones(t, t, dtype=torch.bool, device=x.device).tril(-1)              # s < t
    nxt = F.one_hot(torch.cat([x[:, 1:], x[:, :1]], 1), n).double()                    # (B, S, N): x[s + 1]
    counts = same.double() @ nxt + alpha                                               # (B, T, N)
    probs = counts / counts.sum(-1, keepdim=True)
    probs[:, ~valid] = 1.0 / n
    return probs


def context_codes(x: torch.Tensor, n: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``length`` tokens x_{t-length+1..t} of every position as one id, the newest token the
    most significant digit: code_t = sum_j x_{t-j} n^(length-1-j), (B, T) long; and where the
    context is complete (t >= length - 1), (T,) bool (missing tokens count as 0)."""
    b, t = x.shape
    code = torch.zeros_like(x)
    for j in range(length):
        shifted = torch.cat([x.new_zeros(b, j), x[:, :t - j]], 1) if j else x
        code = code * n + shifted
    return code, torch.arange(t, device=x.device) >= length - 1


def copy_last_occurrence(x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """One-hot on y_s for the latest s < t with x_s = x_t (y_s = x_{s+1} is within the context);
    uniform where x_t has no earlier occurrence."""
    t = x.shape[1]
    earlier = (x[:, :, None] == x[:, None, :]) & torch.ones(t, t, dtype=torch.bool, device=x.device).tril(-1)
    index = torch.arange(t, device=x.device).expand_as(earlier)
    last = torch.where(earlier, index, -1).max(-1).values                              # (B, T)
    seen = last >= 0
    probs = uniform(x, n)
    copied = y.gather(1, last.clamp(min=0))                                            # (B, T)
    probs[seen] = F.one_hot(copied[seen], n).double()
    return probs


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of p (..., N), with 0 log 0 = 0."""
    return -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)
