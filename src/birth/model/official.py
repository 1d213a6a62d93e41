"""The official simplified model's computation (``ihead_basic_model.py``), as the speed baseline of
``birth bench step`` and the tests' oracle of ``birth.model.simplified_pass``.

It computes what ``ihead_basic_model.py`` computes, in the same way: the embeddings plus positions
(none with RoPE, which rotates layer 1's queries and keys), explicit scores ``q k^T / sqrt(d)``
(no scale with ``no_sqrtd``), an additive ``-inf`` causal mask built each call, a float softmax,
the value product and W_O per layer, each layer's optional feed-forward after it
(``first_ffn``, ``final_ffn``: linear, or a ReLU MLP), then W_U (tied: W_E / d). W_Q is the
identity. It holds no weights of its own: it reads those of a ``birth.model.transformer.Transformer``
(simplified), so both compute the same function from the same parameters and an optimizer step
updates both.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from birth.model.positions import apply_rope


class OfficialSimplified(nn.Module):
    """The official forward pass over the weights of ``model`` (shared, not copied)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        a = model.args
        if a.arch != "simplified":
            raise ValueError("the official baseline is the simplified model's")
        self.model = model
        self.sqrt_d = None if a.no_sqrtd else math.sqrt(a.dim)

    def _attention(self, attention: nn.Module, x: torch.Tensor, mask: torch.Tensor,
                   freqs: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        xq, xk, xv = x, attention.wk(x), attention.wv(x)                       # W_Q = identity
        if freqs is not None:
            xq, xk = apply_rope(xq, freqs), apply_rope(xk, freqs)
        scores = torch.matmul(xq, xk.transpose(1, 2))                          # (B, T, T)
        if self.sqrt_d is not None:
            scores = scores / self.sqrt_d
        scores = scores + mask
        scores = F.softmax(scores.float(), dim=-1).type_as(x)
        return attention.wo(torch.matmul(scores, xv)), scores

    def forward(self, tokens: torch.Tensor, return_attn: bool = False):
        """Logits (B, T, N); with ``return_attn`` also each layer's attention (B, 1, T, T)."""
        m = self.model
        n = tokens.shape[1]
        h = m.tok_embeddings(tokens)
        if not m.use_rope:
            h = h + m.pe[:n].unsqueeze(0)
        mask = torch.triu(torch.full((1, n, n), float("-inf"), device=tokens.device), diagonal=1).type_as(h)
        patterns = []
        for i, layer in enumerate(m.layers):
            freqs = m.freqs[:n] if m.use_rope and i == 0 else None
            a, attn = self._attention(layer.attention, h, mask, freqs)
            h = h + a
            patterns.append(attn.unsqueeze(1))
            ff = getattr(layer, "ff", None)
            if ff is not None:
                h = h + ff(h)
        logits = m.output(h)
        # tied: the official W_U is W_E / sqrt(d) and the logits are divided by sqrt(d) again
        logits = (logits * m.output_scale if m.output_scale != 1.0 else logits).float()
        return (logits, patterns) if return_attn else logits
