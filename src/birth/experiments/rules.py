"""Claims as data: each rule holds its thresholds, writes its own text from them, reads what it needs
(the freeze step, the K and width of each condition) from the runs' configs, and measures one set
of values per seed. ``evaluate`` owns what every rule shares: the per-seed loop, the NaN guard
(a seed with a missing value is undecidable) and the verdict over seeds (``birth.experiments.claims``).

Thresholds are written once, here in the rule instances of each recipe; SPEC §9.12: they are fixed
before the runs that judge them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from birth.experiments import claims as C
from birth.training.build import parse_freeze_until

ACC = "eval_acc_end"


@dataclass(frozen=True)
class Rule:
    """A claim of SPEC §7 and the rule that checks it. Subclasses define the measure and the test.
    ``kind``: what the claim asserts, which fixes how an event never reached within the run counts
    (``birth.experiments.claims``: HAPPENS, it violates the claim; FASTER, it is censored at the
    run's end). ``role`` 'check' marks an implementation check (tabled apart), 'note' a row shown
    and never counted; ``note`` a caveat shown with the claim."""

    id: str
    claim: str
    figure: str
    note: str = ""                 # a caveat shown with the claim (e.g. a rule chosen after a result)
    role: str = "claim"            # 'check': an implementation check; 'note': shown, never counted
    kind: str = C.HAPPENS          # or C.FASTER
    unit = "seeds"

    def __post_init__(self) -> None:
        if self.kind not in (C.HAPPENS, C.FASTER) or self.role not in C.ROLES:
            raise ValueError(f"rule {self.id}: kind {self.kind!r} (expected {C.HAPPENS!r} or {C.FASTER!r}), "
                             f"role {self.role!r} (expected one of {C.ROLES})")

    def groups(self) -> tuple[str, ...]:
        """The conditions whose runs the rule reads (all must have completed runs)."""
        return ()

    def text(self, res) -> str:
        raise NotImplementedError

    def measure(self, res) -> list[dict]:
        """One dict of measured values per seed (or per run, see ``unit``)."""
        raise NotImplementedError

    def holds(self, v: dict) -> Optional[bool]:
        raise NotImplementedError

    def slack(self, v: dict) -> dict[str, float]:
        """{check: signed distance of ``v`` from the check's threshold} (> 0: satisfied by that much)."""
        return {}

    def units(self) -> dict[str, str]:
        """The unit of each slack (default: that of the measured value)."""
        return {}

    def why(self, v: dict) -> str:
        """Why ``v`` is undecidable, when ``holds`` says None (default: a missing value)."""
        return "a value is missing" if any(C.is_nan(x) for x in v.values()) else "undecidable"

    def show(self, v: dict) -> str:
        return ", ".join(f"{k} {_show(x)}" for k, x in v.items())

    def note_on(self, res) -> str:
        """An extra remark for the reason column (e.g. why a probe cannot discriminate here)."""
        return ""


def _outcomes(rule: Rule, res) -> tuple[list[dict], list, list[str]]:
    values = rule.measure(res) if res is not None and res.has(*rule.groups()) else []
    outcomes, reasons = [], []
    for v in values:
        o = None if any(C.is_nan(x) for x in v.values() if not isinstance(x, str)) else rule.holds(v)
        outcomes.append(o)
        never = any(isinstance(x, float) and math.isinf(x) for x in v.values())
        if o is None or (o is False and never and rule.kind == C.HAPPENS):  # say which event never came
            reasons.append(rule.why(v))
    return values, outcomes, list(dict.fromkeys(reasons))


def evaluate(rule: Rule, res, recipe: str = "", held_out=None) -> C.Claim:
    """The claims-table row of ``rule`` on the published seeds' ``res`` and the held-out seeds'."""
    values, outcomes, reasons = _outcomes(rule, res)
    held_values, held, held_reasons = _outcomes(rule, held_out) if held_out is not None else ([], None, [])
    margin, thin = C.margin_of([rule.slack(v) for v in values], rule.units())
    extra = "; ".join(r for r in [*dict.fromkeys(reasons + held_reasons), rule.note_on(res)] if r)
    return C.make_claim(rule.id, rule.claim, rule.figure, rule.text(res), outcomes,
                        [rule.show(v) for v in values], recipe, extra_reason=extra, unit=rule.unit, held_out=held,
                        measured_held_out=[rule.show(v) for v in held_values], margin=margin, thin=thin,
                        role=rule.role, note=rule.note, kind=rule.kind)


def _show(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, float) and math.isinf(x):
        return "never"
    if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer() and abs(x) >= 10):
        return str(int(x))
    if x and abs(x) < 0.005:  # errors of exact formulas: their size is the point
        return f"{x:.1e}"
    return C.fmt(x)


def _both(bounds: Sequence[tuple[str, float]], op: str) -> str:
    return " and ".join(f"{m} {op} {b:g}" for m, b in bounds)


def _short(metric: str) -> str:
    return metric.replace("eval_", "").replace("_acc", "")


# ---------------------------------------------------------------------------------------------
# Rules on the final values or the curves of one condition

@dataclass(frozen=True)
class FinalAtLeast(Rule):
    """The last logged value of each metric is at least its bound."""

    group: str = ""
    bounds: tuple[tuple[str, float], ...] = ()

    def groups(self):
        return (self.group,)

    def text(self, res):
        return f"{self.group}: final {_both(self.bounds, '>=')} (fixed evaluation batch)"

    def measure(self, res):
        finals = [res.final(self.group, m) for m, _ in self.bounds]
        return [{m: float(f[s]) for (m, _), f in zip(self.bounds, finals)} for s in range(len(finals[0]))]

    def holds(self, v):
        return all(C.at_least(v[m], b) for m, b in self.bounds)

    def slack(self, v):
        return {m: C.room(v[m], b) for m, b in self.bounds}


def never_text(never: Sequence[str], kind: str) -> str:
    """Why events that never happened within the run decide (or not) a claim of ``kind``."""
    names = ", ".join(never)
    if kind == C.HAPPENS:
        return f"{names} never reached within the run: the claim says it happens"
    return f"{names}: none reached within the run (censored together: tied)"


@dataclass(frozen=True)
class ReachOrder(Rule):
    """Each metric first reaches its threshold strictly before the next one does. An event that never
    happens within the run violates a ``happens`` claim and is censored at the run's end (later than
    any reached event) for a ``faster`` one. Simultaneous events are undecidable."""

    group: str = ""
    events: tuple[tuple[str, float], ...] = ()
    probe_cutoff: int = 0  # the rule needs T > this (e.g. 64 for wk0_64 vs wk0), else it says why

    def groups(self):
        return (self.group,)

    def text(self, res):
        chain = " before ".join(f"{m} reaches {t:g}" for m, t in self.events)
        within = ("; one never reached counts as after the run's end (censored)" if self.kind == C.FASTER
                  else "; every one within the run")
        return f"{self.group}: {chain} (first evaluation at or above{within})"

    def measure(self, res):
        curves = [res.curve(self.group, m) for m, _ in self.events]
        n = len(curves[0][1])
        return [{_short(m): C.first_reach(it, vals[s], t) for (m, t), (it, vals) in zip(self.events, curves)}
                for s in range(n)]

    def holds(self, v):
        return C.ordered(list(v.values()), self.kind)

    def why(self, v):
        times = list(v.values())
        if self.kind == C.HAPPENS and any(math.isinf(t) for t in times):
            return never_text([k for k, t in v.items() if math.isinf(t)], self.kind)
        ties = [a for a, b, ta, tb in zip(v, list(v)[1:], times, times[1:]) if ta == tb]
        if ties and all(math.isinf(v[a]) for a in ties):
            return never_text([k for k, t in v.items() if math.isinf(t)], self.kind)
        return "two events at the same evaluation step" if ties else super().why(v)

    def slack(self, v):
        keys, times = list(v), list(v.values())
        return {f"{a} to {b}": steps_between(ta, tb, self.kind)
                for a, b, ta, tb in zip(keys, keys[1:], times, times[1:])}

    def units(self):
        keys = [_short(m) for m, _ in self.events]
        return {f"{a} to {b}": "steps" for a, b in zip(keys, keys[1:])}

    def show(self, v):
        return super().show(v) + censored_mark(v.values(), self.kind)

    def note_on(self, res):
        if self.probe_cutoff and res is not None and res.has(self.group):
            t = res.config(self.group).data_args.seq_length
            if t <= self.probe_cutoff:
                return f"T = {t}: with T <= {self.probe_cutoff} the two probes coincide"
        return ""


def steps_between(earlier: float, later: float, kind: str) -> float:
    """How many steps ``later`` comes after ``earlier``; for a faster claim a censored later event
    counts at the run's end (a lower bound); NaN where no number can be given."""
    if math.isinf(earlier) or (math.isinf(later) and kind == C.HAPPENS):
        return math.nan
    return C.censored_at(later) - earlier


def censored_mark(values, kind: str) -> str:
    """' (censored)' where a faster claim counted a never-reached event as later."""
    return " (censored)" if kind == C.FASTER and any(math.isinf(x) for x in values if not isinstance(x, str)) else ""


@dataclass(frozen=True)
class PairedEarlier(Rule):
    """Seed-paired: each metric first reaches its threshold strictly earlier in condition ``earlier``
    than in condition ``later`` (seed i against seed i). A ``faster`` claim (the default) counts an
    event never reached within the run as later (censored); a ``happens`` claim needs every event."""

    earlier: str = ""
    later: str = ""
    events: tuple[tuple[str, float], ...] = ()
    kind: str = C.FASTER

    def groups(self):
        return (self.earlier, self.later)

    def text(self, res):
        what = " and ".join(f"{m} reaches {t:g}" for m, t in self.events)
        within = ("one never reached within the run counts as later (censored)" if self.kind == C.FASTER
                  else "every event within the run")
        return f"{what} earlier with {self.earlier} than with {self.later} (seed-paired; {within})"

    def measure(self, res):
        out = []
        times = {g: [res.curve(g, m) for m, _ in self.events] for g in self.groups()}
        n = min(len(times[g][0][1]) for g in self.groups())
        for s in range(n):
            v = {}
            for (m, t), (it_a, a), (it_b, b) in zip(self.events, times[self.earlier], times[self.later]):
                v[f"{_short(m)}, {self.earlier}"] = C.first_reach(it_a, a[s], t)
                v[f"{_short(m)}, {self.later}"] = C.first_reach(it_b, b[s], t)
            out.append(v)
        return out

    def _pairs(self, v):
        keys = list(v)
        return [(keys[i], keys[i + 1]) for i in range(0, len(keys), 2)]

    def holds(self, v):
        outcomes = [C.ordered([v[a], v[b]], self.kind) for a, b in self._pairs(v)]
        if False in outcomes:
            return False
        return None if None in outcomes else True

    def why(self, v):
        both = [a.split(",")[0] for a, b in self._pairs(v) if math.isinf(v[a]) and math.isinf(v[b])]
        if both:
            return never_text(both, self.kind) + " in both conditions"
        return "the same evaluation step in both conditions"

    def slack(self, v):
        return {a.split(",")[0]: steps_between(v[a], v[b], self.kind) for a, b in self._pairs(v)}

    def units(self):
        return {_short(m): "steps" for m, _ in self.events}

    def show(self, v):
        return super().show(v) + censored_mark(v.values(), self.kind)


def freeze_step(cfg) -> int:
    """The first unfreezing step of a run's ``freeze_until`` (0 when nothing is frozen)."""
    steps = [s for s, _ in parse_freeze_until(cfg.freeze_until)]
    return min(steps) if steps else 0


@dataclass(frozen=True)
class BeforeUnfreeze(Rule):
    """Before the condition's freeze step F (read from its config): the largest value of each
    ``peak_at_most`` metric stays under its bound, of each ``peak_at_least`` metric reaches its
    bound, and each ``gain_at_most`` metric rises at most that much above its value at iteration 0."""

    group: str = ""
    peak_at_most: tuple[tuple[str, float], ...] = ()
    peak_at_least: tuple[tuple[str, float], ...] = ()
    gain_at_most: tuple[tuple[str, float], ...] = ()

    def groups(self):
        return (self.group,)

    def _f(self, res) -> str:
        return str(freeze_step(res.config(self.group))) if res.has(self.group) else "F"

    def text(self, res):
        f = self._f(res)
        parts = ([f"max {_both(self.peak_at_least, '>=')}"] if self.peak_at_least else []) + \
                ([f"max {_both(self.peak_at_most, '<=')}"] if self.peak_at_most else []) + \
                [f"{m} rises by <= {b:g} above its value at iteration 0" for m, b in self.gain_at_most]
        return f"{self.group} until {f}: before {f}, " + "; ".join(parts)

    def measure(self, res):
        f = freeze_step(res.config(self.group))
        metrics = [m for m, _ in self.peak_at_most + self.peak_at_least + self.gain_at_most]
        curves = {m: res.curve(self.group, m) for m in dict.fromkeys(metrics)}
        out = []
        for s in range(len(next(iter(curves.values()))[1])):
            v = {}
            for m, _ in self.peak_at_least + self.peak_at_most:
                it, vals = curves[m]
                v[f"max {_short(m)}"] = C.max_before(it, vals[s], f)
            for m, _ in self.gain_at_most:
                it, vals = curves[m]
                v[f"{_short(m)} gain"] = C.max_before(it, vals[s], f) - vals[s][0]
            out.append(v)
        return out

    def holds(self, v):
        return (all(C.at_least(v[f"max {_short(m)}"], b) for m, b in self.peak_at_least)
                and all(C.at_most(v[f"max {_short(m)}"], b) for m, b in self.peak_at_most)
                and all(C.at_most(v[f"{_short(m)} gain"], b) for m, b in self.gain_at_most))

    def slack(self, v):
        return {**{f"max {_short(m)}": C.room(v[f"max {_short(m)}"], b) for m, b in self.peak_at_least},
                **{f"max {_short(m)}": C.room(v[f"max {_short(m)}"], b, False) for m, b in self.peak_at_most},
                **{f"{_short(m)} gain": C.room(v[f"{_short(m)} gain"], b, False) for m, b in self.gain_at_most}}


@dataclass(frozen=True)
class PairedBetter(Rule):
    """Seed-paired: ``stat`` of ``metric`` (minus the final value of ``minus``, when given) is higher
    in ``higher`` than in ``lower`` by more than ``margin``; within the margin it is undecidable.
    ``stat``: 'mean' over the run or 'final'."""

    higher: str = ""
    lower: str = ""
    metric: str = ACC
    stat: str = "mean"
    margin: float = 0.0
    minus: str = ""

    def groups(self):
        return (self.higher, self.lower)

    def _what(self) -> str:
        what = f"mean over the run of {self.metric}" if self.stat == "mean" else f"final {self.metric}"
        return f"{what} - final {self.minus}" if self.minus else what

    def text(self, res):
        return f"{self._what()}: {self.higher} > {self.lower} (by > {self.margin:g}, seed-paired)"

    def measure(self, res):
        a, b = (self._values(res, g) for g in (self.higher, self.lower))
        return [{self.higher: x, self.lower: y} for x, y in C.paired(a, b)]

    def _values(self, res, group: str) -> np.ndarray:
        v = _stat(res, group, self.metric, self.stat)
        return v - res.final(group, self.minus) if self.minus else v

    def holds(self, v):
        return C.compare(v[self.higher], v[self.lower], tol=self.margin)

    def slack(self, v):
        return {"difference": C.room(v[self.higher] - v[self.lower], self.margin)}

    def why(self, v):
        return f"the difference is within the margin {self.margin:g}"


def _stat(res, group: str, metric: str, stat: str) -> np.ndarray:
    if stat == "final":
        return res.final(group, metric)
    it, vals = res.curve(group, metric)
    return np.asarray([C.mean_over(it, row) for row in vals])


def config_value(cfg, key: str):
    """A dotted key of a TrainConfig, e.g. 'model_args.dim'."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@dataclass(frozen=True)
class IncreasesWith(Rule):
    """Per seed, ``stat`` of ``metric`` rises with the config value ``key`` across the conditions
    whose label starts with ``select`` (Spearman rho >= ``min_rho``); x is read from each
    condition's config, so the rule follows whatever K or widths a scale trains."""

    select: str = ""
    key: str = ""
    metric: str = ACC
    stat: str = "final"
    min_rho: float = 0.8

    def conditions(self, res) -> list[str]:
        return [g for g in res.groups() if g.startswith(self.select)]

    def _xs(self, res) -> list:
        return [config_value(res.config(g), self.key) for g in self.conditions(res)]

    def text(self, res):
        what = "mean over the run" if self.stat == "mean" else "final value"
        return (f"{what} of {self.metric} increases with {self.key} in {self._xs(res)} "
                f"(Spearman rho >= {self.min_rho:g} per seed)")

    def measure(self, res):
        groups = self.conditions(res)
        if len(groups) < 2:
            return []
        xs = self._xs(res)
        per_x = [_stat(res, g, self.metric, self.stat) for g in groups]
        name = self.key.rsplit(".", 1)[-1]
        return [{**{f"{name}={x}": float(v[s]) for x, v in zip(xs, per_x)},
                 "rho": C.spearman(xs, [v[s] for v in per_x])} for s in range(min(len(v) for v in per_x))]

    def holds(self, v):
        return C.at_least(v["rho"], self.min_rho)

    def slack(self, v):
        return {"rho": C.room(v["rho"], self.min_rho)}


@dataclass(frozen=True)
class Checks(Rule):
    """Values computed by ``measure_fn(res)`` (one dict per seed) against (key, op, bound) checks,
    op in '>=', '<=', '>' or '<'. ``describe`` names what the values are."""

    measure_fn: Callable = field(default=lambda res: [], compare=False)
    checks: tuple[tuple[str, str, float], ...] = ()
    describe: str = ""
    needs: tuple[str, ...] = ()
    unit_name: str = "seeds"

    @property
    def unit(self):  # noqa: D401 - overrides the class attribute per instance
        return self.unit_name

    def groups(self):
        return self.needs

    def text(self, res):
        checks = " and ".join(f"{k} {op} {b:g}" for k, op, b in self.checks)
        return f"{self.describe}: {checks}" if self.describe else checks

    def measure(self, res):
        return self.measure_fn(res)

    def holds(self, v):
        ops = {">=": C.at_least, "<=": C.at_most, ">": C.exceeds, "<": C.undercuts}
        return all(ops[op](v[k], b) for k, op, b in self.checks)

    def slack(self, v):
        return {f"{k} {op} {b:g}": C.room(v[k], b, op.startswith(">")) for k, op, b in self.checks}
