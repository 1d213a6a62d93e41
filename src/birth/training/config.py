"""Run configuration: dataclasses with documented defaults, presets, dot-list overrides that accept
the official code's argument names verbatim, and validation of the whole config before any work.

Group names follow the official scripts (``data_args``, ``model_args``, ``optim_args``); top-level
keys are the official ``TrainerArgs``. Defaults are those of ``ihead_basic_main.py`` except where a
field's help says otherwise.
"""
from __future__ import annotations

import copy
import functools
import importlib
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from birth import tasks
from birth.fields import documented as _f
from birth.model.args import ModelArgs
from birth.tasks.base import TaskArgs
from birth.tasks.triggers.task import DataArgs
from birth.training.presets import PRESETS

__all__ = ["ConfigError", "DataArgs", "ModelArgs", "OptimArgs", "TrainConfig", "TaskArgs", "PRESETS", "build_config",
           "parse_overrides", "to_dict", "from_dict", "all_keys", "dump_yaml", "load_yaml", "apply"]


class ConfigError(ValueError):
    """A config problem, reported as one line that names the offending key."""


@dataclass
class OptimArgs:
    learning_rate: float = _f(0.2, "learning rate (constant)")
    weight_decay: float = _f(1e-4, "weight decay")
    momentum: float = _f(0.9, "SGD momentum")
    batch_size: int = _f(512, "fresh sequences per step")
    use_sgd: bool = _f(True, "SGD with momentum (else AdamW)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2 (basic script 0.95, full script 0.99)")
    eps: float = _f(1e-8, "AdamW epsilon")


