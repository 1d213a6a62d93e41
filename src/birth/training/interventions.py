"""Interventions during training: a schedule of changes to the forward pass or to the weights.

The config key ``interventions`` holds entries separated by ``;``, each ``KIND:ARGS[@WINDOW]``:
``KIND`` is a registered kind (``KINDS``: the built-in ``clamp``, ``ablate``, ``set`` of
``birth.training.intervention_kinds``) or ``MODULE:ATTR`` of your own, and ``ARGS`` are the
kind's own ``:``-separated fields. ``@START-END`` is the window of steps [START, END); ``@START``
runs from START to the end of training (one step for ``set``). Without a window, a hook kind acts
for the whole run and ``set`` at step 0 only.

A kind of your own acts through a hook point (``birth.model.hooks``): a function of the entry's
fields and the model's shape that returns the point's name and ``fn(tensor, context) -> tensor``,
where ``context.tokens`` are the tokens of the pass and ``context.step`` the training step. It is
active in its window, in the training pass and in the evaluation passes alike, alone or in a stack:

    @hook_kind("zero")                                   # interventions=zero:1@100-200
    def zero(args, shape):
        return f"blocks.{int(args[0])}.attn.hook_pattern", lambda pattern, context: pattern * 0
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from birth.model import simplified_pass
from birth.model.hooks import Context, Hooks
from birth.model.transformer import Transformer, resolve_param_names
from birth.plugins import Registry, UnknownPlugin
from birth.tasks.triggers.ideal import IDEAL, ideal_memory
from birth.training.runs import RunDir

HookFn = Callable[[torch.Tensor, Context], torch.Tensor]


@dataclass(frozen=True)
class ModelShape:
    """What a kind may read of the model it acts on."""

    arch: str
    n_layers: int
    n_heads: int

    @classmethod
    def of(cls, args) -> "ModelShape":
        """Of a ModelArgs (the simplified model: 2 layers of 1 head)."""
        simplified = args.arch == "simplified"
        return cls(args.arch, 2 if simplified else args.n_layers, 1 if simplified else args.n_heads)


@dataclass(frozen=True)
class HookKind:
    """A kind that acts through a hook point: ``make(args, shape) -> (point, fn(tensor, context))``
    (ValueError, one line, for fields it cannot take)."""

    make: Callable[[list, ModelShape], tuple[str, HookFn]]
    once: bool = False   # a window @START means one step (as set), not to the end of training


@dataclass(frozen=True)
class WeightKind:
    """A kind that acts on the weights before a step's forward pass (``set``): ``parse(args)`` -> its
    parameters, checked against the model by ``Interventions``."""

    parse: Callable[[list], object]
    once: bool = True


def _as_kind(item) -> None:
    if not isinstance(item, (HookKind, WeightKind)) and not callable(item):
        raise TypeError("not an intervention kind (a function (args, shape) -> (hook point, fn), or a HookKind)")


KINDS = Registry("intervention kind", builtins="birth.training.intervention_kinds", check=_as_kind,
                 first=("clamp", "ablate", "set"))


def hook_kind(name: Optional[str] = None, *, once: bool = False):
    """Decorator: a function ``(args, shape) -> (hook point, fn(tensor, context))`` as a hook kind,
    registered under ``name`` when given (else found as MODULE:ATTR)."""
    def wrap(make):
        kind = HookKind(make, once)
        return KINDS.register(name, kind) if name else kind
    return wrap


def kind_of(name: str):
    """The kind ``name`` (registered, or MODULE:ATTR); a plain function is a hook kind."""
    item = KINDS.get(name)
    return item if isinstance(item, (HookKind, WeightKind)) else HookKind(item)


@dataclass(frozen=True)
class Intervention:
    kind: str                    # a registered name or MODULE:ATTR
    args: tuple[str, ...]        # the kind's fields
    start: int
    end: Optional[int]           # exclusive; None: to the end of training

    def active(self, step: int) -> bool:
        return step >= self.start and (self.end is None or step < self.end)

    def text(self) -> str:
        """The entry as written in the config (normalised)."""
        window = f"@{self.start}" + ("" if self.end is None else f"-{self.end}")
        return ":".join((self.kind, *self.args)) + window

    @property
    def target(self) -> str:
        """The first field: what the kind acts on (a layer, a matrix)."""
        return self.args[0] if self.args else ""


def _split(body: str) -> tuple[str, list[str]]:
    """(kind, fields) of ``KIND:ARGS``: a registered kind, else ``MODULE:ATTR:ARGS``."""
    parts = body.split(":")
    if parts[0] in KINDS or len(parts) < 2:
        return parts[0], parts[1:]
    return f"{parts[0]}:{parts[1]}", parts[2:]


def parse(spec: str) -> list[Intervention]:
    """The entries of an ``interventions`` string; ValueError (one line, the entry) for a bad one."""
    out = []
    for raw in filter(None, (e.strip() for e in spec.split(";"))):
        body, _, window = raw.partition("@")
        name, args = _split(body)
        try:
            kind = kind_of(name)
        except UnknownPlugin as err:
            why = "" if f"No module named {name.partition(':')[0]!r}" in str(err) else f" ({err})"
            raise ValueError(f"{raw!r}: unknown kind {body.partition(':')[0]!r}{why}; expected "
                             "clamp:L[.H]:PATTERN[:S], ablate:L[.H]:zero|mean, set:MATRIX:ideal[:GAIN], "
                             "set:MATRIX:RUN[:STEP] or MODULE:ATTR:ARGS (a kind of your own)") from None
        if isinstance(kind, WeightKind):
            kind.parse(list(args))  # raises ValueError naming the field
        out.append(Intervention(name, tuple(args), *_window(raw, window, kind.once)))
    return out


def _window(raw: str, window: str, once: bool) -> tuple[int, Optional[int]]:
    if not window:
        return 0, (1 if once else None)
    first, dash, last = window.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()):
        raise ValueError(f"{raw!r}: the window is @START or @START-END (steps, END excluded)")
    start = int(first)
    end = int(last) if dash else (start + 1 if once else None)
    if end is not None and end <= start:
        raise ValueError(f"{raw!r}: the window's end must come after its start")
    return start, end


def hook_of(iv: Intervention, shape: ModelShape) -> tuple[str, HookFn]:
    """(hook point, fn(tensor, context)) of a hook intervention; ValueError naming the entry."""
    kind = kind_of(iv.kind)
    try:
        return kind.make(list(iv.args), shape)
    except (ValueError, IndexError) as err:
        raise ValueError(f"{iv.text()}: {err}") from None


def as_hooks(entries: Sequence[Intervention], step: int, shape: ModelShape, tokens: torch.Tensor) -> Hooks:
    """The hook interventions active at ``step`` as the hooks of a pass over ``tokens`` (any
    leading dimensions: a stack's included)."""
    context = Context(tokens, step)
    points: dict[str, list[HookFn]] = {}
    for iv in entries:
        if not isinstance(kind_of(iv.kind), WeightKind) and iv.active(step):
            name, fn = hook_of(iv, shape)
            points.setdefault(name, []).append(fn)

    def chain(fns):
        def run(t):
            for fn in fns:
                t = fn(t, context)
            return t
        return run
    return Hooks({name: chain(fns) for name, fns in points.items()})


class Interventions:
    """The interventions of one run on its model. ``step`` is the step whose passes are running
    (a training step and its evaluation)."""

    def __init__(self, spec: str, model: Transformer, triggers=None, length: Optional[int] = None):
        self.entries = parse(spec)
        self.model = model
        self.shape = ModelShape.of(model.args)
        self.triggers, self.length = triggers, length
        self.step = 0
        self._grafts: dict[tuple, torch.Tensor] = {}
        for iv in self.entries:
            if not self._is_set(iv):
                name, fn = hook_of(iv, self.shape)
                model.hook_point(name).add_hook(self._gated(iv, fn))

    @staticmethod
    def _is_set(iv: Intervention) -> bool:
        return isinstance(kind_of(iv.kind), WeightKind)

    def _gated(self, iv: Intervention, fn: HookFn):
        def hook(tensor: torch.Tensor, point) -> torch.Tensor:
            return fn(tensor, Context(point.context.tokens, self.step)) if iv.active(self.step) else tensor
        return hook

    @property
    def sets(self) -> list[Intervention]:
        return [iv for iv in self.entries if self._is_set(iv)]

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

    def value(self, iv: Intervention, name: str) -> torch.Tensor:
        what = kind_of(iv.kind).parse(list(iv.args))
        if what.source == "ideal":
            return ideal_memory(self.model, what.matrix, what.value, self.triggers, self.length)
        key = (what.source, what.value, name)
        if key not in self._grafts:
            self._grafts[key] = graft_source(what.source, what.value, name)
        return self._grafts[key]

    def stack_hooks(self, step: int, tokens: torch.Tensor) -> Hooks:
        """The hook interventions of ``step`` as hooks of a stacked pass (every run of a stack has the
        same interventions: ``birth.launching.stacked.stack_key``)."""
        return as_hooks(self.entries, step, self.shape, tokens)

    def hook_points(self) -> list[str]:
        """Every hook point the schedule uses, and those a user's hooks hold."""
        own = {hook_of(iv, self.shape)[0] for iv in self.entries if not self._is_set(iv)}
        return sorted(own | {n for n, hp in self.model.hook_points().items() if hp.active})

    def describe_pass(self, batch_size: int, seq_length: int, targets_only: bool) -> str:
        """The training pass this run takes, in words, for summary.json."""

        names = set(self.hook_points())
        patterns = any(n.endswith("hook_pattern") for n in names)
        if self.shape.arch == "simplified" and not self.model.module_by_module():
            layer2 = any(n in simplified_pass.LAYER2_POINTS for n in names)
            where = "every position" if not targets_only or layer2 else "the in-context targets only"
            explicit = patterns or simplified_pass.explicit_attention(batch_size, seq_length)
            return f"simplified model's rearranged pass (birth.model.simplified_pass): layer 2 at {where}, " \
                   f"{'explicit' if explicit else 'fused'} attention"
        return (f"module by module (birth.model.transformer): {'explicit' if patterns else 'fused'} attention "
                "at every position")


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


def check(spec: str, model: Transformer, shape: Optional[ModelShape] = None) -> None:
    """ValueError (one line) for an ``interventions`` entry that this model cannot take (``shape``:
    the real one, when ``model`` is a stand-in of other sizes)."""
    shape = shape or ModelShape.of(model.args)
    points = model.hook_points()
    for iv in parse(spec):
        kind = kind_of(iv.kind)
        if not isinstance(kind, WeightKind):
            name, _ = hook_of(iv, shape)
            if name not in points:
                raise ValueError(f"{iv.text()}: the model has no hook point {name}")
            continue
        what = kind.parse(list(iv.args))
        names = resolve_param_names(what.matrix, model)
        if not names:
            raise ValueError(f"{iv.text()}: {what.matrix!r} names no parameter of this model (e.g. W_K1, W_O2)")
        if what.source == "ideal":
            if what.matrix not in IDEAL or model.args.arch != "simplified" or model.use_rope:
                raise ValueError(f"{iv.text()}: ideal memories exist for {', '.join(IDEAL)} of the simplified "
                                 "model with absolute positions")
            continue
        own = dict(model.named_parameters())
        for n in names:
            found = tuple(graft_source(what.source, what.value, n).shape)
            if found != tuple(own[n].shape):
                raise ValueError(f"{iv.text()}: {n} is {found} in {what.source}, {tuple(own[n].shape)} here")
