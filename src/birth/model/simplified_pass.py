"""The simplified model's forward pass (``Transformer.forward`` of ``arch='simplified'``), for one run
or for a stack of runs trained together, computed at the targets only where it can.

The function of the paper's simplified model (SPEC §2.3), rearranged so that no (B, T, d) x (d, d)
product is taken that the output does not need:

- layer 1 reads its input ``x = W_E[tokens] + P[:T]`` from tables: ``x W^T`` is a row of the (N T, d)
  table ``W_E W^T + P W^T`` of every token at every position, for W_K and for the value-output
  map ``W_O W_V`` (one matrix), so nothing of size (B, T, d) is multiplied or summed (with RoPE
  the tables are per token, rotated per position);
- layer 2 mixes the residual stream first and applies its value and output maps after, at the
  targets only: ``(A (h W_V^T) W_O^T)[targets] = (A h)[targets] (W_O W_V)^T``; FFN and unembedding
  run at the targets only;
- attention is the explicit float softmax while the (B, T, T) scores are small (the backward pass
  then skips the gradients nobody needs: layer 1's queries and values are frozen tables), and the
  fused kernel above ``EXPLICIT_SCORES`` entries, where memory traffic dominates.

Every parameter stays in the autograd graph. The hook points of ``birth.model.hooks`` act here as in
the full architecture: a hook on a pattern makes the attention explicit, a hook on layer 2's
output, residual stream or the logits makes layer 2 run at every position (``pass_name`` says which
pass a set of hooks takes). ``birth.model.official`` computes the same function the
official way (``tests/test_targets.py``). A stack of R runs (``Weights.stacked``) holds every matrix
with a leading run dimension; each run keeps its own batch, and the R losses are independent
(``tests/test_stacked.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from birth.model.hooks import NO_HOOKS, Hooks, model_hooks
from birth.model.positions import apply_rope

# Largest B T^2 with explicit attention. Measured with `birth bench step` on 2 cores: explicit wins
# at batch 64 and T <= 128 (2^20 scores), the fused kernel at batch 512 and T 256 (2^25).
EXPLICIT_SCORES = 1 << 22
# Points after layer 2's attention: hooking one runs layer 2 at every position.
LAYER2_POINTS = ("blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post", "hook_logits")


# The hook points this pass honours: all but ``attn.hook_z`` (it never forms layer 1's values
# before W_O). A hook elsewhere makes ``Transformer.forward`` call every module instead.
HONOURED = frozenset({f"blocks.{i}.{p}" for i in (0, 1) for p in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out",
                                                               "hook_resid_post", "attn.hook_pattern")}
                     | {"hook_logits"})


@dataclass
class Weights:
    """What the pass reads: one run's matrices (2-D), or R runs' (a leading R)."""

    E: torch.Tensor             # (N, d) token embeddings
    P: Optional[torch.Tensor]   # (T_max, d) positions; None with RoPE
    K1: torch.Tensor
    OV1: torch.Tensor           # W_O1 W_V1
    K2: torch.Tensor
    O2: torch.Tensor
    V2: torch.Tensor
    U: torch.Tensor             # (N, d) unembedding
    ff1: tuple                  # layer 1's FFN: () none, (W,) linear, (W1, W2) ReLU MLP
    ff: tuple                   # layer 2's FFN, the same
    scale: float                # of the attention scores
    output_scale: float
    freqs: Optional[torch.Tensor] = None  # RoPE angles of layer 1 (T_max, d/2), shared by a stack

    @classmethod
    def of(cls, model: nn.Module) -> "Weights":
        return cls.stacked(model, dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers()))

    @classmethod
    def stacked(cls, template: nn.Module, tensors: dict[str, torch.Tensor]) -> "Weights":
        """From tensors named as ``template``'s parameters and buffers, each one run's or a stack's."""
        a = lambda i, m: tensors[f"layers.{i}.attention.w{m}.weight"]
        ffn = lambda i: tuple(tensors[f"layers.{i}.ff.{n}"] for n in ("weight", "w1.weight", "w2.weight")
                              if f"layers.{i}.ff.{n}" in tensors)
        rope = template.use_rope
        return cls(tensors["tok_embeddings.weight"], None if rope else tensors["pe"], a(0, "k"), a(0, "o") @ a(0, "v"),
                   a(1, "k"), a(1, "o"), a(1, "v"), tensors["output.weight"], ffn(0), ffn(1),
                   template.layers[0].attention.scale, template.output_scale,
                   template.freqs if rope else None)


