"""``birth sweep``: a grid of configs, given inline or in a YAML file, trained by the launcher of
``birth reproduce`` (local workers or Slurm, stacks, skip-done, exact resume) into one folder.

    OUT/runs/<config hash>/   one run directory per run, named as ``birth reproduce`` names them
    OUT/sweep.json            the index: every run with its swept values, seed index, label, run
                              dir and status, and the command that made it (written atomically)

Inline, ``KEY=V1,V2,...`` sweeps a key and ``KEY=VALUE`` sets it in every run; the grid is the
product of the swept keys. Commas split values except for free-text keys (``free_text_keys``:
``freeze_until=300:W_K1,W_K2`` is one value), which a spec file sweeps. A YAML spec has the
sections ``base`` (``preset`` and keys set in every run), ``grid`` (key: list of values; the
product), ``zip`` (keys whose lists pair up, one run per position; several groups as a list of
mappings) and ``seeds`` (a count, or ``{count, first}``).
Seed i is ``birth.training.config.seed_overrides(i)``, as in ``birth reproduce``.
"""
from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from birth.launching import plan as plans
from birth.launching.jobs import Backend
from birth.launching.plan import Log, Planned, Report, Sweep
from birth.training.config import (PRESETS, ConfigError, all_keys, canonical, field_type, import_plugins,
                                   known_key, override_value, parse_overrides)
from birth.training.lock import check_folder, directory_lock
from birth.training.runs import RunDir, atomic_write_json

INDEX = "sweep.json"
SECTIONS = ("base", "grid", "zip", "seeds")
# set by the sweep itself: the run directory is OUT/runs/<config hash>
REFUSED = {"save_dir": "runs live in OUT/runs/<config hash>", "root_dir": "runs live in OUT/runs/<config hash>"}


def free_text_keys() -> list[str]:
    """The string keys without a fixed set of values: their values are never split on commas
    (``freeze_until=300:W_K1,W_K2`` is one value); a spec file sweeps them."""
    return [k for k, f in all_keys().items() if field_type(f) is str and not f.metadata.get("choices")]


def syntax_help() -> str:
    """The value syntax of ``birth sweep``, for its --help."""
    free = [k for k in free_text_keys() if k not in REFUSED]
    values = ("values: KEY=V1,V2,... sweeps KEY over V1, V2, ...; KEY=VALUE sets KEY in every run; a key given "
              "again replaces its earlier values, as in birth train. Commas split values, except for the "
              f"free-text keys {', '.join(free)}, whose value is taken whole (freeze_until=300:W_K1,W_K2 is one "
              "value): list their values in a spec file to sweep them.")
    seeds = ("Seed i sets seed = 42 + i, init_seed = i and eval_seed = i, as in birth reproduce. Runs land in "
             "OUT/runs/<config hash>, the index in OUT/sweep.json; a rerun trains only what is missing. "
             "See docs/sweeps.md.")
    spec = ("spec file (YAML):\n"
            "  base: {preset: quick, max_iters: 60}    # the preset, and keys set in every run\n"
            "  grid: {data_args.k: [1, 3], model_args.dim: [32, 64]}   # the product of these lists\n"
            "  zip: {optim_args.lr: [0.01, 0.03], max_iters: [100, 200]}   # paired lists, one run per position\n"
            "  seeds: 2                                # or {count: 2, first: 0}")
    return "\n".join([textwrap.fill(values, 100, break_on_hyphens=False), spec, textwrap.fill(seeds, 100)])






# ---------------------------------------------------------------------------------------------
# Reading a sweep: inline items and spec files

def _key(typed: str, where: str, task: Optional[str] = None) -> str:
    """The canonical name of a key typed by the user (of ``task``'s data_args, when known); a
    one-line error naming it when unknown."""
    try:
        key = known_key(typed, task)  # the same aliases, suggestions and error as birth train
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None
    if key in REFUSED:
        raise ConfigError(f"{where}{key}: not in a sweep; {REFUSED[key]}")
    return key


def parse_items(items: Sequence[str], task: Optional[str] = None) -> dict[str, list]:
    """``['data_args.k=1,3', 'max_iters=60']`` -> ``{'data_args.k': [1, 3], 'max_iters': [60]}``
    (canonical keys, values parsed as ``birth train`` parses them; see ``syntax_help``)."""
    free = set(free_text_keys())
    values: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item!r}: expected KEY=VALUE[,VALUE...] (e.g. data_args.k=1,3) or a spec file "
                              "ending in .yaml")
        typed, _, text = item.partition("=")
        key = _key(typed.strip(), "", task)
        pieces = [text] if key in free else text.split(",")
        if len(pieces) > 1 and any(not p.strip() for p in pieces):
            raise ConfigError(f"{typed.strip()}: an empty value in {text!r}")
        # a key given again replaces its earlier values, as in birth train
        values[key] = [parse_overrides([f"{key}={p}"], task)[key] for p in pieces]
        _distinct(key, values[key], "")
    return values