@dataclass
class TrainConfig:
    optim_args: OptimArgs = field(default_factory=OptimArgs)
    data_args: TaskArgs = field(default_factory=DataArgs)  # the task's own dataclass (data_args.task)
    model_args: ModelArgs = field(default_factory=ModelArgs)
    max_iters: int = _f(1000, "training steps (official default: run forever)")
    eval_delta: int = _f(5, "evaluate every this many steps")
    log_norms: bool = _f(False, "also log per-layer norms of W_K, W_V, W_O")
    log_probes: bool = _f(False, "accepted for compatibility: memory probes are always logged")
    freeze_until: str = _f("", "freeze schedule 'STEP:NAME,...' (official names or W_K1/W_K2/W_O2/...)")
    interventions: str = _f("", "interventions during training, ';'-separated, each KIND:ARGS[@START[-END]] "
                            "(layers and heads from 0): clamp:L[.H]:previous|induction|uniform|self[:S] mixes a "
                            "head's attention towards a pattern at strength S; ablate:L[.H]:zero|mean; "
                            "set:W_K1|W_K2|W_O2:ideal[:GAIN] (the ideal memory) or set:MATRIX:RUN[:STEP] (graft); "
                            "see docs/interventions.md")
    loss_head_only: bool = _f(True, "loss on in-context targets only (outs >= 2)")
    metrics: str = _f("", "extra metrics at every evaluation, comma-separated: registered names or MODULE:ATTR, each "
                      "a function fn(ev) -> {name: value} whose values join metrics.jsonl (docs/api.md)")
    plugins: str = _f("", "modules to import first, in every process (workers, Slurm jobs), comma-separated: what "
                      "they register (tasks, metrics, intervention kinds) is then known by name")
    num_data_workers: int = _f(60, "accepted for compatibility: sampling is vectorised, no workers")
    seed: int = _f(42, "data seed: batch i is a pure function of (seed, i)")
    init_seed: int = _f(0, "model initialisation seed")
    eval_seed: int = _f(0, "seed of the fixed evaluation batches")
    eval_batch_size: int = _f(512, "sequences in each fixed evaluation batch")
    eval_fixed_batch: bool = _f(True, "also evaluate a fixed batch of the training distribution (the eval_* "
                                "metrics; the official script evaluates the training batch and the OOD batch only)")
    device: str = _f("auto", "auto (CUDA when present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = _f("float32", "float32, or bf16: the training step under bfloat16 autocast (CUDA, or a CPU "
                        "with bf16 support); weights, evaluation and probes stay float32", choices=("float32", "bf16"))
    checkpoint_every: int = _f(0, "checkpoint every this many steps (0: only at the end)")
    keep_checkpoints: int = _f(2, "how many of the latest periodic checkpoints to keep")
    checkpoint_steps: str = _f("", "extra steps to checkpoint and keep for analysis, e.g. '100,300', or 'log:N' for "
                               "N log-spaced steps from 1 to max_iters (dense early, around transitions); both "
                               "combine: 'log:40,500'")
    save_dir: Optional[str] = _f(None, "run directory (official name; --out takes precedence)")
    root_dir: str = _f("", "prefix of save_dir (official name)")
    tensorboard: bool = _f(False, "also write the metrics and attention images to RUN/tensorboard/ "
                                  "(pip install 'birth[tensorboard]')")
    wandb: str = _f("", "also log the config, metrics and figures to Weights & Biases in RUN/wandb/: offline (nothing "
                    "leaves the machine; wandb sync RUN/wandb/offline-run-* uploads later) or online; '' is off "
                    "(pip install 'birth[wandb]')", choices=("", "offline", "online"))


def seed_overrides(index: int) -> dict:
    """Seed ``index`` sets the data stream (42 + index, the official default 42 for seed 0), the
    initialisation and the fixed evaluation batches, all three."""
    return {"seed": 42 + index, "init_seed": index, "eval_seed": index}


INT_LIMIT = 2 ** 63  # every integer must fit torch's int64
# Decimal numbers with an exponent, which YAML 1.1 (unlike OmegaConf) leaves as strings: 1e-4, 5E3.
FLOAT_RE = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+")

GROUPS = {"data_args": DataArgs, "model_args": ModelArgs, "optim_args": OptimArgs}

# Shorter names people type, mapped to the canonical (official) ones.
ALIASES = {
    "data.": "data_args.",
    "model.": "model_args.",
    "optim.": "optim_args.",
    "optim_args.lr": "optim_args.learning_rate",
    "optim_args.wd": "optim_args.weight_decay",
    "optim_args.batch": "optim_args.batch_size",
    "steps": "max_iters",
    # official TrainerArgs flags that describe the paper's task: they live in its data_args
    "bigram_outs_train": "data_args.bigram_outs_train",
    "bigram_outs_test": "data_args.bigram_outs_test",
}

def all_keys(task: Optional[str] = None) -> dict[str, dataclasses.Field]:
    """Every settable dotted key with its field: of a config of ``task``, or (None) of any task
    (for --help, parsing and suggestions)."""
    if task is not None:
        return dict(_keys_of(task, tasks.args_class(task)))
    return _keys(None)


@functools.lru_cache(maxsize=64)  # per task and its data-arguments class: a sweep reads them for every run
def _keys_of(task: str, args_class: type) -> dict[str, dataclasses.Field]:
    return _keys(task)


def _keys(task: Optional[str]) -> dict[str, dataclasses.Field]:
    keys: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "data_args":
            classes = [tasks.args_class(task)] if task else [tasks.args_class(n) for n in tasks.names()]
            for cls in classes:
                for g in dataclasses.fields(cls):
                    keys.setdefault(f"data_args.{g.name}", g)
        elif f.name in GROUPS:
            for g in dataclasses.fields(GROUPS[f.name]):
                keys[f"{f.name}.{g.name}"] = g
        else:
            keys[f.name] = f
    return keys


def owners(key: str) -> list[str]:
    """The tasks whose data_args have ``key`` (a dotted ``data_args.*`` key)."""
    name = key.partition(".")[2]
    return [t for t in tasks.names() if name in {f.name for f in dataclasses.fields(tasks.args_class(t))}]


@functools.lru_cache(maxsize=4096)  # a pure function of the typed name; a sweep reads the same keys again and again
def canonical(key: str) -> str:
    for short, full in ALIASES.items():
        if short.endswith(".") and key.startswith(short):
            key = full + key[len(short):]
        elif key == short:
            key = full
    return ALIASES.get(key, key)


def field_type(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return {"int": int, "float": float, "bool": bool, "str": str, "Optional[str]": str}[t]


def _coerce(key: str, raw: Any, f: dataclasses.Field) -> Any:
    kind = field_type(f)
    if raw is None and f.default is None:
        return None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ConfigError(f"{key}: expected true or false, got {raw!r}")
    if kind is int:
        # isfinite first: int(inf) and int(nan) raise, and 1e400 parses as inf
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw != int(raw):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}")
        if not -INT_LIMIT <= int(raw) < INT_LIMIT:
            raise ConfigError(f"{key}: expected an integer in [-2**63, 2**63), got {int(raw)}")
        return int(raw)
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ConfigError(f"{key}: expected a finite number, got {raw!r}")
        return float(raw)
    value = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        shown = ", ".join(repr(c) if c == "" else c for c in choices)  # '' (off) shown as such
        raise ConfigError(f"{key}: expected one of {shown}, got {value!r}")
    return value


def _parse_value(text: str) -> Any:
    """YAML scalar parsing as OmegaConf's dot-lists do: 1e-4, True, null, 0.03, strings."""
    if FLOAT_RE.fullmatch(text.strip()):
        return float(text.strip().replace("_", ""))  # YAML 1.1 reads 1e-4 as a string; OmegaConf does not
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except Exception:  # a bad scalar or tag (e.g. '!!int x') raises ValueError etc.: keep the text
        return text
    if isinstance(value, str) or value is None or isinstance(value, (bool, int, float)):
        return value
    return text  # lists/maps are not config values here: keep the text, type checks will tell


def override_value(text: str, f: dataclasses.Field) -> Any:
    """String keys take the text verbatim (YAML would turn '1:30' into 90 and '0x10' into 16)."""
    if field_type(f) is str and text.strip() not in ("null", "~", "Null", "NULL"):
        return text
    return _parse_value(text)


def parse_overrides(items: list[str], task: Optional[str] = None) -> dict[str, Any]:
    """``['data_args.k=5', 'model.dim=256']`` -> canonical dotted keys with parsed values.

    The ``data_args.*`` keys are those of the task the items name (``data_args.task=...``, resolved
    first, ``plugins`` imported before it), else of ``task``, else of any registered task. Raises
    ConfigError (one line, naming the key) for malformed items and unknown keys.
    """
    pairs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item!r}: overrides are KEY=VALUE (e.g. data_args.k=5)")
        typed, _, text = item.partition("=")
        pairs.append((typed.strip(), text, item))
    named = {canonical(typed.lstrip("+")): text for typed, text, _ in pairs}
    import_plugins(named.get("plugins", ""))
    task = named.get("data_args.task", task)
    if task is not None:
        task_args(task, "")  # an unknown task: its one line, before its keys are read
    keys = all_keys(task)
    out: dict[str, Any] = {}
    for typed, text, item in pairs:
        key = known_key(typed, task, item)
        out[key] = override_value(text, keys[key])
    return out