def _linear(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``z @ w.T``: one run's (B, ..., i) by (o, i), or a stack's (R, B, ..., i) by (R, o, i)."""
    if w.dim() == 2:
        return F.linear(z, w)
    return (z.reshape(z.shape[0], -1, z.shape[-1]) @ w.mT).view(*z.shape[:-1], w.shape[-2])


def _ffn(z: torch.Tensor, ff: tuple) -> torch.Tensor:
    """A feed-forward's output: linear (W,) or ReLU MLP (W1, W2)."""
    return _linear(z, ff[0]) if len(ff) == 1 else _linear(F.relu(_linear(z, ff[0])), ff[1])


def _rows(w: Weights, tokens: torch.Tensor, m: Optional[torch.Tensor]) -> torch.Tensor:
    """``(W_E[tokens] + P[:T]) @ m.T`` (``m`` None: the identity) for tokens (..., B, T), gathered
    from one (N T, d) table of every token at every position (per run); without positions (RoPE)
    from the (N, d) table of the tokens."""
    t = tokens.shape[-1]
    e = w.E if m is None else w.E @ m.mT
    if w.P is None:
        table, index = e.unsqueeze(-2), tokens                                            # (.., N, 1, d)
        t = 1
    else:
        p = w.P[..., :tokens.shape[-1], :]
        table = e.unsqueeze(-2) + (p if m is None else p @ m.mT).unsqueeze(-3)            # (.., N, T, d)
        index = tokens * t + torch.arange(t, device=tokens.device)
    if table.dim() == 4:  # a stack: run r's table follows run r - 1's
        index = index + (torch.arange(table.shape[0], device=tokens.device) * table.shape[1] * t).view(-1, 1, 1)
    return F.embedding(index, table.flatten(0, -2))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, explicit: bool,
            hooks: Hooks = NO_HOOKS, point: str = "") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Causal single-head attention of (..., T, d) queries, keys and values; the pattern (..., T, T)
    when ``explicit`` (the hook ``point`` sees it as (..., 1, T, T): one head)."""
    t = q.shape[-2]
    if not explicit:
        heads = lambda z: z.reshape(-1, 1, t, z.shape[-1])                               # (.., 1 head, T, d)
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True, scale=scale)
        return out.view(*q.shape[:-1], v.shape[-1]), None
    later = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    attn = F.softmax((q @ k.mT * scale).float().masked_fill(later, float("-inf")), -1).type_as(v)
    if hooks.wants(point):
        attn = hooks(point, attn.unsqueeze(-3)).squeeze(-3)
    return attn @ v, attn


def _streams(w: Weights, tokens: torch.Tensor, explicit: bool, hooks: Hooks = NO_HOOKS):
    """The residual stream after layer 1 and layer 2's attention mix ``A h`` (values not yet
    applied), at every position, with both attention patterns (None when fused)."""
    x = hooks("blocks.0.hook_resid_pre", _rows(w, tokens, None))                        # (.., B, T, d)
    if hooks.wants("blocks.0.hook_resid_pre"):  # the tables hold the unhooked input: multiply instead
        k, v = _linear(x, w.K1), _linear(x, w.OV1)
    else:
        k, v = _rows(w, tokens, w.K1), _rows(w, tokens, w.OV1)
    q = x                                                                              # W_Q = identity
    if w.freqs is not None:
        t = tokens.shape[-1]
        q, k = apply_rope(q, w.freqs[:t]), apply_rope(k, w.freqs[:t])
    a1, p1 = _attend(q, k, v, w.scale, explicit, hooks, "blocks.0.attn.hook_pattern")
    h = x + hooks("blocks.0.hook_attn_out", a1)
    if w.ff1:
        h = h + hooks("blocks.0.hook_mlp_out", _ffn(h, w.ff1))
    h = hooks("blocks.1.hook_resid_pre", hooks("blocks.0.hook_resid_post", h))
    mixed, p2 = _attend(h, _linear(h, w.K2), h, w.scale, explicit, hooks, "blocks.1.attn.hook_pattern")
    return h, mixed, (p1, p2)


def _head(w: Weights, h: torch.Tensor, mixed: torch.Tensor, hooks: Hooks = NO_HOOKS) -> torch.Tensor:
    """Layer 2's output and the unembedding at the chosen positions: float32 logits."""
    out = h + hooks("blocks.1.hook_attn_out", _linear(mixed, w.O2 @ w.V2))
    if w.ff:
        out = out + hooks("blocks.1.hook_mlp_out", _ffn(out, w.ff))
    logits = _linear(hooks("blocks.1.hook_resid_post", out), w.U)
    return hooks("hook_logits", (logits * w.output_scale if w.output_scale != 1.0 else logits).float())


