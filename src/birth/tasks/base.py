"""What every task shares: its data arguments (``TaskArgs``), a batch (``Batch``: tokens, targets and
named target masks), seeded streams, and the ``Task`` interface the trainer, the evaluation, the
plots and the report read.

A task samples batch ``i`` of a stream as a pure function of (seed, stream, i) on a device. It names
its target masks (every task has ``in_context``: targets a predictor can get right only from the
context; most have ``global``: targets predictable from fixed statistics) and gives its exact
*strategies*: the predictors the field compares models with, each a function from a batch to
next-token probabilities (B, T, N), computed in closed form, not learned. Task-specific probes and
metrics belong to the task (``Task.metrics``); everything else works from masks and strategies.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional, Sequence

import numpy as np
import torch

from birth.fields import documented
from birth.measures.predictions import mask_metrics

# Independent random streams derived from one seed: batch i of stream s is seeded by (seed, s, i).
STREAMS = {"train": 0, "eval": 1, "test": 2, "split_test": 3, "floors": 4, "heads": 5}

Strategy = Callable[["Batch"], torch.Tensor]  # a batch -> next-token probabilities (B, T, N), float64


@dataclass
class TaskArgs:
    """The keys every task has; a task's own dataclass adds its keys (``data_args.*``)."""

    task: str = documented("triggers", "the task (birth.tasks): triggers (the paper's), markov, repeat, "
                                       "or MODULE:CLASS of your own")
    seq_length: int = documented(256, "sequence length T (the model sees T tokens, predicts the next T)")


@dataclass
class Batch:
    """Sequences of a task: inputs ``x`` and next tokens ``y`` (B, T), the task's target masks (B, T)
    bool by name, and its per-sequence latent variables (B, ...) by name."""

    x: torch.Tensor
    y: torch.Tensor
    masks: dict[str, torch.Tensor]
    latents: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x.shape[0]

    def split(self, size: int) -> list["Batch"]:
        """The batch in chunks of ``size`` sequences (the last may be shorter), of the same class."""
        cut = lambda t: t.split(size)
        parts = {name: cut(value) for name, value in self._fields().items()}
        return [self._from_fields({name: parts[name][i] for name in parts}) for i in range(len(parts["x"]))]

    def to(self, device) -> "Batch":
        return self._from_fields({name: value.to(device) for name, value in self._fields().items()})

    def _fields(self) -> dict[str, torch.Tensor]:
        flat = {"x": self.x, "y": self.y}
        flat.update({f"mask.{k}": v for k, v in self.masks.items()})
        flat.update({f"latent.{k}": v for k, v in self.latents.items()})
        return flat

    def _from_fields(self, flat: dict[str, torch.Tensor]) -> "Batch":
        pick = lambda prefix: {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        return type(self)(flat["x"], flat["y"], pick("mask."), pick("latent."))


def stream_id(stream: str) -> int:
    """The number of a stream: the table's, or for another name (a task's own OOD batch) one read
    from the digest of the name, above the table's."""
    if stream in STREAMS:
        return STREAMS[stream]
    return 1000 + int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")


def stream_generator(seed: int, stream: str, index: int, device: torch.device | str) -> torch.Generator:
    """A torch generator whose state depends only on (seed, stream, index)."""
    state = np.random.SeedSequence([int(seed), stream_id(stream), int(index)]).generate_state(2, np.uint64)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state[0]) & ((1 << 63) - 1))
    return gen


@dataclass
class PatchExample:
    """A task's natural corruption of a batch, for activation patching (``birth.measures.patching``):
    clean and corrupted tokens (B, T); the metric, the mean log-probability of the next tokens ``y``
    (B, T) over the positions ``where`` (B, T) of each sequence (higher: more right); and, per
    sequence, its named positions (for figures: the trigger's two occurrences, ...)."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    y: torch.Tensor
    where: torch.Tensor
    marks: list[dict[str, int]] = field(default_factory=list)

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """(k B,) scores of logits (k B, T, N): k copies of the batch, as patching runs them."""
        copies = logits.shape[0] // self.y.shape[0]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, self.y.repeat(copies, 1)[..., None])[..., 0]
        w = self.where.repeat(copies, 1).to(lp.dtype)
        return (lp * w).sum(1) / w.sum(1)

    def select(self, rows: Sequence[int]) -> "PatchExample":
        """The example of the sequences ``rows`` only."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.clean.device)
        return PatchExample(self.clean[index], self.corrupted[index], self.y[index], self.where[index],
                            [self.marks[i] for i in rows])


