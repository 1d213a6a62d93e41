"""Named hook points, honoured by every forward pass of both architectures.

Names follow TransformerLens where it has one (layers count from 0: ``blocks.0`` is the paper's
layer 1); shapes, with a leading run dimension R in a stack of runs:

    blocks.{l}.hook_resid_pre      (B, T, d)      input of layer l
    blocks.{l}.attn.hook_pattern   (B, H, T, T)   attention after the softmax (H = 1 in the simplified model)
    blocks.{l}.attn.hook_z         (B, T, H, d_h) each head's mix of values, before W_O (full model only)
    blocks.{l}.hook_attn_out       (B, T, d)      the attention's output, added to the residual stream
    blocks.{l}.hook_mlp_out        (B, T, d)      the feed-forward's output (layers that have one)
    blocks.{l}.hook_resid_post     (B, T, d)      the residual stream after layer l
    hook_logits                    (B, T, N)      the logits (birth's name; TransformerLens has none)

A ``HookPoint`` is an identity ``nn.Module`` inside the model (``model.hook_points()``): a PyTorch
forward hook on it, or ``add_hook(fn)`` with TransformerLens' ``fn(tensor, hook) -> tensor | None``,
sees (and may replace) the tensor in every pass, the rearranged training pass of the simplified
model and a stack's included. ``hook.context`` holds the tokens of the pass while a hook runs.
A pass calls only the points that hold a hook, so an unhooked model pays nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], Optional[torch.Tensor]]


@dataclass
class Context:
    """What a hook may read besides the tensor: the tokens of the pass (B, T), or (R, B, T) in a
    stack, and the training step whose passes run (None outside training)."""

    tokens: torch.Tensor
    step: Optional[int] = None


class HookPoint(nn.Module):
    """An identity module at a named place of the forward pass."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.context: Optional[Context] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def add_hook(self, fn: HookFn):
        """TransformerLens-style hook ``fn(tensor, hook)``; returns the handle (``.remove()``)."""
        return self.register_forward_hook(lambda module, args, out: fn(out, module))

    @property
    def active(self) -> bool:
        """Whether a pass must call this point: it holds a hook, or its forward was replaced (nnsight)."""
        return bool(self._forward_hooks or self._forward_pre_hooks or "forward" in self.__dict__)


class Hooks:
    """The hooks of one pass: ``hooks(name, tensor)`` returns the tensor the pass continues with."""

    def __init__(self, points: dict[str, Callable[[torch.Tensor], torch.Tensor]]):
        self.points = points

    @property
    def names(self) -> set[str]:
        return set(self.points)

    def wants(self, name: str) -> bool:
        return name in self.points

    def wants_any(self, prefix: str) -> bool:
        return any(n.startswith(prefix) for n in self.points)

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        fn = self.points.get(name)
        return tensor if fn is None else fn(tensor)

    def __bool__(self) -> bool:
        return bool(self.points)


NO_HOOKS = Hooks({})


def model_hooks(points: dict[str, HookPoint], tokens: torch.Tensor, step: Optional[int] = None) -> Hooks:
    """The active hook points of a model for a pass over ``tokens`` at training ``step``."""
    active = {name: hp for name, hp in points.items() if hp.active}
    if not active:
        return NO_HOOKS
    context = Context(tokens, step)

    def call(hp: HookPoint) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(t: torch.Tensor) -> torch.Tensor:
            hp.context = context
            try:
                return hp(t)
            finally:
                hp.context = None
        return run
    return Hooks({name: call(hp) for name, hp in active.items()})


def merge(*hooks: Hooks) -> Hooks:
    """One Hooks object running several in turn at each point they share."""
    points: dict[str, list] = {}
    for h in hooks:
        for name, fn in h.points.items():
            points.setdefault(name, []).append(fn)

    def chain(fns):
        def run(t):
            for fn in fns:
                t = fn(t)
            return t
        return run
    return Hooks({name: chain(fns) for name, fns in points.items()})
