"""Weights & Biases output of a run (``wandb=offline|online``; optional extra ``birth[wandb]``).

Owns RUN/wandb/ and RUN/wandb_id. The W&B run has the id in RUN/wandb_id (drawn once per run
directory), the project ``$WANDB_PROJECT`` (default ``birth``) and the run directory's name; it holds
the resolved config, every finite number of each metrics.jsonl record (key = the metric key, step =
``iter``) and the PNG files of ``birth plot`` / ``birth train --plot`` (``figures/<name>``). Each
process that writes to it adds one fragment, RUN/wandb/offline-run-DATE-ID/ (``online``: run-DATE-ID/),
with its transaction log run-ID.wandb; ``wandb sync RUN/wandb/offline-run-*`` uploads them later,
in order, to the one W&B run.

Nothing phones home: no system metrics, machine or git metadata, code, requirements, console
capture or error reports (W&B's Sentry/OpenTelemetry would otherwise look up api.wandb.ai even
offline), in either mode; offline, nothing opens a network socket at all.

Exact resume: W&B cannot take a step back, and an offline fragment does not know the steps of the
fragments before it (it would log them again). So each process reads the steps already in
RUN/wandb/ and logs only records after the last of them: every step once, as in metrics.jsonl. The
lines a resumed run computes again after its checkpoint are equal but for ``elapsed`` (wall
seconds), which keeps the value logged first.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Optional

from birth.training.config import TrainConfig, to_dict
from birth.training.runs import RunDir, atomic_write_bytes

MIN_VERSION = (0, 31)  # the first with the JSON reader of a run's log (``wandb leet inspect --json``)
ID_FILE = "wandb_id"


def problem() -> Optional[str]:
    """Why ``wandb=...`` cannot run here (one line), or None when it can."""
    try:
        version = metadata.version("wandb")
    except metadata.PackageNotFoundError:
        return "needs the wandb package: pip install 'birth[wandb]'"
    if tuple(int(n) for n in re.findall(r"\d+", version)[:2]) < MIN_VERSION:
        return f"needs wandb>={'.'.join(map(str, MIN_VERSION))}, found {version}: pip install 'birth[wandb]'"
    return None


def _import_wandb(mode: str):
    # wandb reads this from the environment only (its service and its telemetry exporter, which
    # otherwise resolve api.wandb.ai at exit even offline); a user may opt back in, online only
    if mode == "offline":
        os.environ["WANDB_ERROR_REPORTING"] = "false"
    else:
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    import wandb
    return wandb


def _run_id(run_path: Path) -> str:
    """The run's W&B id, drawn on first use; random, not the directory name: two copies of one
    config trained in two places must not write into one W&B run."""
    path = run_path / ID_FILE
    if not path.exists():
        atomic_write_bytes(path, (uuid.uuid4().hex[:12] + "\n").encode())
    return path.read_text().strip()


def _open(cfg: TrainConfig, run_path: Path):
    """(wandb, the W&B run of ``run_path`` created or continued, the last step its earlier fragments hold)."""
    wandb = _import_wandb(cfg.wandb)
    last = max(logged_steps(run_path), default=-1)  # before this process adds its own fragment
    settings = wandb.Settings(
        mode=cfg.wandb, silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
        x_disable_machine_info=True, disable_git=True, disable_code=True, save_code=False,
        x_save_requirements=False)
    # create_new: a stack trains several runs in one process, each with its own W&B run
    run = wandb.init(dir=str(run_path), id=_run_id(run_path), resume="allow", reinit="create_new",
                     project=os.environ.get("WANDB_PROJECT") or "birth", name=run_path.resolve().name,
                     config=to_dict(cfg), settings=settings)
    return wandb, run, last


def _number(value) -> bool:
    """A finite int or float (not a bool): what metrics.jsonl holds as a number, not null."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class WandbLog:
    """Logs the records of one run; ``log(record)`` after each evaluation, ``close()`` at the end."""

    def __init__(self, cfg: TrainConfig, run_path: Path):
        _, self.run, self.last = _open(cfg, Path(run_path))

    def log(self, record: dict) -> None:
        step = int(record["iter"])
        if step <= self.last:
            return  # an earlier process logged this step (resumed from an earlier checkpoint)
        self.run.log({k: v for k, v in record.items() if _number(v)}, step=step)
        self.last = step

    def close(self) -> None:
        self.run.finish()


def open_run(cfg: TrainConfig, run_path: Path) -> Optional[WandbLog]:
    """A WandbLog when ``cfg.wandb`` is set, else None."""
    return WandbLog(cfg, Path(run_path)) if cfg.wandb else None


def log_figures(run_dir: str | Path, paths: list[Path]) -> None:
    """Adds the PNG files ``paths`` to the W&B run of ``run_dir`` when its config sets ``wandb``, one
    history step after the last one logged; a note on stderr instead when wandb cannot run here."""
    run_dir = Path(run_dir)
    cfg = RunDir(run_dir).read_config()
    pngs = [Path(p) for p in paths if str(p).endswith(".png")]
    if not cfg.wandb or not pngs:
        return
    if problem():
        print(f"birth: note: figures not logged to W&B: wandb={cfg.wandb} {problem()}", file=sys.stderr)
        return
    wandb, run, last = _open(cfg, run_dir)
    try:
        run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in pngs}, step=max(last + 1, run.step))
    finally:
        run.finish()


def _records(log: Path) -> list[dict]:
    """Every record of one transaction log, read by wandb's own reader: the program behind
    ``wandb leet inspect --json``, called directly (the CLI would add a second of start-up)."""
    from wandb.util import get_core_path
    argv = [get_core_path(), "leet", "inspect", "--no-observability", "--json", "--run-file", str(log),
            str(log.parent.parent)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{log}: wandb cannot read it: {out.stderr.strip() or out.stdout.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def read_fragments(run_path: str | Path) -> list[dict]:
    """Each fragment under RUN/wandb/ in the order written: ``dir``, ``id`` (the W&B run's), ``config``
    (as logged, less W&B's own ``_wandb``) and ``history`` (the logged rows, each with W&B's
    ``_step``, ``_runtime`` and ``_timestamp``; a figure as its ``figures/NAME.path`` etc.)."""
    fragments = []
    for log in sorted(Path(run_path).glob("wandb/*run-*/run-*.wandb")):
        records = _records(log)
        config: dict = {}
        for r in records:
            if r["type"] in ("run", "config"):
                config.update((r["run"]["config"] if r["type"] == "run" else r["config"]).get("update", {}))
        config.pop("_wandb", None)
        run_id = next(r["run"]["run_id"] for r in records if r["type"] == "run")
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        fragments.append({"dir": log.parent, "id": run_id, "config": config, "history": history})
    # one writer at a time: a later fragment's rows are later; one without rows can go anywhere
    return sorted(fragments, key=lambda f: f["history"][0]["_timestamp"] if f["history"] else 0.0)


def read_history(run_path: str | Path) -> list[dict]:
    """The history rows of the W&B run of ``run_path``, all fragments in order."""
    return [row for f in read_fragments(run_path) for row in f["history"]]


def logged_steps(run_path: Path) -> list[int]:
    """The history steps already in RUN/wandb/ (none when there is no W&B output yet)."""
    if not (run_path / "wandb").is_dir():
        return []
    return [row["_step"] for row in read_history(run_path)]