def _distinct(key: str, values: list, where: str) -> None:
    """Each value of a swept key once: a repeated one would train the same run twice."""
    seen = []
    for v in values:
        if v in seen:
            raise ConfigError(f"{where}{key}: the value {v!r} is given twice")
        seen.append(v)


def _flatten(mapping: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """A YAML mapping with dotted or nested keys (``data_args: {k: 3}``) -> dotted keys."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {mapping!r}")
    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, where, f"{name}."))
        else:
            flat[name] = v
    return flat


def _lists(mapping: Any, where: str, task: Optional[str] = None) -> dict[str, list]:
    """A grid or zip section: canonical key -> its non-empty list of values."""
    out = {}
    for typed, values in _flatten(mapping, where).items():
        key = _key(typed, f"{where}: ", task)
        if not isinstance(values, list):
            raise ConfigError(f"{where}: {key}: expected a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{where}: {key}: an empty list of values")
        _distinct(key, values, f"{where}: ")
        out[key] = [_yaml_value(key, v, task) for v in values]
    if not out:
        raise ConfigError(f"{where}: empty; give each key a list of values")
    return out


def _yaml_value(key: str, value: Any, task: Optional[str] = None) -> Any:
    """A value of a spec file as ``birth train`` reads it from the command line: YAML 1.1 leaves
    ``1e-4`` a string, which a number key reads as the number; a string key keeps it as it is."""
    return override_value(value, all_keys(task)[key]) if isinstance(value, str) else value


def _seeds(raw: Any, where: str) -> tuple[int, int]:
    """(count, first) from ``seeds: N`` or ``seeds: {count: N, first: S}``."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"count", "first"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {min(unknown)!r}; known: count, first")
        raw = (raw.get("count", 1), raw.get("first", 0))
    elif not isinstance(raw, tuple):
        raw = (raw, 0)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in raw):
        raise ConfigError(f"{where}: expected a seed count or {{count: N, first: S}} (whole numbers), got {raw!r}")
    if raw[0] < 1:
        raise ConfigError(f"{where}: the count must be >= 1, got {raw[0]}")
    if raw[1] < 0:
        raise ConfigError(f"{where}: the first seed must be >= 0, got {raw[1]}")
    return raw


class _Loader(yaml.SafeLoader):
    """YAML's safe loader that says when a mapping gives one key twice (YAML keeps the last value)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                self.repeated.append(f"{key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path, warn) -> Any:
    """The spec file's YAML; each key given twice in one mapping is said in one warning line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the spec file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    loader = _Loader(text)
    loader.repeated = []
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    finally:
        loader.dispose()
    for where in loader.repeated:
        warn(f"birth: warning: {path}: key {where} is given twice in one mapping; its last value is used")
    return raw


