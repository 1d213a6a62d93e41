"""The simplified model's in-context loss (``loss_head_only``) in fewer operations: the training
step on steps that are not evaluated.

The same function as ``Transformer.forward`` followed by the loss on ``logits[outs >= 2]``,
rearranged so that no (B, T, d) x (d, d) product is taken that the loss does not need:

- layer 1 reads its input ``x = W_E[tokens] + P[:T]`` from tables: ``x W^T`` is a row of the (N T, d)
  table ``W_E W^T + P W^T`` of every token at every position, for W_K and for the value-output
  map ``W_O W_V`` (one matrix), so nothing of size (B, T, d) is multiplied or summed;
- layer 2 mixes the residual stream first and applies its value and output maps after, at the
  targets only: ``(A (h W_V^T) W_O^T)[targets] = (A h)[targets] (W_O W_V)^T``; FFN and unembedding
  run at the targets only;
- attention is the explicit float softmax while the (B, T, T) scores are small (the backward pass
  then skips the gradients nobody needs: layer 1's queries and values are frozen tables), and the
  fused kernel above ``EXPLICIT_SCORES`` entries, where memory traffic dominates.

Every parameter stays in the autograd graph, so the gradients are those of the full pass up to float
rounding (``tests/test_targets.py`` checks both paths against the full pass and the official code).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from birth.core.model import Transformer

# Largest B T^2 with explicit attention. Measured with `birth bench step` on 2 cores: explicit wins
# at batch 64 and T <= 128 (2^20 scores), the fused kernel at batch 512 and T 256 (2^25).
EXPLICIT_SCORES = 1 << 22


def supports(model: Transformer) -> bool:
    """The rearranged pass covers the simplified model with absolute positions (not RoPE) and no
    first-layer FFN (which would sit between the tables and layer 1's attention)."""
    return model.args.arch == "simplified" and not model.use_rope and not hasattr(model.layers[0], "ff")


def _rows(model: Transformer, tokens: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    """``(W_E[tokens] + P[:T]) @ w.T`` (B, T, d) (``w`` None: the identity), gathered from one
    (N T, d) table of every token at every position."""
    t = tokens.shape[1]
    e, p = model.tok_embeddings.weight, model.positions(t)
    if w is not None:
        e, p = e @ w.T, p @ w.T
    table = (e.unsqueeze(1) + p.unsqueeze(0)).flatten(0, 1)                             # (N T, d)
    return F.embedding(tokens * t + torch.arange(t, device=tokens.device), table)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
            explicit: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Causal single-head attention of (B, T, d) queries, keys and values; the pattern (B, T, T)
    when ``explicit``."""
    if not explicit:
        return F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                              is_causal=True, scale=scale).squeeze(1), None
    t = q.shape[1]
    later = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    attn = F.softmax((q @ k.transpose(1, 2) * scale).float().masked_fill(later, float("-inf")), -1).type_as(v)
    return attn @ v, attn


def forward(model: Transformer, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None,
            return_attn: bool = False, explicit: Optional[bool] = None):
    """``model(tokens, return_attn)``, rearranged: logits (B, T, N) float32, or ``logits[targets]``
    (n, N) for a (B, T) boolean mask ``targets``; with ``return_attn`` also the [(B, 1, T, T)]
    pattern of each layer. ``explicit`` forces one attention computation (default: by the size of
    the scores; always explicit for the patterns)."""
    b, t = tokens.shape
    explicit = return_attn or (b * t * t <= EXPLICIT_SCORES if explicit is None else explicit)
    att1, att2 = model.layers[0].attention, model.layers[1].attention
    x = _rows(model, tokens, None)                                                      # (B, T, d)
    k1 = _rows(model, tokens, att1.wk.weight)
    v1 = _rows(model, tokens, att1.wo.weight @ att1.wv.weight)                          # W_O W_V folded
    a1, p1 = _attend(x, k1, v1, att1.scale, explicit)                                   # W_Q = identity
    h = x + a1
    mixed, p2 = _attend(h, att2.wk(h), h, att2.scale, explicit)                         # A h: values after
    if targets is None:
        h, mixed = h.flatten(0, 1), mixed.flatten(0, 1)
    else:
        at = targets.flatten().nonzero().squeeze(1)                                     # flat (B T) indices
        h, mixed = h.flatten(0, 1).index_select(0, at), mixed.flatten(0, 1).index_select(0, at)
    out = h + mixed @ (att2.wo.weight @ att2.wv.weight).T                              # (n, d)
    ff = getattr(model.layers[1], "ff", None)
    if ff is not None:
        out = out + ff(out)
    logits = model.output(out)
    logits = (logits * model.output_scale if model.output_scale != 1.0 else logits).float()
    if targets is None:
        logits = logits.view(b, t, -1)
    return (logits, [p1.unsqueeze(1), p2.unsqueeze(1)]) if return_attn else logits


def in_context_loss(model: Transformer, tokens: torch.Tensor, y: torch.Tensor, outs: torch.Tensor,
                    explicit: Optional[bool] = None) -> torch.Tensor:
    """Cross-entropy of ``model(tokens)`` at the in-context targets (``outs >= 2``)."""
    targets = outs >= 2
    return F.cross_entropy(forward(model, tokens, targets, explicit=explicit), y[targets])
