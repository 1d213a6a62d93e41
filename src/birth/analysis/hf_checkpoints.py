"""Checkpoints in the Hugging Face convention (``birth export hf RUN --out DIR``): one folder per step,
each with a ``config.json`` and a ``model.safetensors`` that the ``safetensors`` library loads alone,
as Pythia, timaeus and SmolLM publish their training checkpoints (the `hf` extra).

    DIR/config.json                the run: its whole birth config, vocabulary, the steps exported
    DIR/step-<N>/config.json       the same, with the step
    DIR/step-<N>/model.safetensors every parameter and buffer of the model (official names)

``from_pretrained(DIR, step=N)`` (or a step folder) and ``birth.load_run(DIR)`` read it back; the
training checkpoints (``RUN/checkpoints``, exact resume) stay torch files. Upload with
``huggingface_hub.HfApi().upload_folder(folder_path=DIR, repo_id=...)`` (docs/interop.md).
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence

import torch

from birth.analysis.run import Run
from birth.model.transformer import Transformer
from birth.training.config import ConfigError, TrainConfig, from_dict, to_dict
from birth.training.runs import RunDir, atomic_write_json

MODEL_TYPE = "birth"
WEIGHTS = "model.safetensors"


def _safetensors():
    try:
        from safetensors.torch import load_file, save_file  # the optional extra (hf)
    except ImportError:
        raise ConfigError("export hf: needs the safetensors library; pip install 'birth[hf]'") from None
    return load_file, save_file


def model_config(cfg: TrainConfig, vocab: Sequence[str], steps: Sequence[int], step: Optional[int] = None) -> dict:
    """config.json: the run's config, with the names Hugging Face tools read for the sizes."""
    m = cfg.model_args
    out = {"model_type": MODEL_TYPE, "architectures": ["BirthTransformer"], "vocab_size": len(vocab),
           "hidden_size": m.dim, "num_hidden_layers": 2 if m.arch == "simplified" else m.n_layers,
           "num_attention_heads": 1 if m.arch == "simplified" else m.n_heads,
           "max_position_embeddings": m.max_length, "vocab": list(vocab), "steps": list(steps),
           "birth_config": to_dict(cfg)}
    return {**out, "step": step} if step is not None else out


def export_hf(run_dir: str | Path, out: str | Path, steps: Optional[Sequence[int]] = None) -> list[Path]:
    """Writes the run's checkpoints at ``steps`` (default: all) as DIR/step-<N>/ folders; returns them."""
    _, save_file = _safetensors()
    run = RunDir(run_dir)
    if not run.holds_run():
        raise ConfigError(f"export hf: {run.path} holds no run (no config.yaml)")
    cfg, vocab = run.read_config(), run.read_task()["vocab"]
    saved = [s for s, _ in run.checkpoints()]
    steps = saved if not steps else sorted(steps)
    missing = sorted(set(steps) - set(saved))
    if missing:
        raise ConfigError(f"export hf: no checkpoint at step {missing[0]} in {run.path} (saved: {saved})")
    states = dict(run.whole_checkpoints(steps=steps))  # damaged ones named, left out; none whole: exit 5
    out = Path(out)
    folders = []
    for step, state in sorted(states.items()):
        folder = out / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        # each tensor its own copy: safetensors refuses shared storage (a tied W_U is W_E)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state["model"].items()}
        save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt", "step": str(step)})
        atomic_write_json(folder / "config.json", model_config(cfg, vocab, sorted(states), step))
        folders.append(folder)
    atomic_write_json(out / "config.json", model_config(cfg, vocab, sorted(states)))
    return folders


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"from_pretrained: cannot read {folder / 'config.json'} ({err})") from None
    if config.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"from_pretrained: {folder / 'config.json'} is not a birth model's")
    return config


def _step_folder(root: Path, step: Optional[int]) -> Path:
    """The folder of ``step`` (default: the last exported) under an export, or ``root`` itself."""
    if (root / WEIGHTS).exists() and step is None:
        return root
    steps = _read_config(root).get("steps", [])
    if not steps:
        raise ConfigError(f"from_pretrained: {root} holds no exported step")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ConfigError(f"from_pretrained: no step {step} in {root} (exported: {steps})")
    return root / f"step-{step}"


def from_pretrained(path: str | Path, step: Optional[int] = None, device: str = "cpu") -> Transformer:
    """The model of an exported folder (``export_hf``): ``path`` the export (``step``: default its last)
    or one step's folder; eval mode."""
    load_file, _ = _safetensors()
    folder = _step_folder(Path(path), step)
    config = _read_config(folder)
    cfg = from_dict(config["birth_config"])
    with torch.random.fork_rng(devices=[]):
        model = Transformer(cfg.model_args, config["vocab_size"])
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.to(device).eval()


class ExportedRun(Run):
    """``birth.load_run`` of an export: its config, vocabulary, steps and models (no metrics: those
    stay with the run)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path, self.device = Path(path), torch.device(device)
        self.info = _read_config(self.path)
        self.dir = RunDir(self.path)

    @cached_property
    def config(self) -> TrainConfig:
        return from_dict(self.info["birth_config"])

    @cached_property
    def task(self) -> dict:
        return {"vocab": self.info["vocab"]}

    @property
    def summary(self) -> dict:
        return {}

    @property
    def metrics(self) -> list[dict]:
        return []

    @property
    def steps(self) -> list[int]:
        return list(self.info["steps"])

    @property
    def vocab(self) -> list[str]:
        return list(self.info["vocab"])

    def model(self, step: Optional[int] = None) -> Transformer:
        return from_pretrained(self.path, step, str(self.device))


def is_export(path: str | Path) -> bool:
    """Whether ``path`` holds an export (a birth config.json, no config.yaml)."""
    path = Path(path)
    if not (path / "config.json").exists() or (path / "config.yaml").exists():
        return False
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False
