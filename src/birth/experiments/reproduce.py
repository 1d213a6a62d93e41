"""``birth reproduce``: expand recipes into runs, run what is missing, then plot and check claims.

    OUT/runs/<config hash>/      one run directory per distinct config (shared between recipes)
    OUT/figures/<name>.png|pdf   the figures
    OUT/data/<name>.csv          the plotted numbers
    OUT/claims/<name>.json|md    the claims table of each recipe
    OUT/claims.json|md           all recipes reproduced in OUT
    OUT/README.md                index: figures, data, claims and the command that made them
    OUT/reproduce.json           the same as data (scale, seeds, command, runs, timings)
"""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from birth.config import ConfigError
from birth.experiments import claims as C
from birth.experiments import recipes
from birth.experiments.common import Output, Results, check_scale
from birth.launch import Backend, LocalBackend, Result, is_complete, make_job, run_jobs


@dataclass
class Report:
    """What a reproduction did."""

    exit_code: int
    results: list[Result] = field(default_factory=list)
    claims: list[C.Claim] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def trained(self) -> int:
        """Runs this command trained (or tried to: failed ones included)."""
        return sum(r.status != "cached" for r in self.results)


def resolve_names(name: str) -> list[str]:
    known = recipes()
    if name == "all":
        return list(known)
    if name not in known:
        raise ConfigError(f"reproduce: unknown recipe {name!r}; choose from all, {', '.join(known)}")
    return [name]


def command_line(name: str, scale: str, seeds: int, out: Path) -> str:
    return f"birth reproduce {name} --scale {scale} --seeds {seeds} --out {out}"


def plan(names: Sequence[str], scale: str, seeds: int, out: Output) -> dict[str, list[tuple]]:
    """recipe name -> [(RunSpec, Job)]: every run each recipe needs (configs validated here)."""
    if seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {seeds}")
    check_scale(scale)
    table = recipes()
    planned = {}
    for name in names:
        planned[name] = [(spec, make_job(out.runs, spec.all_overrides(), spec.preset,
                                         label=f"{name}/{spec.group}/seed {spec.seed}"))
                         for spec in table[name].specs(scale, seeds)]
    return planned