class Task:
    """One data distribution. Subclasses set ``name``, ``Args`` and ``masks``, and define ``sample``
    (and usually ``strategies``); the rest has defaults.

    ``metric_key(kind, mask)`` names the logged loss ('loss') and accuracy ('acc') on a mask
    (``loss_in_context``, ``acc_global``, ...; the paper's task keeps the official names).
    """

    name: ClassVar[str] = ""
    Args: ClassVar[type] = TaskArgs
    masks: ClassVar[tuple[str, ...]] = ("in_context",)
    # strategies drawn against the model in the figures, first = the Bayes predictor (the floor)
    reference_strategies: ClassVar[tuple[str, ...]] = ()
    # the data_args keys that runs trained as one stack must share (birth.launching.stacked): those
    # that fix a batch's shape and the vocabulary; None (the default): every key
    stack_keys: ClassVar[Optional[tuple[str, ...]]] = None
    # the key that sets the number of tokens N, named when a config is too large for the machine
    vocab_key: ClassVar[str] = "data_args"

    def __init__(self, args, device: torch.device | str = "cpu"):
        self.args = args
        self.device = torch.device(device)

    # -- to define ------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        raise NotImplementedError

    @property
    def vocab(self) -> Sequence[str]:
        """A display string per token id (the default: the ids themselves)."""
        return tuple(str(i) for i in range(self.num_tokens))

    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def strategies(self) -> dict[str, Strategy]:
        return {}

    # -- defaults -------------------------------------------------------------------------------
    @classmethod
    def check(cls, args, *, loss_head_only: bool = False) -> None:
        """Raises ValueError, one line naming the ``data_args.*`` key, for arguments that cannot run
        (``loss_head_only``: the run trains on the in-context targets only)."""

    def batch(self, seed: int, stream: str, index: int, batch_size: int) -> Batch:
        """Batch ``index`` of a stream: a pure function of (seed, stream, index) on this device."""
        return self.sample(batch_size, stream_generator(seed, stream, index, self.device))

    def metric_key(self, kind: str, mask: str) -> str:
        return f"{kind}_{mask}"

    def evaluation_tasks(self) -> dict[str, "Task"]:
        """Other distributions evaluated on a fixed batch each (out of distribution), by name."""
        return {}

    def floors(self) -> dict[str, float]:
        """Reference values of the task written to task.json (e.g. Bayes-optimal losses)."""
        return {}

    def info(self) -> dict:
        """What task.json records besides floors and strategies."""
        return {"task": self.name, "vocab": list(self.vocab), "num_tokens": self.num_tokens}

    def batch_metrics(self, logits: torch.Tensor, patterns, batch: Batch, prefix: str = "") -> dict[str, float]:
        """Metrics of the model's logits (B, T, N) and attention on a batch: loss and accuracy per mask."""
        return mask_metrics(logits, batch, self, prefix)

    def weight_metrics(self, model) -> dict[str, float]:
        """Probes of the weights alone (none by default)."""
        return {}

    def patch_example(self, batch: Batch, gen: torch.Generator) -> Optional[PatchExample]:
        """The task's natural corruption of ``batch`` (the sequences that have one), for activation
        patching; None for a task without one (the default)."""
        return None

    def strategy_bytes(self, batch_size: int) -> int:
        """About the memory the strategies take on an evaluation batch of ``batch_size`` sequences:
        each one's (B, T, N) probabilities, kept in float32, made in float64 with about three (B, T, N)
        intermediates, and (B, T, T) comparisons. A task whose strategies need more says so here."""
        cells = batch_size * self.args.seq_length
        n, t = self.num_tokens, self.args.seq_length
        return len(self.strategies()) * cells * n * (4 + 8 * 3) + 3 * cells * (n + t) * 8

    def ood_accuracy_mask(self, arch: str) -> str:
        """The mask whose accuracy an OOD batch reports (the in-context targets)."""
        return "in_context"


def args_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a task's data arguments, by name."""
    return {f.name: f for f in dataclasses.fields(cls)}


def pick_sequence(batch, length: int) -> int:
    """A varied evaluation sequence (most distinct characters) with at least 3 in-context targets
    in its first ``length`` positions, rather than one caught in a trigger -> output cycle."""
    distinct = torch.tensor([len(set(row.tolist())) for row in batch.x[:, :length]])
    enough = batch.masks["in_context"][:, :length].sum(1).cpu() >= 3
    return int(torch.where(enough, distinct, -1).argmax())
