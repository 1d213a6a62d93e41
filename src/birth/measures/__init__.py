"""Measures of a model, as pure functions of its outputs, its weights and a batch: losses and
accuracies per target mask, KL to exact strategies, the in-context learning score, loss by
position, head scores (``predictions``), the strategies' building blocks (``strategies``), the
local learning coefficient (``llc``).

``METRICS`` holds the metrics a config can name (``metrics=NAME,MODULE:ATTR``): each a function
``fn(ev) -> {name: value} | None`` of the evaluation step ``ev`` (``birth.training.evaluation``:
``ev.step``, ``ev.model``, ``ev.task``, ``ev.batch``, ``ev.batches``, ``ev.outputs(name)``), called
after the package's own at every evaluation, or every EVERY steps with ``NAME@EVERY`` (and at the
last step); its values join metrics.jsonl. Built in: ``patching`` (``birth.measures.patching``).
"""
from __future__ import annotations

from birth.plugins import Registry, UnknownPlugin


def _is_metric(item) -> None:
    if not callable(item):
        raise TypeError("not a metric (a function of the evaluation step returning {name: value})")


METRICS = Registry("metric", builtins="birth.measures.patching", check=_is_metric)


def metric_functions(spec: str) -> list:
    """The functions of a ``metrics`` value (comma-separated names or MODULE:ATTR, each with an
    optional ``@EVERY``); UnknownPlugin (one line) for one that is neither, ValueError for a bad EVERY."""
    out = []
    for item in filter(None, (n.strip() for n in spec.split(","))):
        name, _, every = item.partition("@")
        fn = METRICS.get(name)
        if every:
            if not every.isdigit() or int(every) < 1:
                raise UnknownPlugin(f"{item!r}: the cadence after @ is a number of steps >= 1")
            fn = _every(fn, int(every))
        out.append(fn)
    return out


def _every(fn, steps: int):
    """``fn`` at the evaluations of the steps that ``steps`` divides, and the last one."""
    def at_cadence(ev):
        return fn(ev) if ev.step % steps == 0 or ev.step == ev.cfg.max_iters - 1 else None
    return at_cadence
