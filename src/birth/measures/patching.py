"""Activation patching: which activation carries the answer (Olsson et al. 2022; Singh et al. 2024;
TransformerLens' ``patching``). Run a clean input and a corrupted one; copy one activation of the
corrupted run into the clean run, at one hook point, one position and one head; measure how far
the metric moves.

    table = patch(model, clean, corrupted, metric)          # a pandas DataFrame, one row per patch

``metric(logits) -> (B,)`` scores each clean sequence (higher: more right, e.g. the log-probability
of the correct in-context output); the table's ``change`` is the patched metric minus the clean
one, and ``fraction`` that change over the corrupted run's (1: the patch alone does what the whole
corruption does; 0: nothing). A position is a query row for an attention pattern, a sequence
position elsewhere; a head is an attention head for the per-head points (``attn.hook_pattern``,
``attn.hook_z``), -1 for the whole layer. All positions of one (point, head) are patched in one
batched pass (a copy of the clean batch per position).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from birth.measures import METRICS

Metric = Callable[[torch.Tensor], torch.Tensor]
PER_HEAD = ("attn.hook_pattern", "attn.hook_z")
MIN_DROP = 1.0  # nats: a sequence whose corruption moves the metric less tells nothing (``informative``)


def default_points(model) -> list[str]:
    """Every hook point of the model but the logits: the residual stream, each head's pattern and
    output, each layer's attention and feed-forward output."""
    return [p for p in model.hook_points() if p != "hook_logits"]


def patterns(model) -> list[str]:
    """Every layer's attention pattern: where each head looks."""
    return [p for p in model.hook_points() if p.endswith("attn.hook_pattern")]


def points_named(model, spec: str) -> list[str]:
    """``all`` (the default: every point but the logits), ``patterns``, or comma-separated names."""
    if spec in ("", "all"):
        return default_points(model)
    if spec == "patterns":
        return patterns(model)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        model.hook_point(name)  # ValueError naming the points there are
    return names


@torch.no_grad()
def informative(model, example, limit: int, min_drop: float = MIN_DROP) -> list[int]:
    """The first ``limit`` sequences of a task's ``PatchExample`` whose corruption lowers the metric
    by at least ``min_drop``: where the model reads the answer from the context at all."""
    drop = example.metric(model(example.clean)) - example.metric(model(example.corrupted))
    return [int(i) for i in torch.nonzero(drop >= min_drop).flatten()[:limit]]


def _heads(name: str, shape: torch.Size) -> list[int]:
    """The heads of a per-head point (pattern: dimension 1, z: dimension 2), else [-1]."""
    if name.endswith("attn.hook_pattern"):
        return list(range(shape[1]))
    if name.endswith("attn.hook_z"):
        return list(range(shape[2]))
    return [-1]


def _replace(tensor: torch.Tensor, source: torch.Tensor, name: str, positions: Sequence[int], head: int,
             batch: int) -> torch.Tensor:
    """``tensor`` of P stacked copies of the clean batch (P B, ...), copy k with ``positions[k]`` (and
    ``head``) taken from ``source`` (B, ...), the corrupted run's."""
    out = tensor.clone()
    for k, position in enumerate(positions):
        rows = slice(k * batch, (k + 1) * batch)
        if name.endswith("attn.hook_pattern"):        # (B, H, T, T): the query row
            out[rows, head, position] = source[:, head, position]
        elif name.endswith("attn.hook_z"):            # (B, T, H, d_h)
            out[rows, position, head] = source[:, position, head]
        else:                                         # (B, T, ...)
            out[rows, position] = source[:, position]
    return out


@torch.no_grad()
def patch(model, clean: torch.Tensor, corrupted: torch.Tensor, metric: Metric,
          points: Optional[Sequence[str]] = None, positions: Optional[Sequence[int]] = None):
    """The metric's change per (hook point, position, head) when that one activation of the
    ``corrupted`` tokens' run replaces the ``clean`` tokens' (both (B, T)): a DataFrame with columns
    point, layer, position, head, metric, change, fraction. ``points``: hook point names (default:
    every point but the logits, ``default_points``); ``positions``: default every position."""
    if clean.shape != corrupted.shape:
        raise ValueError(f"patch: clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} tokens differ "
                         "in shape")
    points = default_points(model) if points is None else list(points)
    positions = list(range(clean.shape[1])) if positions is None else list(positions)
    model.every_module = True  # one pass for every run below: a patch that changes nothing moves nothing
    try:
        return _patch(model, clean, corrupted, metric, points, positions)
    finally:
        model.every_module = False


def _patch(model, clean: torch.Tensor, corrupted: torch.Tensor, metric: Metric, points: list[str],
           positions: list[int]):
    import pandas as pd  # deferred: pandas is for the table only
    batch = clean.shape[0]
    repeated = clean.repeat(len(positions), 1)                                          # (P B, T)
    base = metric(model(repeated)).view(len(positions), batch).mean(1)                  # (P,): each copy unpatched
    _, cache = model.run_with_cache(corrupted.repeat(len(positions), 1), points)
    cache = {name: tensor[:batch] for name, tensor in cache.items()}                   # the corrupted run, once
    worst = metric(model(corrupted.repeat(len(positions), 1))).view(len(positions), batch).mean(1)[0]
    rows = []
    for name in points:
        for head in _heads(name, cache[name].shape):
            hook = lambda t, h, n=name, hd=head: _replace(t, cache[n], n, positions, hd, batch)
            handle = model.hook_point(name).add_hook(hook)
            try:
                scores = metric(model(repeated)).view(len(positions), batch).mean(1)   # (P,)
            finally:
                handle.remove()
            layer = int(name.split(".")[1]) if name.startswith("blocks.") else -1
            for position, value, clean_value in zip(positions, scores.tolist(), base.tolist()):
                change = value - clean_value
                effect = float(worst) - clean_value
                rows.append({"point": name, "layer": layer, "position": position, "head": head, "metric": value,
                             "change": change, "fraction": change / effect if effect else 0.0})
    table = pd.DataFrame(rows)
    table.attrs.update(clean_metric=float(base[0]), corrupted_metric=float(worst))
    return table


def patching(ev, sequences: int = 8) -> dict:
    """The metric ``patching`` (``metrics=patching`` or ``patching@EVERY``): on the task's natural
    corruption of the fixed evaluation batch, for each attention pattern, the largest fraction of the
    corruption's effect that patching one query row of one head does, averaged over the first
    ``sequences`` informative sequences: ``patch_<point>``. Nothing for a task without a corruption."""
    example = ev.task.patch_example(ev.batches["eval"], torch.Generator(device=ev.batches["eval"].x.device)
                                    .manual_seed(0))
    chosen = informative(ev.model, example, sequences) if example is not None else []
    if not chosen:
        return {}
    tables = [patch(ev.model, one.clean, one.corrupted, one.metric, patterns(ev.model))
              for one in (example.select([i]) for i in chosen)]
    best = [t.groupby("point")["fraction"].max() for t in tables]
    return {f"patch_{point}": float(sum(b[point] for b in best) / len(best)) for point in best[0].index}


METRICS.register("patching", patching)
