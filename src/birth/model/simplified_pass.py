"""The simplified model's forward pass (``Transformer.forward`` of ``arch='simplified'``), for one run
or for a stack of runs trained together, computed at the targets only where it can.

The function of the paper's simplified model (SPEC §2.3), rearranged so that no (B, T, d) x (d, d)
product is taken that the output does not need:

- layer 1 reads its input ``x = W_E[tokens] + P[:T]`` from tables: ``x W^T`` is a row of the (N T, d)
  table ``W_E W^T + P W^T`` of every token at every position, for W_K and for the value-output
  map ``W_O W_V`` (one matrix), so nothing of size (B, T, d) is multiplied or summed (with RoPE
  the tables are per token, rotated per position);
- layer 2 runs at the targets only: its queries are the targets' (``h_t W_K`` against the stream
  itself, so no key is projected), it mixes the residual stream first and applies its value and
  output maps after, ``(A (h W_V^T) W_O^T)[targets] = (A h)[targets] (W_O W_V)^T``; FFN and
  unembedding run at the targets only;
- attention is the explicit float softmax while the (B, T, T) scores are small (the backward pass
  then skips the gradients nobody needs: layer 1's queries and values are frozen tables), and the
  fused kernel above ``EXPLICIT_SCORES`` entries, where memory traffic dominates.

Every parameter stays in the autograd graph. The hook points of ``birth.model.hooks`` act here as in
the full architecture: a hook on a pattern makes the attention explicit, a hook on layer 2's
pattern, output, residual stream or the logits makes layer 2 run at every position (``pass_name`` says which
pass a set of hooks takes). ``birth.model.official`` computes the same function the
official way (``tests/test_targets.py``). A stack of R runs (``Weights.stacked``) holds every matrix
with a leading run dimension; each run keeps its own batch, and the R losses are independent
(``tests/test_stacked.py``).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
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
    sources: dict = field(default_factory=dict)   # layer 1's tables: the weights each is made of
    tables: Optional[dict] = None                 # where the tables of frozen weights are kept

    @classmethod
    def of(cls, model: nn.Module) -> "Weights":
        w = cls.stacked(model, dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers()))
        w.tables = _FROZEN_TABLES.setdefault(model, {})
        return w

    @classmethod
    def stacked(cls, template: nn.Module, tensors: dict[str, torch.Tensor]) -> "Weights":
        """From tensors named as ``template``'s parameters and buffers, each one run's or a stack's."""
        a = lambda i, m: tensors[f"layers.{i}.attention.w{m}.weight"]
        ffn = lambda i: tuple(tensors[f"layers.{i}.ff.{n}"] for n in ("weight", "w1.weight", "w2.weight")
                              if f"layers.{i}.ff.{n}" in tensors)
        rope = template.use_rope
        e, p = tensors["tok_embeddings.weight"], None if rope else tensors["pe"]
        x = (e,) if rope else (e, p)
        return cls(e, p, a(0, "k"), a(0, "o") @ a(0, "v"), a(1, "k"), a(1, "o"), a(1, "v"), tensors["output.weight"],
                   ffn(0), ffn(1), template.layers[0].attention.scale, template.output_scale,
                   template.freqs if rope else None,
                   sources={"x": x, "K1": (*x, a(0, "k")), "OV1": (*x, a(0, "o"), a(0, "v"))})


# Layer 1's tables of a model's frozen weights (the embeddings, positions, W_V1 and W_O1 of the
# README's model) are the same at every step: kept while their weights are unchanged in place.
_FROZEN_TABLES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


try:  # torch >= 2.4 tells the autocast state of each device type
    torch.is_autocast_enabled("cpu")
    _AUTOCAST_BY_DEVICE = True
except TypeError:
    _AUTOCAST_BY_DEVICE = False


def _kept(w: Weights, name: str, t: int, make) -> torch.Tensor:
    """``make()``, or the table made before from the same frozen weights."""
    sources = w.sources.get(name, ())
    if w.tables is None or not sources or (torch.is_grad_enabled() and any(s.requires_grad for s in sources)):
        return make()
    # under autocast the products are made in another precision: kept apart (per device type)
    autocast = torch.is_autocast_enabled(sources[0].device.type) if _AUTOCAST_BY_DEVICE else \
        (torch.is_autocast_enabled(), torch.is_autocast_cpu_enabled())
    stamp = (t, autocast, *((s.data_ptr(), s._version, s.shape, s.dtype, s.device) for s in sources))
    kept = w.tables.get(name)
    if kept is None or kept[0] != stamp:
        kept = w.tables[name] = (stamp, make().detach())
    return kept[1]