def read_spec(path: str | Path, task: Optional[str] = None, warn: Log = plans.stderr) -> dict:
    """A spec file as ``{'preset', 'base', 'grid', 'zips', 'seeds'}`` (canonical keys); every problem
    is one ConfigError line naming the file and the section or key."""
    path = Path(path)
    raw = _load_yaml(path, warn)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with the sections {', '.join(SECTIONS)}")
    unknown = [s for s in raw if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    base = _flatten(raw.get("base") or {}, f"{path}: base")
    preset = base.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"{path}: base: preset: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    # the task first (the spec's own, else the command line's, else the preset's): its keys are then known
    task = next((v for k, v in base.items() if canonical(k) == "data_args.task"), None) or task \
        or PRESETS.get(preset, {}).get("data_args.task")
    import_plugins(next((v for k, v in base.items() if k == "plugins"), ""))
    base = {_key(k, f"{path}: base: ", task): v for k, v in base.items()}
    spec = {"preset": preset, "base": {k: _yaml_value(k, v, task) for k, v in base.items()}, "grid": {},
            "zips": [], "seeds": None, "task": task}
    if "grid" in raw:
        spec["grid"] = _lists(raw["grid"], f"{path}: grid", task)
    if "zip" in raw:
        groups = raw["zip"] if isinstance(raw["zip"], list) else [raw["zip"]]
        for i, group in enumerate(groups):
            where = f"{path}: zip" + (f"[{i}]" if isinstance(raw["zip"], list) else "")
            lists = _lists(group, where, task)
            lengths = {k: len(v) for k, v in lists.items()}
            if len(set(lengths.values())) > 1:
                shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
                raise ConfigError(f"{where}: lists of unequal lengths ({shown}); zip pairs them by position")
            swept = set(spec["grid"]).union(*spec["zips"]) & set(lists)
            if swept:
                raise ConfigError(f"{where}: {min(swept)} is swept in grid or in another zip group already; "
                                  "sweep each key in one place")
            spec["zips"].append(lists)
    if raw.get("seeds") is not None:
        spec["seeds"] = _seeds(raw["seeds"], f"{path}: seeds")
    return spec


def is_spec_file(word: str) -> bool:
    return "=" not in word and word.lower().endswith((".yaml", ".yml"))


def from_command_line(words: Sequence[str], preset: Optional[str] = None, seeds: Optional[int] = None,
                      first_seed: Optional[int] = None) -> Sweep:
    """The sweep of ``birth sweep [SPEC.yaml] [KEY=VALUE[,VALUE...] ...]``: the spec file first, the
    items over it (a single value sets a base key, several sweep it), then the options over both."""
    specs = [w for w in words if is_spec_file(w)]
    if len(specs) > 1:
        raise ConfigError(f"{specs[1]}: one spec file per sweep (got {', '.join(specs)})")
    items = [w for w in words if not is_spec_file(w)]
    # the task the items name, else the spec's, else the preset's: its data_args keys are then known
    named = {canonical(i.partition("=")[0].strip()): i.partition("=")[2] for i in items if "=" in i}
    import_plugins(named.get("plugins", ""))
    task = named.get("data_args.task")
    spec = read_spec(specs[0], task) if specs else {"preset": None, "base": {}, "grid": {}, "zips": [],
                                                     "seeds": None, "task": None}
    task = task or spec["task"] or PRESETS.get(preset or spec["preset"], {}).get("data_args.task")
    zipped = {k for group in spec["zips"] for k in group}
    base, grid = dict(spec["base"]), dict(spec["grid"])
    for key, values in parse_items(items, task).items():
        if key in grid or key in zipped:
            raise ConfigError(f"{key}: swept in {specs[0]} already; change it there")
        if len(values) == 1:
            base[key] = values[0]
        else:
            base.pop(key, None)
            grid[key] = values
    preset = preset or spec["preset"]
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    count, first = spec["seeds"] or (1, 0)
    count = count if seeds is None else seeds
    first = first if first_seed is None else first_seed
    if count < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {count}")
    if first < 0:
        raise ConfigError(f"--first-seed: must be >= 0, got {first}")
    origin = tuple(words) + (("--preset", preset) if preset and preset != spec["preset"] else ())
    return Sweep(preset, base, grid, tuple(spec["zips"]), count, first, origin)


# ---------------------------------------------------------------------------------------------
# The index, and the sweep's launch









def write_index(sweep: Sweep, out: Path, planned: Sequence[Planned]) -> Path:
    """OUT/sweep.json, atomically: the sweep's definition and every run, with the status its run
    directory holds now ('todo' before it starts; completed, interrupted, failed, ...)."""
    statuses = {}
    for p in planned:
        try:
            statuses[p.job.run_dir] = RunDir(p.job.run_dir).read_summary().get("status", "todo")
        except (OSError, ValueError):  # a summary being replaced, or damaged: the next write says
            statuses[p.job.run_dir] = "unknown"
    index = {"command": command_line(sweep, out), "preset": sweep.preset, "base": sweep.base,
             "swept": sweep.swept, "seeds": {"count": sweep.seeds, "first": sweep.first_seed},
             "made": time.strftime("%Y-%m-%d %H:%M"),
             "runs": [{"run_dir": str(Path(p.job.run_dir).relative_to(out)), "label": p.job.label, "seed": p.seed,
                       "values": p.values, "status": statuses.get(p.job.run_dir, "todo")} for p in planned]}
    with directory_lock(out, wait=True):  # one writer at a time for OUT's index
        atomic_write_json(out / INDEX, index)
    return out / INDEX


def read_index(out: str | Path) -> dict:
    """OUT/sweep.json; a one-line ConfigError when it is missing or unreadable."""

    path = Path(out) / INDEX
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the sweep index ({err})") from None


def command_line(sweep: Sweep, out: str | Path) -> str:
    """The command that makes (and, rerun, continues) this sweep into ``out``."""
    return plans.command_line(["sweep", *sweep.origin, "--seeds", sweep.seeds, "--first-seed", sweep.first_seed,
                               "--out", out])


def show_config(sweep: Sweep, out: str | Path, max_runs: int = plans.MAX_RUNS) -> str:
    """The resolved config of every run of the sweep (``--show-config``)."""
    return plans.show_config(plans.plan(sweep, out, max_runs=max_runs), "sweep")


def run_sweep(sweep: Sweep, out: str | Path, backend: Backend, *, dry_run: bool = False,
              log: Log = plans.stderr, max_runs: int = plans.MAX_RUNS) -> Report:
    """Plans (validating everything), then trains what is not complete and writes the index."""
    out = Path(out)
    check_folder(out)
    planned = plans.plan(sweep, out, log, max_runs)
    if dry_run:
        plans.launch(planned, backend, "sweep", out / "runs", dry_run=True, log=log)
        return Report(0)
    t0 = time.perf_counter()
    write_index(sweep, out, planned)
    try:
        results = plans.launch(planned, backend, "sweep", out / "runs", log=log)
    finally:  # stopped too: the index says which runs completed and which were interrupted
        index = write_index(sweep, out, planned)
    report = Report(plans.exit_code(results), results, index)
    log(f"birth: sweep: {report.trained} runs trained, {len(results) - report.trained} reused, "
        f"{len(report.failed)} failed in {time.perf_counter() - t0:.0f}s; index {index}")
    return report
