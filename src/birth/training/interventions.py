"""A run's ``interventions`` (``birth.training.intervention_kinds``) put to work: clamps and ablations as
step-gated hooks on the model's hook points, sets applied to the weights before each step, and
what summary.json says of the pass a run takes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from birth.training import intervention_kinds as I
from birth.model import simplified_pass
from birth.model.transformer import Transformer, resolve_param_names
from birth.training.runs import RunDir


class Interventions:
    """The interventions of one run on its model. ``step`` is the step whose passes are running
    (a training step and its evaluation)."""

    def __init__(self, spec: str, model: Transformer, triggers=None, length: Optional[int] = None):
        self.entries = I.parse(spec)
        self.model = model
        self.triggers, self.length = triggers, length
        self.step = 0
        self.arch = model.args.arch
        self.n_heads = model.layers[0].attention.n_heads
        self._grafts: dict[tuple, torch.Tensor] = {}
        for iv in self.entries:
            if iv.kind != "set":
                name, fn = I.hook_of(iv, self.arch, self.n_heads)
                model.hook_point(name).add_hook(self._gated(iv, fn))

    def _gated(self, iv: I.Intervention, fn):
        def hook(tensor: torch.Tensor, point) -> torch.Tensor:
            return fn(tensor, point.context.tokens) if iv.active(self.step) else tensor
        return hook

    @property
    def sets(self) -> list[I.Intervention]:
        return [iv for iv in self.entries if iv.kind == "set"]

    def held(self, step: int) -> set[str]:
        """Parameters a set holds at ``step`` (a window of more than one step): not trained there."""
        return {n for iv in self.sets if iv.active(step) and (iv.end is None or iv.end - iv.start > 1)
                for n in resolve_param_names(iv.target, self.model)}

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        """Sets the matrices of the sets active at ``step``; then the hooks act for this step."""
        self.step = step
        for iv in self.sets:
            if iv.active(step):
                for name in resolve_param_names(iv.target, self.model):
                    param = dict(self.model.named_parameters())[name]
                    param.copy_(self.value(iv, name).to(param.dtype))

    def value(self, iv: I.Intervention, name: str) -> torch.Tensor:
        if iv.what == "ideal":
            return I.ideal_memory(self.model, iv.target, iv.value or I.DEFAULT_GAIN, self.triggers, self.length)
        key = (iv.what, iv.value, name)
        if key not in self._grafts:
            self._grafts[key] = graft_source(iv.what, iv.value, name)
        return self._grafts[key]

    def stack_hooks(self, step: int, tokens: torch.Tensor):
        """The clamps and ablations of ``step`` as hooks of a stacked pass (every run of a stack has
        the same interventions: ``birth.launching.stacked.stack_key``)."""
        return I.as_hooks(self.entries, step, self.arch, self.n_heads, tokens)

    def hook_points(self) -> list[str]:
        """Every hook point the schedule uses, and those a user's hooks hold."""
        own = {I.hook_of(iv, self.arch, self.n_heads)[0] for iv in self.entries if iv.kind != "set"}
        return sorted(own | {n for n, hp in self.model.hook_points().items() if hp.active})

    def describe_pass(self, batch_size: int, seq_length: int, targets_only: bool) -> str:
        """The training pass this run takes, in words, for summary.json."""
        names = set(self.hook_points())
        patterns = any(n.endswith("hook_pattern") for n in names)
        if self.arch == "simplified":
            layer2 = any(n in simplified_pass.LAYER2_POINTS for n in names)
            where = "every position" if not targets_only or layer2 else "the in-context targets only"
            explicit = patterns or simplified_pass.explicit_attention(batch_size, seq_length)
            return f"simplified model's rearranged pass (birth.model.simplified_pass): layer 2 at {where}, " \
                   f"{'explicit' if explicit else 'fused'} attention"
        return (f"full architecture's block pass (birth.model.transformer): "
                f"{'explicit' if patterns else 'fused'} attention at every position")


def graft_source(run: str, step: Optional[float], name: str) -> torch.Tensor:
    """Parameter ``name`` of run directory ``run`` at checkpoint ``step`` (default: its latest)."""
    r = RunDir(Path(run))
    ckpts = dict(r.checkpoints())
    if not ckpts:
        raise ValueError(f"set: {run} holds no checkpoint to graft from")
    at = max(ckpts) if step is None else int(step)
    if at not in ckpts:
        raise ValueError(f"set: {run} has no checkpoint at step {at} (saved: {sorted(ckpts)})")
    weights = RunDir.load_checkpoint(ckpts[at])["model"]
    if name not in weights:
        raise ValueError(f"set: {run}'s model has no {name}")
    return weights[name]


def check(spec: str, model: Transformer, n_heads: Optional[int] = None) -> None:
    """ValueError (one line) for an ``interventions`` entry that this model cannot take (``n_heads``:
    the real head count, when ``model`` is a stand-in of other sizes)."""
    entries = I.parse(spec)
    n_heads = n_heads or model.layers[0].attention.n_heads
    points = model.hook_points()
    for iv in entries:
        if iv.kind == "set":
            names = resolve_param_names(iv.target, model)
            if not names:
                raise ValueError(f"{iv.text()}: {iv.target!r} names no parameter of this model (e.g. W_K1, W_O2)")
            if iv.what == "ideal":
                if iv.target not in I.IDEAL or model.args.arch != "simplified" or model.use_rope:
                    raise ValueError(f"{iv.text()}: ideal memories exist for {', '.join(I.IDEAL)} of the simplified "
                                     "model with absolute positions")
            else:
                own = dict(model.named_parameters())
                for n in names:
                    shape = tuple(graft_source(iv.what, iv.value, n).shape)
                    if shape != tuple(own[n].shape):
                        raise ValueError(f"{iv.text()}: {n} is {shape} in {iv.what}, {tuple(own[n].shape)} here")
            continue
        if iv.layer >= len(model.layers):
            raise ValueError(f"{iv.text()}: the model has {len(model.layers)} layers (counted from 0)")
        name, _ = I.hook_of(iv, model.args.arch, n_heads)
        if name not in points:
            raise ValueError(f"{iv.text()}: the model has no hook point {name}")