def known_key(typed: str, task: Optional[str] = None, item: Optional[str] = None) -> str:
    """The canonical name of a key as typed (``optim.lr`` -> ``optim_args.learning_rate``), its
    ``data_args.*`` those of ``task`` when given (else of any registered task); one-line
    ConfigError for an unknown task or key, with the closest key."""
    if task is not None:
        task_args(task, "")  # an unknown task: its one line, before its keys are read
    key = canonical(typed.strip().lstrip("+"))
    if key not in all_keys(task):
        suffix = f"; did you mean {hint}?" if (hint := suggest(key, task)) else "; see birth train --help"
        typed = typed.strip()
        shown = typed if typed and typed.isprintable() else repr(item or typed)  # the error stays one readable line
        of = f" of task {task}" if task is not None and key.startswith("data_args.") else ""
        raise ConfigError(f"{shown}: unknown key{of}{suffix}")
    return key


def import_plugins(spec: str) -> None:
    """Imports the modules of a ``plugins`` value (their registrations become known); one-line
    ConfigError naming a module that cannot be imported."""
    for module in filter(None, (m.strip() for m in str(spec or "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"plugins: cannot import {module!r} ({err})") from None


def suggest(key: str, task: Optional[str] = None) -> str:
    """The key closest to a misspelt canonical ``key``, aliases included ('optim_args.lrr' ->
    'optim_args.lr (optim_args.learning_rate)'), or '' when nothing is close."""
    names = {k: k for k in all_keys(task)}
    names.update({_canonical_prefix(short): full for short, full in ALIASES.items() if not short.endswith(".")})
    hint = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    if not hint:
        return ""
    return hint[0] if names[hint[0]] == hint[0] else f"{hint[0]} ({names[hint[0]]})"


def _canonical_prefix(key: str) -> str:
    """An alias written with its group's full name (optim_args.lr stays; a bare alias such as steps too)."""
    for short, full in ALIASES.items():
        if short.endswith(".") and key.startswith(short):
            return full + key[len(short):]
    return key


def build_config(preset: str | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Defaults, then a preset, then overrides (type-checked; ``validation.validate`` checks the rest)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    merged: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    task = merged.get("data_args.task")
    merged.update(parse_overrides(overrides, task) if isinstance(overrides, list) else dict(overrides or {}))
    return _assign(TrainConfig(), merged, "")  # a fresh config: nothing to copy


def apply(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with dotted ``values`` set (type-checked)."""
    return _assign(copy.deepcopy(cfg), values, "")


def to_dict(cfg: TrainConfig) -> dict:
    """The config as nested plain data (``dataclasses.asdict``, without its deep copies: every value
    is a scalar)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = ({g.name: getattr(value, g.name) for g in dataclasses.fields(value)}
                       if dataclasses.is_dataclass(value) else value)
    return out


def flat_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as dotted keys: ``{'data_args.k': 3, 'max_iters': 1000, ...}``."""
    flat = {}
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            flat.update({f"{k}.{gk}": gv for gk, gv in v.items()})
        else:
            flat[k] = v
    return flat


def from_dict(d: dict) -> TrainConfig:
    """Rebuilds a config from ``to_dict``'s nested form (e.g. a saved config.yaml)."""
    flat = {}
    for k, v in d.items():
        if k in GROUPS and isinstance(v, dict):
            flat.update({f"{k}.{gk}": gv for gk, gv in v.items()})
        else:
            flat[k] = v
    return _assign(TrainConfig(), flat, " in saved config")


def _assign(cfg: TrainConfig, flat: dict[str, Any], where: str) -> TrainConfig:
    """Sets dotted keys of ``cfg`` in place, each value type-checked against its field; a
    ``data_args.task`` among them first gives ``cfg`` that task's data arguments."""
    flat = {canonical(k): v for k, v in flat.items()}
    import_plugins(flat.get("plugins", ""))
    if "data_args.task" in flat:
        _set_task(cfg, flat["data_args.task"], where)
    keys = all_keys(cfg.data_args.task)
    for key, raw in flat.items():
        if key not in keys:
            tasks_with = owners(key) if key.startswith("data_args.") else []
            if tasks_with:
                raise ConfigError(f"{key}: a key of task {' and '.join(tasks_with)}, not of data_args.task="
                                  f"{cfg.data_args.task}{where}")
            raise ConfigError(f"{key}: unknown key{where}")
        *groups, name = key.split(".")
        target = cfg
        for g in groups:
            target = getattr(target, g)
        setattr(target, name, _coerce(key, raw, keys[key]))
    return cfg


def _set_task(cfg: TrainConfig, raw: Any, where: str) -> None:
    """Replaces ``cfg.data_args`` by the data arguments of task ``raw``, keeping the keys every
    task has (sequence length)."""
    cls = task_args(raw, where)
    if type(cfg.data_args) is not cls:
        shared = {f.name: getattr(cfg.data_args, f.name) for f in dataclasses.fields(TaskArgs)}
        cfg.data_args = cls(**shared)
    cfg.data_args.task = raw


def task_args(raw: Any, where: str) -> type:
    """The data-arguments class of task ``raw``; one-line ConfigError for a name that is none."""
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"data_args.task: expected a task name, got {raw!r}{where}")
    try:
        return tasks.args_class(raw)
    except tasks.UnknownTask as err:
        raise ConfigError(f"data_args.task: {err}{where}") from None


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def load_yaml(text: str) -> TrainConfig:
    return from_dict(yaml.safe_load(text) or {})

