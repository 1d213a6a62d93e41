"""``birth reproduce``: expand recipes into runs, run what is missing, then plot and check claims.

    OUT/runs/<config hash>/      one run directory per distinct config (shared between recipes)
    OUT/theory/                  the theory computations (recipe ``theory``)
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
import time
from pathlib import Path
from typing import Optional, Sequence

from birth.experiments import RECIPES, all_recipes
from birth.experiments import claims as C
from birth.experiments.recipe import DEFAULT_SCALE, SCALE_STATUS, Output, Recipe, Results, Seeds, check_scale
from birth.launching import plan as plans
from birth.launching.jobs import Backend
from birth.launching.local import LocalBackend
from birth.launching.plan import Log, Planned, Report
from birth.plugins import UnknownPlugin
from birth.training.config import ConfigError
from birth.training.lock import check_folder, directory_lock
from birth.training.timings import Timings


def resolve(name: str) -> list[Recipe]:
    """The recipes ``name`` means: ``all`` (every registered one, in the paper's order), a
    registered name, or ``MODULE:ATTR`` (a recipe of your own)."""
    if name == "all":
        return list(all_recipes().values())
    try:
        return [RECIPES.get(name)]
    except UnknownPlugin as err:
        raise ConfigError(f"reproduce: {err}") from None


def command_line(name: str, scale: str, seeds: Seeds, out: Path, precision: str = "float32") -> str:
    extra = ["--precision", precision] if precision != "float32" else []
    return plans.command_line(["reproduce", name, "--scale", scale, *seeds.flags().split(), *extra, "--out", out])


def as_seeds(seeds: Seeds | int | None) -> Seeds:
    """``seeds`` as Seeds: an int n is n seeds from 0 and none held out (the tests' tiny reproductions);
    None the default ones."""
    if isinstance(seeds, int):
        return Seeds.of(seeds, first=0, held_out=0)
    return seeds or Seeds.of()


def plan(recipes: Sequence[Recipe], scale: str, seeds: Seeds | int, out: Output,
         precision: str = "float32") -> dict[str, list[Planned]]:
    """recipe name -> its planned runs: every condition for every seed, published and held-out
    (configs validated here), each at ``precision`` (the key is left out at its default)."""
    seeds = as_seeds(seeds)
    check_scale(scale)
    extra = {"precision": precision} if precision != "float32" else {}
    return {r.name: plans.plan(r.sweep(scale, seeds.all, extra), out.root) for r in recipes}


def show_config(name: str, scale: str = DEFAULT_SCALE, seeds: Optional[Seeds] = None) -> str:
    """The resolved config of every condition each recipe trains at ``scale``, for the first of
    ``seeds`` (seed i sets seed = 42 + i, init_seed = i and eval_seed = i), as YAML, after a line
    naming every seed used."""
    seeds = seeds or Seeds.of()
    check_scale(scale)
    parts = [f"# seeds: published {list(seeds.published)}, held-out {list(seeds.held_out)} "
             f"(seed i: seed = 42 + i, init_seed = i, eval_seed = i; shown: seed {seeds.published[0]})\n"]
    for recipe in resolve(name):
        planned = plans.plan(recipe.sweep(scale, seeds.published[:1]), "reproduce_out")
        what = f"{recipe.name} at scale {scale}, one run per condition" + ("" if planned else " (computations)")
        parts.append(plans.show_config(planned, what))
    return "".join(parts)


def reproduce(name: str, *, scale: str = DEFAULT_SCALE, seeds: Seeds | int | None = None,
              out: str | Path = "reproduce_out",
              backend: Optional[Backend] = None, dry_run: bool = False, precision: str = "float32",
              log: Log = plans.stderr, profile: bool = False) -> Report:
    """The recipes' sweeps (one launch), then their computations, figures and claims."""
    recipes = resolve(name)
    seeds = as_seeds(seeds)
    check_folder(out)
    out = Output(Path(out))
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    planned = plan(recipes, scale, seeds, out, precision)
    backend = backend or LocalBackend()
    everything = [p for runs in planned.values() for p in runs]
    what = f"{name} at scale {scale}"
    results = plans.launch(everything, backend, what, out.runs, dry_run=dry_run, log=log, status=SCALE_STATUS[scale])
    if results is None:  # a dry run
        return Report(0)
    report = Report(0, results)
    errors = []
    # one writer at a time for OUT's shared files (theory/, figures, claims, index): a second
    # `birth reproduce` on the same OUT waits here, then reads what the first one wrote
    with directory_lock(out.root, wait=True):
        state = _load_state(out.root)
        by_dir = {r.job.run_dir: r for r in results}
        for recipe in recipes:
            entry, rows, files, error = _analyse(recipe, planned[recipe.name], by_dir, scale, seeds, out, log,
                                                 getattr(backend, "workers", 1))
            report.claims += rows
            report.files += files
            state["recipes"][recipe.name] = entry
            errors += [error] if error else []
        report.wall_seconds, report.cpu_seconds = time.perf_counter() - t0, _cpu_seconds() - cpu0
        state["last"] = {"command": command_line(name, scale, seeds, out.root, precision), "seeds": seeds.as_dict(),
                         "wall_seconds": round(report.wall_seconds, 1), "cpu_seconds": round(report.cpu_seconds, 1),
                         "runs": len({p.job.run_dir for p in everything}), "trained": report.trained,
                         "failed": len(report.failed), "workers": getattr(backend, "workers", "?")}
        if report.trained:
            state["last_training"] = dict(state["last"], made=time.strftime("%Y-%m-%d %H:%M"))
        _write_index(out, state)
        if profile:
            report.files.append(_write_profile(out.root, state, [r.name for r in recipes], log))
    report.files += [out.root / "claims.md", out.root / "claims.json", out.root / "README.md"]
    report.exit_code = plans.exit_code(results) or (1 if errors else 0)
    log(f"birth: {name}: {report.trained} runs trained, {len(results) - report.trained} reused, "
        f"{len(report.failed)} failed; {report.wall_seconds:.0f}s wall, {report.cpu_seconds:.0f}s CPU; claims: "
        + C.summary_line(report.claims) + f"; see {out.root / 'README.md'}")
    if SCALE_STATUS[scale]:
        log(f"birth: {SCALE_STATUS[scale]}")
    return report


def _analyse(recipe: Recipe, planned: list[Planned], by_dir: dict, scale: str, seeds: Seeds, out: Output,
             log: Log, workers: int = 1) -> tuple[dict, list[C.Claim], list[Path], str]:
    """Computations, figures (of the published seeds), claims (of both seed sets) and info of one
    recipe; returns (index entry, rows, files, error)."""
    runs = [(p, Path(p.job.run_dir)) for p in planned]
    ok = lambda p: str(p) in by_dir and by_dir[str(p)].ok
    res = Results.from_planned(scale, runs, ok, root=out.root, seeds=seeds.published)
    held = Results.from_planned(scale, runs, ok, root=out.root, seeds=seeds.held_out) if seeds.held_out else None
    files: list[Path] = []
    error = ""
    timings = Timings()
    try:
        if recipe.compute:
            with timings.timed("computations (theory)"):
                files += recipe.compute(scale, seeds.all, out, workers=workers)
            log(f"  {recipe.name}: computations done in {timings.seconds['computations (theory)']:.0f}s")
        with timings.timed("figures"):
            files += recipe.plot(res, out)
    except Exception as err:  # noqa: BLE001 - one broken figure must not hide the others
        error = f"{recipe.name}: {type(err).__name__}: {err}"
        log(f"birth: {error}")
    with timings.timed("claims"):
        rows = recipe.claims(res, held)
    info = recipe.info(res)
    precision = planned[0].job.config.get("precision", "float32") if planned else "float32"
    command = command_line(recipe.name, scale, seeds, out.root, precision)
    header = {"scale": scale, "seeds": f"published {list(seeds.published)}, held-out {list(seeds.held_out)}",
              "command": command}
    files += C.write_claims(rows, out.root / "claims", recipe.name, header, info=info, status=SCALE_STATUS[scale])
    entry = {
        "figure": recipe.figure, "title": recipe.title, "scale": scale, "seeds": seeds.as_dict(), "command": command,
        "notes": recipe.notes(scale), "info": info,
        "files": [str(p.relative_to(out.root)) for p in files if p.exists()],
        "runs": [{"label": p.job.label, "group": p.condition, "seed": p.seed,
                  "run_dir": str(Path(p.job.run_dir).relative_to(out.root)), "status": by_dir[p.job.run_dir].status,
                  "seconds": by_dir[p.job.run_dir].summary.get("wall_seconds")} for p in planned],
        "claims": {v: sum(r.verdict == v for r in rows) for v in (C.PASS, C.FAIL, C.INCONCLUSIVE)},
        "made": time.strftime("%Y-%m-%d %H:%M"),
        "profile": _profile(planned, by_dir, timings),
    }
    return entry, rows, files, error


def _profile(planned: list[Planned], by_dir: dict, timings: Timings) -> dict[str, float]:
    """Seconds per phase of one recipe: its runs trained by this command (each run's own profile,
    added up: CPU seconds of single-threaded workers) and its analysis here."""
    total = Timings()
    trained = {p.job.run_dir for p in planned if by_dir[p.job.run_dir].status != "cached"}
    for run_dir in trained:
        for phase, seconds in by_dir[run_dir].summary.get("profile", {}).items():
            total.add(f"runs: {phase}", seconds)
    for phase, seconds in timings.seconds.items():
        total.add(f"analysis: {phase}", seconds)
    return total.rounded()


def _write_profile(root: Path, state: dict, names: list[str], log: Log) -> Path:
    """OUT/profile.md: the command, its wall and CPU seconds, and ``profile_table``; said on stderr too."""
    last = state["last"]
    text = (f"# Where the time of `{last['command']}` went\n\n{last['wall_seconds']:.0f} s wall, "
            f"{last['cpu_seconds']:.0f} s CPU, {last['trained']} runs trained with {last['workers']} worker(s). "
            "Seconds per phase: the runs' phases are added up over the runs this command trained (each run "
            "single-threaded in its worker), the analysis phases are this process's.\n\n"
            + profile_table(state, names))
    (root / "profile.md").write_text(text)
    log(text)
    return root / "profile.md"


def profile_table(state: dict, names: Sequence[str]) -> str:
    """The profile of the recipes ``names`` reproduced in OUT (reproduce.json), as Markdown: each
    phase's seconds per recipe and in all, the largest first."""
    phases: dict[str, dict[str, float]] = {}
    for name in names:
        for phase, seconds in state["recipes"].get(name, {}).get("profile", {}).items():
            phases.setdefault(phase, {})[name] = seconds
    total = sum(sum(v.values()) for v in phases.values()) or 1.0
    order = sorted(phases, key=lambda ph: -sum(phases[ph].values()))
    lines = ["| phase | " + " | ".join(names) + " | all | share |", "|---" * (len(names) + 3) + "|"]
    for phase in order:
        row = phases[phase]
        lines.append(f"| {phase} | " + " | ".join(f"{row.get(n, 0):.0f}" for n in names)
                     + f" | {sum(row.values()):.0f} | {sum(row.values()) / total:.1%} |")
    sums = [sum(phases[ph].get(n, 0) for ph in phases) for n in names]
    lines.append("| **all phases** | " + " | ".join(f"{s:.0f}" for s in sums) + f" | {total:.0f} | 100% |")
    return "\n".join(lines) + "\n"


def _seeds_text(seeds) -> str:
    if isinstance(seeds, int):  # an index written before seeds were a choice
        return f"{seeds} seeds"
    return f"published seeds {seeds['published']}, held-out {seeds['held_out']}"


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
    order = [n for n in all_recipes() if n in state["recipes"]] + sorted(set(state["recipes"]) - set(all_recipes()))
    rows: list[C.Claim] = []
    info: list[str] = []
    for n in order:
        path = root / "claims" / f"{n}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            rows += [C.Claim.from_dict(r) for r in saved["claims"]]
            info += saved.get("info", [])
    scales = sorted({state["recipes"][n]["scale"] for n in order})
    status = " ".join(SCALE_STATUS.get(s, "") for s in scales).strip()
    C.write_claims(rows, root, "claims", {"scale": ", ".join(scales), "recipes": ", ".join(order)}, info=info,
                   status=status)
    (root / "reproduce.json").write_text(json.dumps(state, indent=2) + "\n")
    (root / "README.md").write_text(_index_markdown(root, state, order, status))


def _index_markdown(root: Path, state: dict, order: list[str], status: str) -> str:
    last = state.get("last", {})
    lines = ["# Birth of a Transformer: reproduction", ""]
    if status:
        lines += [f"**{status}**", ""]
    lines += [f"Last command: `{last.get('command', '')}`: {last.get('runs', 0)} runs "
              f"({last.get('trained', 0)} trained, {last.get('failed', 0)} failed), "
              f"{last.get('wall_seconds', 0):.0f} s wall, {last.get('cpu_seconds', 0):.0f} s CPU "
              f"with {last.get('workers', '?')} worker(s).", ""]
    if "last_training" in state:
        t = state["last_training"]
        lines += [f"Last command that trained: `{t['command']}` ({t['made']}): {t['trained']} runs trained, "
                  f"{t['failed']} failed, {t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU with "
                  f"{t['workers']} worker(s).", ""]
    lines += ["Curves: mean over seeds (line) and min..max over seeds (band). Claims: [claims.md](claims.md).", ""]
    for n in order:
        r = state["recipes"][n]
        lines += [f"## {n}: {r['figure']}: {r['title']}", ""]
        lines += [f"![{n}]({f})" for f in r["files"] if f.endswith(".png")]
        lines += ["", f"- command: `{r['command']}` (scale {r['scale']}, {_seeds_text(r['seeds'])}, made {r['made']})",
                  f"- setup: {r['notes']}",
                  "- files: " + ", ".join(f"[{f}]({f})" for f in r["files"]),
                  f"- claims: {r['claims'][C.PASS]} PASS, {r['claims'][C.FAIL]} FAIL, "
                  f"{r['claims'][C.INCONCLUSIVE]} INCONCLUSIVE ([claims/{n}.md](claims/{n}.md))"]
        if r["runs"]:
            lines.append(f"- runs: {len(r['runs'])} "
                         f"({sum(x['status'] not in ('completed', 'cached') for x in r['runs'])} failed)")
        lines.append("")
    lines += ["## Claims", "", (root / "claims.md").read_text()]
    return "\n".join(lines) + "\n"
