"""The built-in intervention kinds (``birth.training.interventions``). Layers and heads count from
0, as in the hook names (layer 0 is the paper's layer 1):

    clamp:L[.H]:PATTERN[:S]   mix head H of layer L's attention with PATTERN at strength S in [0, 1]
                              (default 1): A <- (1 - S) A + S C. PATTERN: previous (t attends to t-1;
                              position 0 to itself), induction (uniformly to every s <= t whose
                              previous token is x_t; rows without one keep A), uniform (1/(t+1)
                              on s <= t) or self (s = t). Gradients reach the head's W_K scaled by 1 - S.
    ablate:L[.H]:zero|mean    replace the head's output by zero, or by its mean over the batch
                              (per position, in the graph)
    set:M:ideal[:G]           set matrix M (W_K1, W_K2, W_O2: the simplified model) to its ideal
                              associative memory (SPEC §2.4; ``birth.tasks.triggers.ideal``), scaled so
                              that a stored association scores G (default 10)
    set:M:RUN[:STEP]          graft M from another run's checkpoint (its latest, or STEP)

A ``set`` with a window of more than one step holds the matrix there: it is set at every step of
the window and not trained in it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from birth.tasks.triggers.ideal import DEFAULT_GAIN
from birth.training.interventions import KINDS, HookKind, ModelShape, WeightKind

PATTERNS = ("previous", "induction", "uniform", "self")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _layer_head(target: str, shape: ModelShape) -> tuple[int, Optional[int]]:
    """(layer, head or None) of ``L`` or ``L.H``, checked against the model's shape."""
    parts = target.split(".")
    if not all(p.isdigit() for p in parts) or len(parts) > 2:
        raise ValueError(f"{target!r} is not LAYER or LAYER.HEAD (counted from 0)")
    layer, head = int(parts[0]), (int(parts[1]) if len(parts) > 1 else None)
    if layer >= shape.n_layers:
        raise ValueError(f"the model has {shape.n_layers} layers (counted from 0)")
    if head is not None and head >= shape.n_heads:
        raise ValueError(f"layer {layer} has {shape.n_heads} head(s) (counted from 0)")
    return layer, head


# -- clamps and ablations: functions of a tensor and the tokens of the pass ---------------------

def clamp_pattern(kind: str, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, rows): the target pattern (..., T, T) of a clamp for tokens (..., T), and which query
    rows (..., T) it defines (induction: rows whose token occurred before, its next token visible)."""
    t = tokens.shape[-1]
    dev = tokens.device
    causal = torch.ones(t, t, dtype=torch.bool, device=dev).tril()
    if kind == "induction":
        follows = torch.zeros(*tokens.shape, t, dtype=torch.bool, device=dev)         # [t, s]: x_{s-1} = x_t, s <= t
        follows[..., 1:] = tokens[..., :, None] == tokens[..., None, :-1]
        follows &= causal
        c = follows.float()
        rows = follows.any(-1)
        return c / c.sum(-1, keepdim=True).clamp(min=1), rows
    if kind == "previous":
        c = torch.zeros(t, t, device=dev)
        c[0, 0] = 1.0
        c[torch.arange(1, t), torch.arange(t - 1)] = 1.0
    elif kind == "uniform":
        c = causal.float() / causal.sum(-1, keepdim=True)
    else:  # self
        c = torch.eye(t, device=dev)
    shape = (*tokens.shape, t)
    return c.expand(shape), torch.ones(tokens.shape, dtype=torch.bool, device=dev)


def clamp(attn: torch.Tensor, tokens: torch.Tensor, kind: str, strength: float, head: Optional[int]) -> torch.Tensor:
    """``attn`` (..., B, H, T, T) with head ``head`` (all heads: None) mixed towards pattern ``kind``."""
    c, rows = clamp_pattern(kind, tokens)                                              # (.., B, T, T), (.., B, T)
    rows = rows[..., None, :, None]                                                    # (.., B, 1, T, 1)
    mixed = torch.where(rows, (1 - strength) * attn + strength * c.unsqueeze(-3).to(attn.dtype), attn)
    if head is None:
        return mixed
    out = attn.clone()
    out[..., head, :, :] = mixed[..., head, :, :]
    return out


def ablate(out: torch.Tensor, how: str, head: Optional[int], per_head: bool) -> torch.Tensor:
    """A head's output zeroed or replaced by its mean over the batch (dimension -4 of a per-head
    (..., B, T, H, d_h) tensor, -3 of a layer's (..., B, T, d))."""
    def fill(z: torch.Tensor, batch_dim: int) -> torch.Tensor:
        return torch.zeros_like(z) if how == "zero" else z.mean(batch_dim, keepdim=True).expand_as(z)
    if not per_head:
        return fill(out, -3)
    if head is None:
        return fill(out, -4)
    res = out.clone()
    res[..., head, :] = fill(out[..., head, :], -3)                                   # (.., B, T, d_h)
    return res



def _clamp(args: list, shape: ModelShape):
    """clamp:L[.H]:PATTERN[:S]"""
    if len(args) not in (2, 3):
        raise ValueError("clamp takes L[.H]:PATTERN[:S]")
    layer, head = _layer_head(args[0], shape)
    kind = args[1]
    if kind not in PATTERNS:
        raise ValueError(f"unknown pattern {kind!r}; choose from {', '.join(PATTERNS)}")
    strength = float(args[2]) if len(args) > 2 and _is_number(args[2]) else (1.0 if len(args) == 2 else None)
    if strength is None or not 0 <= strength <= 1:
        raise ValueError("the strength must be a number in [0, 1]")
    return f"blocks.{layer}.attn.hook_pattern", lambda t, ctx: clamp(t, ctx.tokens, kind, strength, head)


def _ablate(args: list, shape: ModelShape):
    """ablate:L[.H]:zero|mean"""
    if len(args) != 2 or args[1] not in ("zero", "mean"):
        raise ValueError("ablate takes zero or mean")
    layer, head = _layer_head(args[0], shape)
    how = args[1]
    if shape.arch == "simplified":  # one head per layer: its output is the layer's attention output
        return f"blocks.{layer}.hook_attn_out", lambda t, ctx: ablate(t, how, None, per_head=False)
    return f"blocks.{layer}.attn.hook_z", lambda t, ctx: ablate(t, how, head, per_head=True)


@dataclass(frozen=True)
class SetArgs:
    matrix: str                  # a paper alias (W_K1, ...) or an official parameter name
    source: str                  # 'ideal' or a run directory
    value: Optional[float]       # the gain (ideal; default DEFAULT_GAIN) or the checkpoint step (a graft)


def _set(args: list) -> SetArgs:
    """set:M:ideal[:G] or set:M:RUN[:STEP]"""
    if len(args) < 2 or not args[0] or not args[1]:
        raise ValueError("set takes MATRIX:ideal[:GAIN] or MATRIX:RUN[:STEP]")
    numbered = len(args) > 2 and _is_number(args[-1])
    source = ":".join(args[1:-1] if numbered else args[1:])
    value = float(args[-1]) if numbered else (DEFAULT_GAIN if source == "ideal" else None)
    return SetArgs(args[0], source, value)


KINDS.register("clamp", HookKind(_clamp))
KINDS.register("ablate", HookKind(_ablate))
KINDS.register("set", WeightKind(_set))
