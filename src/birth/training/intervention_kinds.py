"""Interventions during training: a schedule of changes to the forward pass or the weights.

The config key ``interventions`` holds entries separated by ``;``, each ``KIND:ARGS[@WINDOW]``.
Layers and heads count from 0, as in the hook names (layer 0 is the paper's layer 1):

    clamp:L[.H]:PATTERN[:S]   mix head H of layer L's attention with PATTERN at strength S in [0, 1]
                              (default 1): A <- (1 - S) A + S C. PATTERN: previous (t attends to t-1;
                              position 0 to itself), induction (uniformly to every s <= t whose
                              previous token is x_t; rows without one keep A), uniform (1/(t+1)
                              on s <= t) or self (s = t). Gradients reach the head's W_K scaled by 1 - S.
    ablate:L[.H]:zero|mean    replace the head's output by zero, or by its mean over the batch
                              (per position, in the graph)
    set:M:ideal[:G]           set matrix M (W_K1, W_K2, W_O2: the simplified model) to its ideal
                              associative memory (SPEC §2.4), scaled so that a stored association
                              scores G (default 10) in the units the model reads it in (see ``ideal_memory``)
    set:M:RUN[:STEP]          graft M from another run's checkpoint (its latest, or STEP)

``@START-END`` is the window of steps [START, END); ``@START`` runs from START to the end of training
for clamp and ablate, and is one step for set. Without a window, clamp and ablate act for the whole
run and set at step 0 only. A ``set`` with a window of more than one step holds the matrix there:
it is set at every step of the window and not trained in it.

A clamp or an ablation is a hook (``birth.model.hooks``) active in its window, in the training pass
and in the evaluation passes alike; a set acts on the weights before the step's forward pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from birth.model.hooks import Hooks

PATTERNS = ("previous", "induction", "uniform", "self")
IDEAL = ("W_K1", "W_K2", "W_O2")
DEFAULT_GAIN = 10.0


@dataclass(frozen=True)
class Intervention:
    kind: str                    # clamp | ablate | set
    target: str                  # 'L' or 'L.H' (clamp, ablate), a matrix name (set)
    what: str                    # a pattern, zero|mean, 'ideal' or a run directory
    value: Optional[float]       # strength (clamp), gain (set ideal), step (set from a run)
    start: int
    end: Optional[int]           # exclusive; None: to the end of training

    @property
    def layer(self) -> int:
        return int(self.target.split(".")[0])

    @property
    def head(self) -> Optional[int]:
        parts = self.target.split(".")
        return int(parts[1]) if len(parts) > 1 else None

    def active(self, step: int) -> bool:
        return step >= self.start and (self.end is None or step < self.end)

    def text(self) -> str:
        """The entry as written in the config (normalised)."""
        value = "" if self.value is None else f":{self.value:g}"
        window = f"@{self.start}" + ("" if self.end is None else f"-{self.end}")
        return f"{self.kind}:{self.target}:{self.what}{value}{window}"


def parse(spec: str) -> list[Intervention]:
    """The entries of an ``interventions`` string; ValueError (one line, the entry) for a bad one."""
    out = []
    for raw in filter(None, (e.strip() for e in spec.split(";"))):
        body, _, window = raw.partition("@")
        parts = body.split(":")
        kind = parts[0]
        if kind not in ("clamp", "ablate", "set") or len(parts) < 3:
            raise ValueError(f"{raw!r}: expected clamp:L[.H]:PATTERN[:S], ablate:L[.H]:zero|mean, "
                             "set:MATRIX:ideal[:GAIN] or set:MATRIX:RUN[:STEP], each [@START[-END]]")
        start, end = _window(raw, window, kind)
        if kind == "set":
            what = ":".join(parts[2:-1]) if len(parts) > 3 and _is_number(parts[-1]) else ":".join(parts[2:])
            value = float(parts[-1]) if len(parts) > 3 and _is_number(parts[-1]) else None
            out.append(Intervention(kind, parts[1], what, value, start, end))
            continue
        if not all(p.isdigit() for p in parts[1].split(".")) or parts[1].count(".") > 1:
            raise ValueError(f"{raw!r}: {parts[1]!r} is not LAYER or LAYER.HEAD (counted from 0)")
        value = None
        if kind == "clamp":
            if parts[2] not in PATTERNS:
                raise ValueError(f"{raw!r}: unknown pattern {parts[2]!r}; choose from {', '.join(PATTERNS)}")
            value = float(parts[3]) if len(parts) > 3 and _is_number(parts[3]) else 1.0 if len(parts) == 3 else None
            if value is None or not 0 <= value <= 1:
                raise ValueError(f"{raw!r}: the strength must be a number in [0, 1]")
        elif parts[2] not in ("zero", "mean") or len(parts) > 3:
            raise ValueError(f"{raw!r}: ablate takes zero or mean")
        out.append(Intervention(kind, parts[1], parts[2], value, start, end))
    return out


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _window(raw: str, window: str, kind: str) -> tuple[int, Optional[int]]:
    if not window:
        return 0, (1 if kind == "set" else None)
    first, dash, last = window.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()):
        raise ValueError(f"{raw!r}: the window is @START or @START-END (steps, END excluded)")
    start = int(first)
    end = int(last) if dash else (start + 1 if kind == "set" else None)
    if end is not None and end <= start:
        raise ValueError(f"{raw!r}: the window's end must come after its start")
    return start, end


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


def hook_of(iv: Intervention, arch: str, n_heads: int):
    """(hook point name, fn(tensor, tokens)) of a clamp or an ablation in an ``arch`` model."""
    layer, head = iv.layer, iv.head
    if head is not None and head >= n_heads:
        raise ValueError(f"{iv.text()}: layer {layer} has {n_heads} head(s) (counted from 0)")
    if iv.kind == "clamp":
        return f"blocks.{layer}.attn.hook_pattern", lambda t, tokens: clamp(t, tokens, iv.what, iv.value, head)
    if arch == "simplified":  # one head per layer: its output is the layer's attention output
        return f"blocks.{layer}.hook_attn_out", lambda t, tokens: ablate(t, iv.what, None, per_head=False)
    return f"blocks.{layer}.attn.hook_z", lambda t, tokens: ablate(t, iv.what, head, per_head=True)


def as_hooks(interventions: Sequence[Intervention], step: int, arch: str, n_heads: int,
             tokens: torch.Tensor) -> Hooks:
    """The clamps and ablations active at ``step`` as the hooks of a pass over ``tokens`` (any
    leading dimensions: a stack's included)."""
    points: dict[str, list] = {}
    for iv in interventions:
        if iv.kind != "set" and iv.active(step):
            name, fn = hook_of(iv, arch, n_heads)
            points.setdefault(name, []).append(fn)

    def chain(fns):
        def run(t):
            for fn in fns:
                t = fn(t, tokens)
            return t
        return run
    return Hooks({name: chain(fns) for name, fns in points.items()})


# -- set: ideal memories (SPEC §2.4) --------------------------------------------------------------

def _scaled(u: torch.Tensor, v: torch.Tensor, gain: float, factor: float) -> torch.Tensor:
    """sum_i u_i v_i^T, scaled so that u_i^T M v_i, times ``factor`` (how the model scales that
    bilinear form), is ``gain`` for an association of average norms."""
    memory = u.t() @ v                                                                 # (d, d) = sum_i u_i v_i^T
    typical = float(((u * u).sum(-1) * (v * v).sum(-1)).mean())
    return memory * (gain / (factor * typical))


@torch.no_grad()
def ideal_memory(model, name: str, gain: float = DEFAULT_GAIN, triggers: Optional[Sequence[int]] = None,
                 length: Optional[int] = None) -> torch.Tensor:
    """The ideal memory (d, d) of the simplified model's ``name`` (SPEC §2.4), from its current
    embeddings and frozen maps, key on the right (score = query^T W key):

    - W_K1* = sum_{t=2..T} p_t p_{t-1}^T (previous-token head; ``length`` = T, default max_length);
    - W_K2* = sum_{k in Q} w_E(k) w_1(k)^T, w_1(k) = W_O1 W_V1 w_E(k), Q the fixed triggers (else all);
    - W_O2* = sum_k w_U(k) w_V2(k)^T, w_V2(k) = W_V2 w_E(k).

    Each is scaled (``_scaled``) so that a stored association scores ``gain``: in the attention
    scores (times 1/sqrt(d)) for the keys, in the logits (times the output scale) for W_O2.
    """
    if model.args.arch != "simplified" or model.use_rope:
        raise ValueError(f"set:{name}:ideal: ideal memories are the simplified model's with absolute positions")
    emb = model.tok_embeddings.weight
    l1, l2 = model.layers[0].attention, model.layers[1].attention
    scale = l1.scale
    if name == "W_K1":
        p = model.positions(length)
        return _scaled(p[1:], p[:-1], gain, scale)
    if name == "W_K2":
        q = emb if triggers is None else emb[list(triggers)]
        return _scaled(q, l1.wo(l1.wv(q)), gain, scale)
    if name == "W_O2":
        return _scaled(model.output.weight, l2.wv(emb), gain, model.output_scale)
    raise ValueError(f"set:{name}:ideal: ideal memories exist for {', '.join(IDEAL)}")
