"""The verdict over seeds and the claims table; the pure building blocks that rules are made of.

Every rule is evaluated on each seed separately, giving True (satisfied), False (violated) or None
(undecidable: two events at the same evaluation step, two events that both never happened within
the run, a difference within its stated margin). The verdict over one set of seeds:

- PASS: every seed satisfies the rule;
- FAIL: no seed satisfies it and at least one violates it;
- INCONCLUSIVE: the seeds disagree (the band is too wide to decide), some are undecidable, or no
  completed run was there to look at. The reason says which.

A claim is judged on the published seeds and on a disjoint set of held-out seeds; its verdict is
that of both sets when they agree, INCONCLUSIVE when they do not. Each row carries its margin: the
distance of the worst published seed from the rule's threshold, in the threshold's units, and is
flagged thin when that margin is smaller than the seed-to-seed spread (standard deviation) of the
same distance. Rows of ``role`` 'check' are implementation checks, tabled apart from the claims;
rows of ``role`` 'note' are shown with their measurements and never counted.

One censoring principle, declared per claim before the runs (its ``kind``):

- ``happens``: the claim says that something happens (is learned, is reached, holds) within the
  run. An event that never happens within the run violates it.
- ``faster``: the claim says that one thing happens sooner (or more easily) than another. An
  event never reached within the run is censored at the run's end: it counts as later than any
  event that was reached, and the table says "censored"; two censored events are tied.

The building blocks are pure functions of numbers (``first_reach``, ``order_holds``, ...), unit-tested
on synthetic logs; the rules themselves are in ``birth.experiments.rules``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
HAPPENS, FASTER = "happens", "faster"            # the kinds of claims (the censoring principle above)
ROLES = ("claim", "check", "note")
INF = math.inf
# Metrics are logged from float32 (0.2 arrives as 0.2000000030) and rank correlations come out of
# floating-point arithmetic (0.8 as 0.7999999999): every threshold is compared with this slack, at
# most a thousandth of the threshold (``tolerance``), so that a rule means what its text says.
EPS = 1e-6


def tolerance(bound: float) -> float:
    """The rounding a comparison with ``bound`` forgives: EPS, but never more than a thousandth of
    the bound (an implementation check's bound of 1e-10 means 1e-10, not 1e-6)."""
    return min(EPS, abs(bound) * 1e-3) if bound else EPS


def at_least(value: float, bound: float) -> bool:
    return value >= bound - tolerance(bound)


def at_most(value: float, bound: float) -> bool:
    return value <= bound + tolerance(bound)


def exceeds(value: float, bound: float) -> bool:
    return value > bound + tolerance(bound)


def undercuts(value: float, bound: float) -> bool:
    return value < bound - tolerance(bound)


def room(value: float, bound: float, higher: bool = True) -> float:
    """How far ``value`` is on the satisfying side of ``bound`` (< 0: violated); 0 within the
    comparison's rounding, so that a seed on its threshold shows no room."""
    d = value - bound if higher else bound - value
    return 0.0 if abs(d) <= tolerance(bound) else d


@dataclass
class Claim:
    """One row of the claims table."""

    id: str            # SPEC §7 claim number (with a letter when a claim has several rules)
    claim: str
    figure: str
    rule: str
    measured: str
    verdict: str
    reason: str = ""
    recipe: str = ""
    per_seed: list = field(default_factory=list)     # the published seeds' outcomes
    held_out: list = field(default_factory=list)     # the held-out seeds' outcomes
    margin: str = ""                                 # the worst published seed's distance from the threshold
    thin: bool = False                               # that margin is below the seeds' spread of it
    role: str = "claim"                              # 'claim', 'check' (of the implementation) or 'note'
    note: str = ""                                   # a caveat: a probe's limits, a rule chosen after a result
    measured_held_out: str = ""
    kind: str = HAPPENS                              # HAPPENS or FASTER: how a never-reached event counts

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> "Claim":
        """A row of claims.json (rows written before claims had kinds: 'kind' then held the role)."""
        row = dict(row)
        if row.get("kind") in ROLES:
            row["role"], row["kind"] = row.pop("kind"), ""
        return cls(**row)

    @property
    def published_verdict(self) -> str:
        return verdict(self.per_seed)[0]


# ---------------------------------------------------------------------------------------------
# Rule building blocks (pure)

class Never(float):
    """An event never reached within a run: infinite in every comparison (censored), and the run's
    last evaluated iteration ``end``, the least it would have taken (margins of censored events)."""

    def __new__(cls, end: float):
        obj = super().__new__(cls, math.inf)
        obj.end = float(end)
        return obj


def censored_at(t: float) -> float:
    """An event's time for a margin: its iteration, or the run's end where it never happened."""
    return t.end if isinstance(t, Never) else t


def first_reach(iters: Sequence[float], values: Sequence[float], threshold: float, above: bool = True) -> float:
    """The first iteration at which ``values`` is >= threshold (<= when ``above`` is False); ``Never``
    (inf, with the run's last iteration) if never."""
    for it, v in zip(iters, values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if at_least(v, threshold) if above else at_most(v, threshold):
            return float(it)
    return Never(iters[-1]) if len(iters) else INF


def order_holds(times: Sequence[float]) -> Optional[bool]:
    """Do events happen in the listed order? inf = never happened (censored at the run's end).

    True when each event happens strictly before the next (an event that never happens comes after
    every one that does); False when some later event happens strictly before an earlier one;
    None when two consecutive events are simultaneous (same evaluation step, or both never).
    """
    undecided = False
    for a, b in zip(times, times[1:]):
        if a == b:
            undecided = True
        elif b < a:
            return False
    return None if undecided else True


def ordered(times: Sequence[float], kind: str) -> Optional[bool]:
    """``order_holds`` under a claim's kind: a ``happens`` claim is violated by an event that never
    happened within the run; a ``faster`` claim counts it as later (censored)."""
    if kind == HAPPENS and any(math.isinf(t) for t in times):
        return False
    return order_holds(times)


def max_before(iters: Sequence[float], values: Sequence[float], until: float) -> float:
    """The largest value logged at iterations < ``until`` (NaN if none)."""
    sel = [v for it, v in zip(iters, values) if it < until and not is_nan(v)]
    return max(sel) if sel else math.nan


def mean_over(iters: Sequence[float], values: Sequence[float], start: float = -INF) -> float:
    """Mean of the values logged at iterations >= ``start``: the area under the curve per step."""
    sel = [v for it, v in zip(iters, values) if it >= start and not is_nan(v)]
    return float(np.mean(sel)) if sel else math.nan


def compare(a: float, b: float, tol: float = 0.0) -> Optional[bool]:
    """a > b (True), a < b (False), or None when they are within ``tol`` or undefined."""
    if is_nan(a) or is_nan(b):
        return None
    if abs(a - b) <= tol:
        return None
    return a > b


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties get average ranks); NaN when undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = v.argsort(kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):
        same = v == value
        ranks[same] = ranks[same].mean()
    return ranks


def is_nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def outcome(value) -> Optional[bool]:
    """A per-seed outcome as True/False/None (numpy booleans included)."""
    return None if value is None else bool(value)


def verdict(outcomes: Sequence[Optional[bool]], unit: str = "seeds") -> tuple[str, str]:
    """The verdict over seeds of per-seed outcomes (see the module docstring) and its reason."""
    outcomes = [outcome(o) for o in outcomes]
    n = len(outcomes)
    if n == 0:
        return INCONCLUSIVE, "no completed run to evaluate"
    yes = sum(o is True for o in outcomes)
    no = sum(o is False for o in outcomes)
    undecided = n - yes - no
    if yes == n:
        return PASS, f"all {n} {unit} satisfy the rule"
    if yes == 0 and no > 0 and undecided == 0:
        return FAIL, f"all {n} {unit} violate the rule"
    if yes and no:
        return INCONCLUSIVE, f"{unit} disagree ({yes} of {n} satisfy, {no} violate): band too wide to decide"
    if yes == 0 and no > 0:
        return INCONCLUSIVE, f"{no} of {n} {unit} violate the rule, {undecided} undecidable"
    return INCONCLUSIVE, (f"{undecided} of {n} {unit} undecidable (simultaneous or never-reached thresholds)"
                          + (f", {yes} satisfy" if yes else ""))


def make_claim(id: str, claim: str, figure: str, rule: str, outcomes: Sequence[Optional[bool]],
               measured: Sequence[str] | str, recipe: str = "", extra_reason: str = "",
               unit: str = "seeds", held_out: Optional[Sequence[Optional[bool]]] = None,
               measured_held_out: Sequence[str] | str = "", margin: str = "", thin: bool = False,
               role: str = "claim", note: str = "", kind: str = HAPPENS) -> Claim:
    """A Claim row from per-seed outcomes and the per-seed measured values (published seeds, and the
    held-out seeds when there are any)."""
    v, reason = verdict(outcomes, unit)
    if held_out is not None and len(held_out):
        v_held, reason_held = verdict(held_out, unit)
        if v_held != v:
            reason = (f"published seeds {v} ({reason}), held-out seeds {v_held} ({reason_held}): the two sets "
                      "disagree")
            v = INCONCLUSIVE
        elif v != PASS:
            reason = f"{reason}; held-out seeds: {reason_held}"
    if extra_reason:
        reason = f"{reason}; {extra_reason}"
    join = lambda m: m if isinstance(m, str) else " | ".join(m)
    return Claim(id=id, claim=claim, figure=figure, rule=rule, measured=join(measured), verdict=v, reason=reason,
                 recipe=recipe, per_seed=[outcome(o) for o in outcomes],
                 held_out=[outcome(o) for o in held_out or []], margin=margin, thin=thin, role=role, note=note,
                 kind=kind,
                 measured_held_out=join(measured_held_out))


def satisfied(outcomes: Sequence[Optional[bool]]) -> str:
    """'k/n': how many seeds satisfy a rule."""
    return f"{sum(o is True for o in outcomes)}/{len(outcomes)}" if len(outcomes) else "-"


def margin_of(slacks: Sequence[dict[str, float]], units: dict[str, str]) -> tuple[str, bool]:
    """(text, thin) of per-seed slacks {check: signed distance from its threshold, >0 satisfied}:
    the check whose worst seed is closest to its threshold relative to the seeds' spread of it."""
    best = None
    for name in dict.fromkeys(k for s in slacks for k in s):
        values = [s[name] for s in slacks if name in s and not is_nan(s[name]) and math.isfinite(s[name])]
        if not values:
            continue
        worst = min(values)
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        score = (worst / spread if spread > 0 else (math.inf if worst > 0 else -math.inf), worst)
        if best is None or score < best[0]:
            best = (score, name, worst, spread)
    if best is None:
        return "", False
    _, name, worst, spread = best
    unit = units.get(name, "")
    num = lambda x: f"{x:.0f}" if unit == "steps" else f"{x:.3g}"
    text = f"{name}: {num(worst)}{' ' + unit if unit else ''} (spread {num(spread)})"
    return text, bool(0 <= worst < spread)  # thin: satisfied, by less than the seeds scatter


def step_of(t: float) -> float:
    """An event's iteration as an int (inf stays inf: never)."""
    return t if math.isinf(t) or is_nan(t) else int(t)


def fmt_iter(t: float) -> str:
    return "never" if math.isinf(t) else str(int(t))


def fmt(v: float, digits: int = 2) -> str:
    return "n/a" if is_nan(v) else f"{v:.{digits}f}"


def paired(a: np.ndarray, b: np.ndarray) -> list[tuple[float, float]]:
    """Seed-paired values of two conditions (the shorter length wins)."""
    n = min(len(a), len(b))
    return list(zip(a[:n], b[:n]))


# ---------------------------------------------------------------------------------------------
# The table

def write_claims(rows: Sequence[Claim], out_dir: Path, stem: str, header: dict, info: Sequence[str] = (),
                 status: str = "") -> list[Path]:
    """``stem``.json (rows, ``header``: scale, seeds, command; ``info``; ``status``) and ``stem``.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{stem}.json"
    js.write_text(json.dumps({**header, "status": status, "claims": [r.as_dict() for r in rows],
                              "info": list(info)}, indent=2) + "\n")
    md = out_dir / f"{stem}.md"
    md.write_text(claims_markdown(rows, header, info, status) + "\n")
    return [js, md]


def claims_markdown(rows: Sequence[Claim], header: dict, info: Sequence[str] = (), status: str = "") -> str:
    lines = []
    if status:
        lines += [f"**{status}**", ""]
    if header:
        lines.append(" · ".join(f"{k}: `{v}`" if k == "command" else f"{k}: {v}" for k, v in header.items()))
        lines.append("")
    claims, checks, notes = ([r for r in rows if r.role == role] for role in ROLES)
    lines.append(summary_line(rows))
    lines.append("")
    if claims:
        lines += _table(claims)
    if checks:
        lines += ["", "Implementation checks (the code computes what its formulas say; not findings about the "
                      "paper's claims):", ""] + _table(checks)
    if notes:
        lines += ["", "Notes (measured and shown, never counted: the rule cannot test its claim, see each note):",
                  ""] + _table(notes)
    if info:
        lines += ["", "Shown without a verdict:", ""] + [f"- {line}" for line in info]
    return "\n".join(lines)


def summary_line(rows: Sequence[Claim]) -> str:
    """'n PASS, n FAIL, n INCONCLUSIVE (n thin)' of the claims, and the implementation checks apart."""
    claims = [r for r in rows if r.role == "claim"]
    checks = [r for r in rows if r.role == "check"]
    count = lambda rs, v: sum(r.verdict == v for r in rs)
    text = ", ".join(f"{count(claims, v)} {v}" for v in (PASS, FAIL, INCONCLUSIVE))
    thin = sum(r.thin for r in claims if r.verdict == PASS)
    text += f" ({thin} of the PASS thin)" if thin else ""
    if checks:
        text += f"; implementation checks: {count(checks, PASS)} of {len(checks)} PASS"
    return text


def _table(rows: Sequence[Claim]) -> list[str]:
    lines = ["| # | claim | figure | kind | rule | measured (published seeds) | "
             "seeds satisfying: published, held-out | margin (worst published seed) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        claim = r.claim + (f" ({r.note})" if r.note else "")
        margin = (r.margin or "n/a") + (" **thin**" if r.thin else "")
        cells = [r.id, claim, f"{r.figure} ({r.recipe})" if r.recipe else r.figure, r.kind, r.rule, r.measured,
                 f"{satisfied(r.per_seed)}, {satisfied(r.held_out)}", margin,
                 f"**{r.verdict}**" + (f": {r.reason}" if r.verdict != PASS else "")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