def explicit_attention(batch: int, t: int) -> bool:
    """Whether a pass over ``batch`` sequences of length ``t`` takes the explicit attention by default."""
    return batch * t * t <= EXPLICIT_SCORES


def _explicit(tokens: torch.Tensor, explicit: Optional[bool], hooks: Hooks = NO_HOOKS) -> bool:
    if hooks.wants("blocks.0.attn.hook_pattern") or hooks.wants("blocks.1.attn.hook_pattern"):
        return True
    return explicit_attention(*tokens.shape[-2:]) if explicit is None else explicit


def every_position(hooks: Hooks) -> bool:
    """Whether these hooks need layer 2 at every position (they see its output or the logits)."""
    return any(hooks.wants(p) for p in LAYER2_POINTS)


def pass_name(hooks: Hooks, targets_only: bool, explicit: bool) -> str:
    """Which pass a training step takes, in words (for summary.json)."""
    where = "every position" if not targets_only or every_position(hooks) else "the targets only"
    return f"simplified, rearranged: layer 2 at {where}, {'explicit' if explicit else 'fused'} attention"


def forward(model: nn.Module, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None,
            return_attn: bool = False, explicit: Optional[bool] = None, hooks: Optional[Hooks] = None):
    """Logits (B, T, N) float32, or ``logits[targets]`` (n, N) for a (B, T) boolean mask ``targets``;
    with ``return_attn`` also the [(B, 1, T, T)] pattern of each layer. ``explicit`` forces one
    attention computation (default: by the size of the scores; always explicit for the patterns).
    ``hooks``: default, the model's active hook points."""
    hooks = model_hooks(model.hook_points(), tokens, model.step) if hooks is None else hooks
    w = Weights.of(model)
    h, mixed, patterns = _streams(w, tokens, return_attn or _explicit(tokens, explicit, hooks), hooks)
    if targets is None:
        logits = _head(w, h, mixed, hooks)
    elif every_position(hooks):
        logits = _head(w, h, mixed, hooks)[targets]
    else:
        at = targets.flatten().nonzero().squeeze(1)                                     # flat (B T) indices
        logits = _head(w, h.flatten(0, 1).index_select(0, at), mixed.flatten(0, 1).index_select(0, at))
    return (logits, [p.unsqueeze(1) for p in patterns]) if return_attn else logits


def stacked_logits(w: Weights, tokens: torch.Tensor, hooks: Hooks = NO_HOOKS) -> torch.Tensor:
    """The logits (R, B, T, N) of each run of a stack on its tokens (R, B, T); ``hooks`` see every
    tensor with the leading R."""
    h, mixed, _ = _streams(w, tokens, _explicit(tokens, None, hooks), hooks)
    return _head(w, h, mixed, hooks)


def stacked_losses(w: Weights, tokens: torch.Tensor, y: torch.Tensor, targets: torch.Tensor,
                   explicit: Optional[bool] = None, hooks: Hooks = NO_HOOKS) -> torch.Tensor:
    """The loss at the targets of each run of a stack (R,): run r's weights on its batch (tokens, y,
    the targets mask: (R, B, T)). Their sum has each run's own gradient in that run's slice.
    ``hooks`` see every tensor with the leading R."""
    h, mixed, _ = _streams(w, tokens, _explicit(tokens, explicit, hooks), hooks)
    r, b, t = tokens.shape
    if every_position(hooks):
        logits = _head(w, h, mixed, hooks)                                              # (R, B, T, N)
        ce = F.cross_entropy(logits.flatten(0, 2), y.flatten(), reduction="none").view(r, b * t)
        mask = targets.reshape(r, b * t)
        return (ce * mask).sum(1) / mask.sum(1)
    targets = targets.reshape(r, b * t)
    count = targets.sum(1)                                                              # (R,)
    # each run's targets first, in order, padded to the longest run's count with position 0
    order = torch.where(targets, torch.arange(b * t, device=tokens.device), b * t).sort(1).values
    at = order[:, :int(count.max())].clamp(max=b * t - 1)                               # (R, n_max)
    valid = torch.arange(at.shape[1], device=tokens.device) < count.unsqueeze(1)
    pick = lambda z: z.reshape(r, b * t, -1).gather(1, at.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
    logits = _head(w, pick(h), pick(mixed))                                             # (R, n_max, N)
    ce = F.cross_entropy(logits.flatten(0, 1), y.view(r, b * t).gather(1, at).flatten(), reduction="none")
    return (ce.view(r, -1) * valid).sum(1) / count