def reproduce(name: str, *, scale: str = "quick", seeds: int = 3, out: str | Path = "reproduce_out",
              backend: Optional[Backend] = None, dry_run: bool = False,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Report:
    names = resolve_names(name)
    out = Output(Path(out))
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    planned = plan(names, scale, seeds, out)
    jobs = [job for pairs in planned.values() for _, job in pairs]
    distinct: dict = {}
    for j in jobs:
        distinct.setdefault(j.run_dir, j)
    done = sum(is_complete(d) for d in distinct)
    backend = backend or LocalBackend()
    workers = getattr(backend, "workers", "?")
    log(f"birth: {name} at scale {scale}: {len(distinct)} runs ({done} already complete, "
        f"{len(distinct) - done} to train) with {workers} worker(s); runs in {out.runs}")
    if dry_run:
        for job in distinct.values():
            log(f"  {'done' if is_complete(job.run_dir) else 'todo'}  {job.run_dir}  {job.label}")
        return Report(0)
    counter = {"n": 0}
    todo = len(distinct) - done

    def progress(res: Result) -> None:
        if res.status == "cached":
            return
        counter["n"] += 1
        fm = res.summary.get("final_metrics", {}) if res.summary else {}
        acc = fm.get("eval_acc_end")
        detail = f"acc_end {acc:.3f}" if isinstance(acc, float) else (res.error.strip().splitlines() or [""])[-1]
        log(f"  [{counter['n']}/{todo}] {res.job.label}: {res.status} in {res.seconds:.1f}s ({detail})")

    results = run_jobs(jobs, backend, progress)
    by_dir = {r.job.run_dir: r for r in results}
    failed = [r for r in results if not r.ok]
    for r in failed:
        log(f"birth: run failed: {r.job.label} ({r.job.run_dir}): {r.status}: "
            f"{(r.error.strip().splitlines() or [''])[-1]}")

    report = Report(0, results)
    state = _load_state(out.root)
    plot_errors = []
    for rname in names:
        recipe = recipes()[rname]
        pairs = [(s, Path(j.run_dir)) for s, j in planned[rname]]
        res = Results.from_specs(scale, pairs, lambda p: by_dir.get(str(p)) is not None and by_dir[str(p)].ok)
        files: list[Path] = []
        try:
            files += recipe.plot(res, out)
        except Exception as err:  # noqa: BLE001 - one broken figure must not hide the others
            plot_errors.append(f"{rname}: {type(err).__name__}: {err}")
            log(f"birth: plotting {rname} failed: {type(err).__name__}: {err}")
        rows = recipe.claims(res)
        header = {"scale": scale, "seeds": seeds, "command": command_line(rname, scale, seeds, out.root)}
        files += C.write_claims(rows, out.root / "claims", rname, header)
        report.claims += rows
        report.files += files
        state["recipes"][rname] = {
            "figure": recipe.figure, "title": recipe.title, "scale": scale, "seeds": seeds,
            "command": command_line(rname, scale, seeds, out.root), "notes": recipe.notes(scale),
            "files": [str(p.relative_to(out.root)) for p in files],
            "runs": [{"label": j.label, "group": s.group, "seed": s.seed,
                      "run_dir": str(Path(j.run_dir).relative_to(out.root)), "status": by_dir[j.run_dir].status,
                      "seconds": by_dir[j.run_dir].summary.get("wall_seconds")} for s, j in planned[rname]],
            "claims": {v: sum(r.verdict == v for r in rows) for v in (C.PASS, C.FAIL, C.INCONCLUSIVE)},
            "made": time.strftime("%Y-%m-%d %H:%M"),
        }
    report.wall_seconds = time.perf_counter() - t0
    report.cpu_seconds = _cpu_seconds() - cpu0
    state["last"] = {"command": command_line(name, scale, seeds, out.root), "wall_seconds": round(report.wall_seconds, 1),
                     "cpu_seconds": round(report.cpu_seconds, 1), "runs": len(distinct),
                     "trained": report.trained, "failed": len(failed), "workers": workers}
    if report.trained:
        state["last_training"] = dict(state["last"], made=time.strftime("%Y-%m-%d %H:%M"))
    _write_index(out, state)
    report.files += [out.root / "claims.md", out.root / "claims.json", out.root / "README.md"]
    report.exit_code = 1 if failed or plot_errors else 0
    log(f"birth: {name}: {report.trained} runs trained, {len(results) - report.trained} reused, {len(failed)} failed; "
        f"{report.wall_seconds:.0f}s wall, {report.cpu_seconds:.0f}s CPU; claims: "
        + ", ".join(f"{sum(r.verdict == v for r in report.claims)} {v}" for v in (C.PASS, C.FAIL, C.INCONCLUSIVE))
        + f"; see {out.root / 'README.md'}")
    return report


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load_state(root: Path) -> dict:
    path = root / "reproduce.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    state.setdefault("recipes", {})
    return state


def _write_index(out: Output, state: dict) -> None:
    """reproduce.json, claims.json/md over every recipe reproduced in OUT, and README.md."""
    root = out.root
    root.mkdir(parents=True, exist_ok=True)
    order = [n for n in recipes() if n in state["recipes"]]
    rows: list[C.Claim] = []
    for n in order:
        path = root / "claims" / f"{n}.json"
        if path.exists():
            rows += [C.Claim(**r) for r in json.loads(path.read_text())["claims"]]
    scales = sorted({state["recipes"][n]["scale"] for n in order})
    header = {"scale": ", ".join(scales), "recipes": ", ".join(order)}
    C.write_claims(rows, root, "claims", header)
    (root / "reproduce.json").write_text(json.dumps(state, indent=2) + "\n")
    last = state.get("last", {})
    lines = ["# Birth of a Transformer: reproduction", "",
             f"Last command: `{last.get('command', '')}`: {last.get('runs', 0)} runs "
             f"({last.get('trained', 0)} trained, {last.get('failed', 0)} failed), "
             f"{last.get('wall_seconds', 0):.0f} s wall, {last.get('cpu_seconds', 0):.0f} s CPU "
             f"with {last.get('workers', '?')} worker(s).", ""]
    if "last_training" in state:
        t = state["last_training"]
        lines += [f"Last command that trained: `{t['command']}` ({t['made']}): {t['trained']} runs trained, "
                  f"{t['failed']} failed, {t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU with "
                  f"{t['workers']} worker(s).", ""]
    lines += [
             "Curves: mean over seeds (line) and min..max over seeds (band). Claims: [claims.md](claims.md).", ""]
    for n in order:
        r = state["recipes"][n]
        pngs = [f for f in r["files"] if f.endswith(".png")]
        lines += [f"## {n}: {r['figure']}: {r['title']}", ""]
        lines += [f"![{n}]({f})" for f in pngs]
        lines += ["", f"- command: `{r['command']}` (scale {r['scale']}, {r['seeds']} seeds, made {r['made']})",
                  f"- setup: {r['notes']}",
                  "- files: " + ", ".join(f"[{f}]({f})" for f in r["files"]),
                  f"- claims: {r['claims'][C.PASS]} PASS, {r['claims'][C.FAIL]} FAIL, "
                  f"{r['claims'][C.INCONCLUSIVE]} INCONCLUSIVE ([claims/{n}.md](claims/{n}.md))",
                  f"- runs: {len(r['runs'])} ({sum(x['status'] not in ('completed', 'cached') for x in r['runs'])} failed)",
                  ""]
    lines += ["## Claims", "", (root / "claims.md").read_text()]
    (root / "README.md").write_text("\n".join(lines) + "\n")
