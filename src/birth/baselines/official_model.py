"""The official simplified model's computation, as the speed baseline of ``birth bench step``.

It computes what ``ihead_basic_model.py`` computes, in the same way: explicit scores ``q k^T /
sqrt(d)``, an additive ``-inf`` causal mask built each call, a float softmax, then the value
product; W_Q is the identity; layer 1's W_V and W_O and layer 2's W_V are frozen. It holds no
weights of its own: it reads those of a ``birth.core.model.Transformer`` (simplified, without
FFNs, RoPE or tied output), so both compute the same function from the same parameters and an
optimizer step updates both.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class OfficialSimplified(nn.Module):
    """The official forward pass over the weights of ``model`` (shared, not copied)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        a = model.args
        if a.arch != "simplified" or a.first_ffn or a.final_ffn or a.use_rope or a.tie_output:
            raise ValueError("the official baseline covers the simplified model without FFN, RoPE or tied output")
        self.model = model
        self.sqrt_d = None if a.no_sqrtd else math.sqrt(a.dim)

    def _attention(self, attention: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        xq, xk, xv = x, attention.wk(x), attention.wv(x)                       # W_Q = identity
        scores = torch.matmul(xq, xk.transpose(1, 2))                          # (B, T, T)
        if self.sqrt_d is not None:
            scores = scores / self.sqrt_d
        scores = scores + mask
        scores = F.softmax(scores.float(), dim=-1).type_as(x)
        return attention.wo(torch.matmul(scores, xv))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = tokens.shape[1]
        h = m.tok_embeddings(tokens) + m.pe[:n].unsqueeze(0)
        mask = torch.triu(torch.full((1, n, n), float("-inf"), device=tokens.device), diagonal=1).type_as(h)
        for layer in m.layers:
            h = h + self._attention(layer.attention, h, mask)
        return m.output(h).float()
