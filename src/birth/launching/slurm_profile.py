"""What each Slurm job asks for: a profile (YAML file) and command-line options over it.

    # gpu.yaml
    partition: gpu
    time: "8:00:00"        # minutes, or [D-]HH:MM[:SS]
    cpus: 8                # CPUs per job (= torch threads of the run)
    gpus: 1                # GPUs per job
    mem: 32G
    sbatch: {account: my-lab, qos: normal}   # any other sbatch option
    setup: ["module load cuda"]              # shell lines run before the job
    requeues: 3            # how often a timed-out job requeues itself from its checkpoint

Every bad value is a ``ConfigError`` of one line that names the key (``gpu.yaml: time: ...``)
or the option (``--time: ...``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from birth.training.config import ConfigError

# sbatch options that birth sets itself, or that have their own key
RESERVED = {"job-name": "set by birth (one name per run)", "output": "logs go to OUT/slurm/logs",
            "error": "logs go to OUT/slurm/logs", "signal": "set by birth (checkpoint before the time limit)",
            "open-mode": "set by birth", "array": "birth submits one job per run", "wrap": "birth submits the job",
            "partition": "use partition", "time": "use time", "cpus-per-task": "use cpus",
            "gpus-per-node": "use gpus", "mem": "use mem"}


@dataclass
class SlurmProfile:
    """The resources of every job of one reproduction."""

    partition: Optional[str] = None
    time: int = 60                    # minutes
    cpus: int = 1
    gpus: int = 0
    mem: Optional[str] = None         # sbatch --mem syntax: 16G, 4000M, ...
    sbatch: dict = field(default_factory=dict)
    setup: list = field(default_factory=list)
    requeues: int = 3

    def sbatch_parameters(self) -> dict:
        """The submitit ``SlurmExecutor.update_parameters`` arguments, job name excluded."""
        extra = dict(self.sbatch)
        if self.mem:
            extra["mem"] = self.mem
        params: dict[str, Any] = {"time": self.time, "cpus_per_task": self.cpus, "additional_parameters": extra}
        if self.partition:
            params["partition"] = self.partition
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.setup:
            params["setup"] = list(self.setup)
        return params


KEYS = [f.name for f in fields(SlurmProfile)]


def parse_minutes(value: Any, where: str) -> int:
    """Slurm's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> whole minutes."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m or isinstance(value, bool):
        raise ConfigError(f"{where}: expected minutes or [D-]HH:MM[:SS], got {value!r}")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:   # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:   # MM:SS
        seconds = a * 60 + b
    else:                 # minutes
        seconds = a * 60
    if seconds <= 0:
        raise ConfigError(f"{where}: must be more than 0, got {value!r}")
    return math.ceil(seconds / 60)


def _count(value: Any, where: str, least: int) -> int:
    if isinstance(value, bool) or not re.fullmatch(r"\d+", str(value).strip()) or int(value) < least:
        raise ConfigError(f"{where}: expected a whole number >= {least}, got {value!r}")
    return int(value)


def _mem(value: Any, where: str) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"[1-9]\d*[KMGT]?", text, flags=re.IGNORECASE):
        raise ConfigError(f"{where}: expected sbatch --mem syntax such as 16G or 4000M, got {value!r}")
    return text.upper()


def _name(value: Any, where: str) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.,-]+", text):
        raise ConfigError(f"{where}: expected a partition name (letters, digits, _ . , -), got {value!r}")
    return text


def _sbatch(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of sbatch options, e.g. {{account: my-lab}}, got {value!r}")
    out = {}
    for key, val in value.items():
        flag = str(key).strip().lstrip("-").replace("_", "-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", flag):
            raise ConfigError(f"{where}: {key!r} is not an sbatch option name")
        if flag in RESERVED:
            raise ConfigError(f"{where}: {flag}: {RESERVED[flag]}")
        if val is None or isinstance(val, (dict, list)):
            raise ConfigError(f"{where}: {flag}: expected a value, got {val!r}")
        out[flag] = True if val is True else str(val)
    return out


def _setup(value: Any, where: str) -> list:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of shell lines, got {value!r}")
    return list(value)


CHECKS = {"partition": _name, "time": parse_minutes, "cpus": lambda v, w: _count(v, w, 1),
          "gpus": lambda v, w: _count(v, w, 0), "mem": _mem, "sbatch": _sbatch, "setup": _setup,
          "requeues": lambda v, w: _count(v, w, 0)}


def load_profile(path: Optional[str | Path], options: Optional[dict] = None) -> SlurmProfile:
    """The profile in ``path`` (if any), then ``options`` (key -> value, None = not given) over it."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read(Path(path)))
    for key, val in (options or {}).items():
        if val is None:
            continue
        where = f"--{key}"
        if key == "sbatch":  # ["account=x", ...] from the command line: merged into the profile's
            val = {**values.get("sbatch", {}), **_sbatch(_pairs(val, where), where)}
        values[key] = CHECKS[key](val, where)
    return SlurmProfile(**values)


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"--slurm-profile: cannot read {path} ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--slurm-profile: {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--slurm-profile: {path} must hold a mapping of {', '.join(KEYS)}")
    values = {}
    for key, val in raw.items():
        if key not in CHECKS:
            raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(KEYS)}")
        values[key] = CHECKS[key](val, f"{path}: {key}")
    return values


def _pairs(items: list, where: str) -> dict:
    out = {}
    for item in items:
        key, sep, val = str(item).partition("=")
        if not key.strip():
            raise ConfigError(f"{where}: expected KEY=VALUE or a bare flag (e.g. account=my-lab), got {item!r}")
        out[key.strip()] = val.strip() if sep else True
    return out


OPTIONS = ("partition", "time", "cpus", "gpus", "mem", "sbatch")


def add_arguments(parser) -> None:
    """``--slurm-profile`` and the options that override it, for ``birth reproduce --backend slurm``."""
    g = parser.add_argument_group("with --backend slurm (each option overrides the profile's key of that name)")
    g.add_argument("--slurm-profile", metavar="FILE",
                   help="YAML profile: partition, time, cpus, gpus, mem, sbatch, setup, requeues (see docs/cluster.md)")
    g.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    g.add_argument("--time", help="time limit per job: minutes or [D-]HH:MM[:SS] (default 60); a job checkpoints "
                                  "and requeues itself before it")
    g.add_argument("--cpus", help="CPUs per job, also the run's torch threads (default 1)")
    g.add_argument("--gpus", help="GPUs per job (default 0)")
    g.add_argument("--mem", help="memory per job in sbatch syntax, e.g. 16G (default: the partition's)")
    g.add_argument("--sbatch", action="append", metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --sbatch account=my-lab --sbatch qos=high (repeatable)")


def options_from_args(args) -> dict:
    """The Slurm options given on the command line (None where not given)."""
    return {key: getattr(args, key, None) for key in OPTIONS}


def reject_slurm_options(args) -> None:
    """The local backend takes none of the Slurm options: a one-line error naming the first one given."""
    given = [f"--{k}" for k, v in options_from_args(args).items() if v is not None]
    if getattr(args, "slurm_profile", None) is not None:
        given.insert(0, "--slurm-profile")
    if given:
        raise ConfigError(f"{given[0]}: only with --backend slurm")
