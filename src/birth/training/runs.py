"""The run directory: resolved config, metrics log, checkpoints and summary.

    RUN/config.yaml        resolved config (every key)
    RUN/task.json          vocabulary, trigger set and the task's Bayes floors
    RUN/metrics.jsonl      one JSON object per evaluation, flushed as written
    RUN/loss_by_position.bin   float32 rows (iteration, the evaluation batch's loss at each position)
    RUN/checkpoints/step_XXXXXXXX.pt   model, optimizer, step, RNG states, config, metrics so far
    RUN/summary.json       status (running/completed/interrupted/diverged/failed), final metrics

Every file but metrics.jsonl is written atomically (temp file + rename), and metrics.jsonl one whole
line at a time: a full disk (ENOSPC, EDQUOT, EFBIG) raises ``NoSpace`` naming the file, and leaves
every file either as it was or whole. Checkpoints are loaded with ``weights_only=True``: loading never
executes pickled code.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch
import yaml

from birth.training.config import ConfigError, TrainConfig, dump_yaml, load_yaml
from birth.training.exits import NoWholeCheckpoint, as_no_space

CKPT_RE = re.compile(r"step_(\d{8})\.pt$")


def _clean(value: Any) -> Any:
    """NaN/inf become null so that every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _temp_path(path: Path) -> Path:
    """A fresh name beside ``path``. Not mkstemp: its files are 0600, unreadable to the rest of a team."""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; once written it is synced to disk and renamed
    over ``path``, so that ``path`` is always either the old file or the whole new one."""
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        failure = as_no_space(path, err)
        if failure is err:
            raise
        raise failure from err


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_clean) + "\n").encode())


class AppendLog:
    """A file written by whole appended records, each flushed as written; keeps what the file holds
    in memory, so that a checkpoint can copy it without reading the file back."""

    def __init__(self, path: Path, truncate_to: int = 0):
        self.path = Path(path)
        # unbuffered: a failed write leaves nothing pending that a later flush could add
        self.file = open(path, "r+b" if path.exists() else "w+b", buffering=0)
        self.content = bytearray(self.file.read(truncate_to))
        self.file.truncate(truncate_to)  # drops records written after the checkpoint we resume from
        self.file.seek(truncate_to)

    @property
    def offset(self) -> int:
        """Size of the file so far, in bytes."""
        return len(self.content)

    def write_bytes(self, record: bytes) -> None:
        data = memoryview(record)
        try:
            while data:  # a write of a whole record; a short write (disk nearly full) continues it
                data = data[self.file.write(data):]
        except OSError as err:
            self.file.truncate(len(self.content))  # no half record stays behind
            self.file.seek(len(self.content))
            raise as_no_space(self.path, err) from err
        self.content += record

    def sync(self) -> None:
        try:
            os.fsync(self.file.fileno())
        except OSError as err:
            raise as_no_space(self.path, err) from err

    def close(self) -> None:
        self.file.close()


class MetricsWriter(AppendLog):
    """metrics.jsonl: one JSON line per evaluation."""

    def write(self, record: dict) -> None:
        self.write_bytes((json.dumps({k: _clean(v) for k, v in record.items()}) + "\n").encode())


class VectorWriter(AppendLog):
    """A float32 table of one row per evaluation: the iteration, then one value per position."""

    def write(self, step: int, values) -> None:
        import numpy as np
        self.write_bytes(np.concatenate([[step], np.asarray(values, dtype=np.float32)]).astype(np.float32).tobytes())


class RunDir:
    """Paths and I/O of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.task_path = self.path / "task.json"
        self.positions_path = self.path / "loss_by_position.bin"
        self.ckpt_dir = self.path / "checkpoints"

    def holds_run(self) -> bool:
        return self.config_path.exists()

    def remove_temporaries(self) -> None:
        """Deletes the temporary files of interrupted atomic writes (call it holding the run's lock:
        nobody else is writing then)."""
        for folder in (self.path, self.ckpt_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Raises ConfigError, before anything is created, when the directory cannot be made or written."""
        existing = next(p for p in (self.path.absolute(), *self.path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"--out: {existing} is a file, not a directory, so {self.path} cannot be a run directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--out: {existing} is not writable, so {self.path} cannot be created or written")

    # config, task, summary
    def write_config(self, cfg: TrainConfig) -> None:
        atomic_write_bytes(self.config_path, dump_yaml(cfg).encode())

    def read_config(self) -> TrainConfig:
        """The run's config; ConfigError (one line) when config.yaml is unreadable or malformed."""
        try:
            return load_yaml(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError, TypeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"{self.config_path}: cannot read the run's config: {first}") from None

    def write_task(self, info: dict) -> None:
        atomic_write_json(self.task_path, info)

    def read_task(self) -> dict:
        return json.loads(self.task_path.read_text())

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict:
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}

    # metrics
    def read_metrics(self) -> list[dict]:
        """Every valid line of metrics.jsonl. A torn last line is ignored (a kill can leave one); a
        damaged line before it is skipped and reported on stderr, with the lines after it kept."""
        if not self.metrics_path.exists():
            return []
        rows, damaged = [], []
        lines = self.metrics_path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
                rows.append(row)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                if any(rest.strip() for rest in lines[number:]):
                    damaged.append(number)
        if damaged:
            shown = ", ".join(map(str, damaged[:5])) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
            print(f"birth: warning: {self.metrics_path}: line {shown} damaged and skipped; "
                  f"{len(rows)} lines read", file=sys.stderr)
        return rows

    def read_positions(self, length: int):
        """(iterations (n,), loss at each position (n, T)) from loss_by_position.bin: the evaluation
        batch's loss at each of the T = ``length`` positions, one row per evaluation."""
        import numpy as np
        rows = (np.fromfile(self.positions_path, dtype=np.float32) if self.positions_path.exists()
                else np.zeros(0, np.float32))
        rows = rows[: len(rows) // (length + 1) * (length + 1)].reshape(-1, length + 1)
        return rows[:, 0].astype(int), rows[:, 1:]

    # checkpoints
    def checkpoints(self) -> list[tuple[int, Path]]:
        if not self.ckpt_dir.exists():
            return []
        found = [(int(m.group(1)), p) for p in self.ckpt_dir.iterdir() if (m := CKPT_RE.search(p.name))]
        return sorted(found)

    def latest_checkpoint(self) -> Optional[Path]:
        ckpts = self.checkpoints()
        return ckpts[-1][1] if ckpts else None

    def save_checkpoint(self, state: dict, step: int, keep_last: int, keep_steps: Iterable[int] = ()) -> Path:
        """Writes ``state`` atomically as step_<step>.pt, then prunes older periodic checkpoints."""
        path = self.ckpt_dir / f"step_{step:08d}.pt"
        buffer = io.BytesIO()  # serialised in memory: a full disk then raises an OSError we can name
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getbuffer())
        keep = set(keep_steps) | {s for s, _ in self.checkpoints()[-max(keep_last, 1):]}
        for s, p in self.checkpoints():
            if s not in keep:
                p.unlink(missing_ok=True)
        return path

    @staticmethod
    def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
        return torch.load(path, map_location=device, weights_only=True)

    def try_checkpoint(self, path: Path, device: str | torch.device = "cpu") -> tuple[Optional[dict], str]:
        """(state, '') of a whole checkpoint, or (None, why it is not): damaged, cut short, or not one."""
        try:
            state = self.load_checkpoint(path, device)
        except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
            return None, damage_reason(err)
        if not isinstance(state, dict) or not {"step", "model"} <= set(state) or not isinstance(state["model"], dict):
            return None, "not a birth checkpoint (keys missing)"
        return state, ""

    def whole_checkpoints(self, device: str | torch.device = "cpu", steps: Optional[Iterable[int]] = None,
                          warn=lambda line: print(line, file=sys.stderr)) -> list[tuple[int, dict]]:
        """(step, state) of every checkpoint (or those at ``steps``) that loads whole, in order; the
        damaged ones named in one warning line; NoWholeCheckpoint (one line) when none does."""
        wanted = None if steps is None else set(steps)
        found, damaged = [], []
        for step, path in self.checkpoints():
            if wanted is not None and step not in wanted:
                continue
            state, why = self.try_checkpoint(path, device)
            if state is None:
                damaged.append(f"{path.name} ({why})")
            else:
                found.append((step, state))
        if damaged and found:
            warn(f"birth: warning: {self.path}: damaged checkpoint {'; '.join(damaged)}; read the others")
        if damaged and not found:
            raise NoWholeCheckpoint(f"{self.path}: no whole checkpoint to read (damaged: {'; '.join(damaged)})")
        return found

    def newest_whole_checkpoint(self, device: str | torch.device = "cpu", step: Optional[int] = None,
                                warn=lambda line: print(line, file=sys.stderr)) -> tuple[int, dict]:
        """(step, state) of the newest checkpoint that loads whole (or the one at ``step``), each
        damaged newer one named in one warning line; NoWholeCheckpoint (one line) when there is none."""
        candidates = [(s, p) for s, p in self.checkpoints() if step is None or s == step]
        if not candidates:
            saved = ", ".join(str(s) for s, _ in self.checkpoints()) or "none"
            at = "" if step is None else f" at step {step}"
            raise NoWholeCheckpoint(f"{self.path}: no checkpoint{at} to read (saved: {saved})")
        damaged = []
        for s, path in reversed(candidates):
            state, why = self.try_checkpoint(path, device)
            if state is None:
                damaged.append(f"{path.name} ({why})")
                continue
            if damaged:
                warn(f"birth: warning: {self.path}: damaged checkpoint {'; '.join(damaged)}; reading {path.name}")
            return s, state
        raise NoWholeCheckpoint(f"{self.path}: no whole checkpoint to read (damaged: {'; '.join(damaged)})")


def damage_reason(err: Exception) -> str:
    """Why a checkpoint did not load, in one short line."""
    # torch's own weights-only message is many lines of advice to load unsafely: not ours to give
    if "Weights only" in str(err):
        return "damaged, or holds objects that weights-only loading refuses"
    return (str(err).splitlines() or [type(err).__name__])[0][:160]


def steps_of(run_dir: str | Path, spec: Optional[str]) -> Optional[list[int]]:
    """``--steps``: None (the newest whole checkpoint), ``all`` or comma-separated steps."""
    if not spec:
        return None
    if spec == "all":
        return [s for s, _ in RunDir(run_dir).checkpoints()]
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--steps: {spec!r} is not all or a comma-separated list of steps") from None
