"""Measures of a model, as pure functions of its outputs, its weights and a batch: losses and
accuracies per target mask, KL to exact strategies, the in-context learning score, loss by
position, head scores (``predictions``), the strategies' building blocks (``strategies``), the
local learning coefficient (``llc``).

``METRICS`` holds the metrics a config can name (``metrics=NAME,MODULE:ATTR``): each a function
``fn(ev) -> {name: value} | None`` of the evaluation step ``ev`` (``birth.training.evaluation``:
``ev.step``, ``ev.model``, ``ev.task``, ``ev.batch``, ``ev.batches``, ``ev.outputs(name)``), called
after the package's own at every evaluation; its values join metrics.jsonl.
"""
from __future__ import annotations

from birth.plugins import Registry


def _is_metric(item) -> None:
    if not callable(item):
        raise TypeError("not a metric (a function of the evaluation step returning {name: value})")


METRICS = Registry("metric", check=_is_metric)


def metric_functions(spec: str) -> list:
    """The functions of a ``metrics`` value (comma-separated names or MODULE:ATTR); UnknownPlugin
    (one line) for one that is neither."""
    return [METRICS.get(name) for name in filter(None, (n.strip() for n in spec.split(",")))]
