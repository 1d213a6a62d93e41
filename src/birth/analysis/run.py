"""The Python loader of a saved run: ``birth.load_run(path)``.

Owns nothing on disk (``birth.training.runs`` does); it gathers what an analysis needs in one object:

    run = birth.load_run("runs/quick")
    run.config                  # TrainConfig
    run.steps                   # saved checkpoint steps, e.g. [400]
    model = run.model()         # Transformer at the latest checkpoint, eval mode (run.model(step=100))
    batch = run.eval_batch()    # the fixed evaluation batch: x, y (B, T), masks; the paper's task: outs
    run.decode(batch.x[0])      # characters
    run.encode("the ")          # token ids (1-D LongTensor)
    run.metrics                 # list of dicts, one per evaluation (metrics.jsonl)
    run.column("eval_acc_end")  # (iters, values) of one metric
    run.setup                   # the task (setup.task), its OOD tasks (setup.ood), the model
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence

import torch

from birth.training.config import ConfigError, TrainConfig
from birth.model.transformer import Transformer
from birth.training.runs import RunDir
from birth.training.build import Setup, build_setup
from birth.tasks import Batch


class Run:
    """A saved run directory, read lazily."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.dir = RunDir(path)
        if not self.dir.holds_run():
            raise ConfigError(f"load_run: {path} holds no run (no config.yaml)")
        self.path, self.device = self.dir.path, torch.device(device)

    @cached_property
    def config(self) -> TrainConfig:
        return self.dir.read_config()

    @cached_property
    def task(self) -> dict:
        """task.json: vocabulary, fixed triggers and the Bayes floors."""
        return self.dir.read_task()

    @property
    def summary(self) -> dict:
        return self.dir.read_summary()

    @property
    def metrics(self) -> list[dict]:
        return self.dir.read_metrics()

    def column(self, key: str) -> tuple[list[int], list[float]]:
        """(iters, values) of one metric, skipping evaluations where it is missing or null."""
        pts = [(r["iter"], r[key]) for r in self.metrics if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    @property
    def steps(self) -> list[int]:
        return [s for s, _ in self.dir.checkpoints()]

    @cached_property
    def setup(self) -> Setup:
        """Task samplers, corpus statistics and a fresh (untrained) model of the run's config."""
        return build_setup(self.config, self.device)

    def model(self, step: Optional[int] = None) -> Transformer:
        """A new model with the weights saved at ``step`` (default: the newest whole checkpoint; a
        damaged newer one is named in one warning line)."""
        ckpts = dict(self.dir.checkpoints())
        if not ckpts:
            raise ConfigError(f"load_run: {self.dir.ckpt_dir} holds no checkpoint")
        if step is not None and step not in ckpts:
            raise ConfigError(f"load_run: no checkpoint at step {step} in {self.dir.ckpt_dir} (saved: {sorted(ckpts)})")
        _, state = self.dir.newest_whole_checkpoint(self.device, step)
        with torch.random.fork_rng(devices=[]):
            model = Transformer(self.config.model_args, self.setup.task.num_tokens)
        model.load_state_dict(state["model"])
        return model.to(self.device).eval()

    def eval_batch(self, name: str = "eval") -> Batch:
        """A fixed evaluation batch (``eval``, ``test`` or ``split_test``)."""
        return self.setup.eval_batches()[name]

    @property
    def vocab(self) -> list[str]:
        """The display string of each token id (characters for the paper's task)."""
        return list(self.setup.task.vocab)

    def decode(self, tokens: Sequence[int] | torch.Tensor) -> str:
        vocab = self.vocab
        return "".join(vocab[int(i)] for i in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens))

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of ``text``, one per character (a vocabulary of single characters only)."""
        vocab = self.vocab
        if any(len(v) != 1 for v in vocab):
            raise ConfigError(f"encode: the {self.config.data_args.task} task's tokens are not single characters; "
                              "pass token ids instead")
        missing = sorted(set(text) - set(vocab))
        if missing:
            raise ConfigError(f"encode: characters {missing!r} are not in the run's vocabulary")
        index = {c: i for i, c in enumerate(vocab)}
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, steps={self.steps})"


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """The run saved in ``path`` (a ``birth train`` output directory)."""
    return Run(path, device)