def _linear(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``z @ w.T``: one run's (B, ..., i) by (o, i), or a stack's (R, B, ..., i) by (R, o, i)."""
    if w.dim() == 2:
        return F.linear(z, w)
    return (z.reshape(z.shape[0], -1, z.shape[-1]) @ w.mT).view(*z.shape[:-1], w.shape[-2])


def _ffn(z: torch.Tensor, ff: tuple) -> torch.Tensor:
    """A feed-forward's output: linear (W,) or ReLU MLP (W1, W2)."""
    return _linear(z, ff[0]) if len(ff) == 1 else _linear(F.relu(_linear(z, ff[0])), ff[1])


def _rows(w: Weights, tokens: torch.Tensor, name: str) -> torch.Tensor:
    """``(W_E[tokens] + P[:T]) @ m.T`` for m = {'x': the identity, 'K1': W_K1, 'OV1': W_O1 W_V1}[name],
    for tokens (..., B, T), gathered from one (N T, d) table of every token at every position (per
    run); without positions (RoPE) from the (N, d) table of the tokens."""
    t = tokens.shape[-1]
    m = {"x": None, "K1": w.K1, "OV1": w.OV1}[name]

    def make() -> torch.Tensor:
        e = w.E if m is None else w.E @ m.mT
        if w.P is None:
            return e.unsqueeze(-2)                                                            # (.., N, 1, d)
        p = w.P[..., :t, :]
        return e.unsqueeze(-2) + (p if m is None else p @ m.mT).unsqueeze(-3)                 # (.., N, T, d)

    table = _kept(w, name, t, make)
    index = tokens if w.P is None else tokens * t + torch.arange(t, device=tokens.device)
    if table.dim() == 4:  # a stack: run r's table follows run r - 1's
        per_run = table.shape[1] * table.shape[2]
        index = index + (torch.arange(table.shape[0], device=tokens.device) * per_run).view(-1, 1, 1)
    return F.embedding(index, table.flatten(0, -2))


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Scores for a softmax: float32 under bf16 or half (their rounding would show), float64 kept."""
    return t if t.dtype == torch.float64 else t.float()


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
    attn = F.softmax(at_least_float32(q @ k.mT * scale).masked_fill(later, float("-inf")), -1).type_as(v)
    if hooks.wants(point):
        attn = hooks(point, attn.unsqueeze(-3)).squeeze(-3)
    return attn @ v, attn


def _layer1(w: Weights, tokens: torch.Tensor, explicit: bool, hooks: Hooks = NO_HOOKS):
    """The residual stream after layer 1 (layer 2's input) at every position, and layer 1's pattern
    (None when fused)."""
    x = hooks("blocks.0.hook_resid_pre", _rows(w, tokens, "x"))                        # (.., B, T, d)
    if hooks.wants("blocks.0.hook_resid_pre"):  # the tables hold the unhooked input: multiply instead
        k, v = _linear(x, w.K1), _linear(x, w.OV1)
    else:
        k, v = _rows(w, tokens, "K1"), _rows(w, tokens, "OV1")
    q = x                                                                              # W_Q = identity
    if w.freqs is not None:
        t = tokens.shape[-1]
        q, k = apply_rope(q, w.freqs[:t]), apply_rope(k, w.freqs[:t])
    a1, p1 = _attend(q, k, v, w.scale, explicit, hooks, "blocks.0.attn.hook_pattern")
    h = x + hooks("blocks.0.hook_attn_out", a1)
    if w.ff1:
        h = h + hooks("blocks.0.hook_mlp_out", _ffn(h, w.ff1))
    return hooks("blocks.1.hook_resid_pre", hooks("blocks.0.hook_resid_post", h)), p1


def _streams(w: Weights, tokens: torch.Tensor, explicit: bool, hooks: Hooks = NO_HOOKS):
    """The residual stream after layer 1 and layer 2's attention mix ``A h`` (values not yet
    applied), at every position, with both attention patterns (None when fused)."""
    h, p1 = _layer1(w, tokens, explicit, hooks)
    mixed, p2 = _attend(h, _linear(h, w.K2), h, w.scale, explicit, hooks, "blocks.1.attn.hook_pattern")
    return h, mixed, (p1, p2)


def target_positions(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a (..., T) boolean mask: each sequence's target positions in order, padded to the largest
    count (..., m), and which entries are real (..., m)."""
    t = targets.shape[-1]
    order = torch.where(targets, torch.arange(t, device=targets.device), t).sort(-1).values
    at = order[..., :int(targets.sum(-1).max())]
    return at.clamp(max=t - 1), at < t


# Sequences per group of layer 2 at the targets: counts vary a lot between sequences (34 on average
# of 128 at the README's sizes, up to 126), so sequences are sorted by count and padded per group.
GROUPS = 8


@dataclass
class AtTargets:
    """Layer 2's input and attention mix at the targets of one group of sequences (per run)."""

    h: torch.Tensor        # (R', G, m, d)
    mixed: torch.Tensor    # (R', G, m, d)
    flat: torch.Tensor     # (R', G, m) each entry's index b T + t in its run's (B, T)
    real: torch.Tensor     # (R', G, m) which entries are targets (the rest pad)


def _at_targets(w: Weights, tokens: torch.Tensor, targets: torch.Tensor, explicit: bool,
                hooks: Hooks) -> list[AtTargets]:
    """Layer 2 at the targets only, per group of sequences (tokens and targets (R', B, T)). The
    sequences of each run are sorted by their number of targets and padded per group. With W_Q the
    identity a query's scores are ``h_t^T W_K h_s = (h_t W_K) . h_s``: neither the keys of every
    position nor the scores of the other queries are formed."""
    r, b, t = tokens.shape
    order = targets.sum(-1).argsort(-1, descending=True)                                # (R', B)
    by_order = lambda z: z.gather(1, order.view(r, b, *[1] * (z.dim() - 2)).expand_as(z))
    if hooks.points:  # hooks see the batch in its own order
        h = by_order(_layer1(w, tokens if w.K2.dim() == 3 else tokens[0], explicit, hooks)[0].view(r, b, t, -1))
    else:             # sorting the tokens costs nothing; sorting h would cost its size twice
        h = _layer1(w, by_order(tokens), explicit, hooks)[0]
    size, d, out = -(-b // GROUPS), h.shape[-1], []
    for hg, rows, seqs in zip(h.split(size, 1), by_order(targets).split(size, 1), order.split(size, 1)):
        if not rows.any():
            continue
        at, real = target_positions(rows)                                              # (R', G, m)
        q = hg.gather(-2, at.unsqueeze(-1).expand(*at.shape, d))                        # (R', G, m, d)
        scores = at_least_float32(_linear(q, w.K2.mT) @ hg.mT * w.scale)                # (R', G, m, T)
        later = torch.arange(t, device=h.device) > at.unsqueeze(-1)
        mixed = F.softmax(scores.masked_fill(later, float("-inf")), -1).type_as(h) @ hg
        out.append(AtTargets(q, mixed, seqs.unsqueeze(-1) * t + at, real))
    return out


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
    where = "every position" if not targets_only or _layer2_hooked(hooks) else "the targets only"
    return f"simplified, rearranged: layer 2 at {where}, {'explicit' if explicit else 'fused'} attention"


def forward(model: nn.Module, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None,
            return_attn: bool = False, explicit: Optional[bool] = None, hooks: Optional[Hooks] = None):
    """Logits (B, T, N) float32, or ``logits[targets]`` (n, N) for a (B, T) boolean mask ``targets``;
    with ``return_attn`` also the [(B, 1, T, T)] pattern of each layer. ``explicit`` forces one
    attention computation (default: by the size of the scores; always explicit for the patterns).
    ``hooks``: default, the model's active hook points."""
    hooks = model_hooks(model.hook_points(), tokens, model.step) if hooks is None else hooks
    w = Weights.of(model)
    if targets is not None and not return_attn and not _layer2_hooked(hooks):
        groups = _at_targets(w, tokens.unsqueeze(0), targets.unsqueeze(0), _explicit(tokens, explicit, hooks), hooks)
        real = lambda field: torch.cat([getattr(g, field)[g.real] for g in groups])    # the targets, no padding
        return _head(w, real("h"), real("mixed"))[real("flat").argsort()]               # (n, N), row-major
    h, mixed, patterns = _streams(w, tokens, return_attn or _explicit(tokens, explicit, hooks), hooks)
    logits = _head(w, h, mixed, hooks)
    if targets is not None:
        logits = logits[targets]
    return (logits, [p.unsqueeze(1) for p in patterns]) if return_attn else logits


def _layer2_hooked(hooks: Hooks) -> bool:
    """Whether these hooks see layer 2 at positions other than the targets (its pattern, its output)."""
    return every_position(hooks) or hooks.wants("blocks.1.attn.hook_pattern")


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
    explicit = _explicit(tokens, explicit, hooks)
    if _layer2_hooked(hooks):
        h, mixed, _ = _streams(w, tokens, explicit, hooks)
        logits = _head(w, h, mixed, hooks)                                              # (R, B, T, N)
        ce = F.cross_entropy(logits.flatten(0, 2), y.flatten(), reduction="none").view(targets.shape)
        return (ce * targets).flatten(1).sum(1) / targets.flatten(1).sum(1)
    r, total = tokens.shape[0], 0
    for g in _at_targets(w, tokens, targets, explicit, hooks):
        logits = _head(w, g.h, g.mixed)                                                 # (R, G, m, N)
        at_y = y.flatten(1).gather(1, g.flat.view(r, -1))
        ce = F.cross_entropy(logits.flatten(0, 2), at_y.flatten(), reduction="none").view(r, -1)
        total = total + (ce * g.real.view(r, -1)).sum(1)
    return total / targets.flatten(1).sum(1)
