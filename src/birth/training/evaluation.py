"""What a run measures at each evaluation step: a list of metric functions, each called with the
``Evaluation`` of that step and returning ``{name: value}`` for the metrics line.

    METRICS = (training_batch, weights, out_of_distribution, evaluation_batch, gradient_norms,
               strategies, in_context_score, heads)

The package's own measures and a user's callbacks (``birth.train(cfg, callbacks=[fn])``) go through
the same mechanism: ``fn(ev)`` reads ``ev.step``, ``ev.model``, ``ev.batch`` (the training batch of
the step), ``ev.metrics`` (the line so far) and ``ev.outputs(name)`` (logits and attention of the
model on a fixed batch, computed once per step), and returns the metrics it adds (or None); each
function, and each pass here, sees the model in eval mode (``evaluating``: no dropout). The
computations themselves are pure functions of (outputs, batch, task) in ``birth.measures.predictions``
and in the tasks; here they are only wired to the passes that feed them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from birth.measures import metric_functions
from birth.measures import heads as heads_of
from birth.measures import predictions as M
from birth.model.simplified_pass import explicit_attention
from birth.tasks import Batch, stream_generator
from birth.training.timings import Timings

# Evaluation batches pass through the model in chunks of about this many tokens, so that a chunk's
# activations and (chunk, T, T) attention scores stay in cache: on 2 cores the probed pass of 512
# sequences at T 256, d 128 is 2x faster than in chunks of 128 sequences, the OOD pass at T 128,
# d 256 1.35x. Chunks of tens of sequences give the bits of one pass (tests/test_train.py), but for the
# simplified model's OOD pass at the targets: its groups of sequences follow the chunk (rounding, ~4e-7).
EVAL_TOKENS = 8192
# The OOD pass's attention computation (explicit or fused) is chosen as for chunks of 128 sequences,
# the chunks of runs made before EVAL_TOKENS: their metrics stay bitwise those of a run made now.
OOD_ATTENTION_CHUNK = 128
HEAD_SEQUENCES = 16  # sequences of the repeated-random-tokens batch of the head scores

Metric = Callable[["Evaluation"], Optional[dict]]


def eval_chunks(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``t`` (B, T, ...) split along B into chunks of about EVAL_TOKENS tokens."""
    return t.split(max(1, EVAL_TOKENS // t.shape[1]))


@contextmanager
def evaluating(model: torch.nn.Module):
    """``model`` in eval mode (no dropout) for the passes inside, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def probed_pass(model, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Logits (B, T, N) and attention patterns of every layer on ``x``, in chunks, no gradient."""
    with evaluating(model):
        parts = [model(chunk, return_attn=True) for chunk in eval_chunks(x)]
    return torch.cat([p for p, _ in parts]), [torch.cat(layer) for layer in zip(*(a for _, a in parts))]


def training_loss(loss_head_only: bool, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The training objective: cross-entropy at the in-context targets, or at every position."""
    if loss_head_only:
        m = batch.masks["in_context"]
        return F.cross_entropy(logits[m], batch.y[m])
    return F.cross_entropy(logits.flatten(0, 1), batch.y.flatten())


@dataclass
class Stepped:
    """What a training step leaves for its evaluation: its batch, logits, attention, loss and the
    gradient norms taken before the update."""

    batch: Batch
    pred: torch.Tensor
    patterns: list
    loss: float
    norms: dict


@dataclass
class Evaluation:
    """One evaluation step as the metric functions see it."""

    step: int
    evaluator: "Evaluator"
    stepped: Stepped
    metrics: dict = field(default_factory=dict)
    vectors: dict = field(default_factory=dict)   # per-position values (written beside the line)
    _passes: dict = field(default_factory=dict)

    @property
    def setup(self):
        return self.evaluator.setup

    @property
    def model(self):
        return self.evaluator.setup.model

    @property
    def task(self):
        return self.evaluator.setup.task

    @property
    def cfg(self):
        return self.evaluator.setup.cfg

    @property
    def batch(self) -> Batch:
        """The training batch of this step."""
        return self.stepped.batch

    @property
    def batches(self) -> dict[str, Batch]:
        return self.evaluator.batches

    def outputs(self, name: str = "eval") -> tuple[torch.Tensor, list]:
        """(logits, attention patterns) of the model on the fixed batch ``name`` (``eval`` or an
        OOD batch), or on ``heads``, the repeated random tokens; computed once per step."""
        if name not in self._passes:
            x = self.evaluator.heads_tokens if name == "heads" else self.batches[name].x
            self._passes[name] = probed_pass(self.model, x)
        return self._passes[name]


# -- the package's metric functions ---------------------------------------------------------------

def training_batch(ev: Evaluation) -> dict:
    """The loss of the step, and the task's metrics of the training batch (as the official script)."""
    s = ev.stepped
    return {"iter": ev.step, "loss": s.loss, **ev.task.batch_metrics(s.pred, s.patterns, s.batch)}


def weights(ev: Evaluation) -> dict:
    """The task's probes of the weights alone (the paper's memory recall), after the update."""
    return ev.task.weight_metrics(ev.model)


@torch.no_grad()
def ood_logits(setup, b: Batch, acc_mask: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of an OOD batch at the in-context targets and at the ``acc_mask`` positions (computed
    at the in-context targets only where the two coincide and the rearranged pass applies)."""
    with evaluating(setup.model) as model:
        if acc_mask == "in_context":
            explicit = explicit_attention(min(len(b.x), OOD_ATTENTION_CHUNK), b.x.shape[1])
            head = torch.cat([model(x, targets=m, explicit=explicit)
                              for x, m in zip(eval_chunks(b.x), eval_chunks(b.masks["in_context"]))])
            return head, head
        pred = torch.cat([model(x) for x in eval_chunks(b.x)])
    return pred[b.masks["in_context"]], pred[b.masks[acc_mask]]


def out_of_distribution(ev: Evaluation) -> dict:
    """In-context accuracy and loss on each OOD batch: ``acc_end_test``, ``loss_head_test``, ..."""
    task, res = ev.task, {}
    acc_mask = task.ood_accuracy_mask(ev.cfg.model_args.arch)
    for name in ev.setup.ood:
        b = ev.batches[name]
        head, end = ood_logits(ev.setup, b, acc_mask)
        acc, loss = task.metric_key("acc", "in_context"), task.metric_key("loss", "in_context")
        hit = end.argmax(-1) == b.y[b.masks[acc_mask]]
        res[f"{acc}_{name}"] = float(hit.float().mean()) if end.numel() else None
        res[f"{loss}_{name}"] = float(F.cross_entropy(head, b.y[b.masks["in_context"]])) if head.numel() else None
    return res


def evaluation_batch(ev: Evaluation) -> dict:
    """The training loss and the task's metrics on the fixed evaluation batch (``eval_*``), and the
    loss at each of its positions (``loss_by_position.bin``)."""
    if not ev.cfg.eval_fixed_batch:
        return {}
    batch = ev.batches["eval"]
    logits, patterns = ev.outputs("eval")
    ev.vectors["loss_by_position"] = M.loss_by_position(logits, batch.y)
    res = {"eval_loss": float(training_loss(ev.cfg.loss_head_only, logits, batch))}
    res.update(ev.task.batch_metrics(logits, patterns, batch, "eval_"))
    return res


def gradient_norms(ev: Evaluation) -> dict:
    return ev.stepped.norms


def strategies(ev: Evaluation) -> dict:
    """``eval_kl_<strategy>_<mask>``: KL from each exact strategy of the task to the model."""
    if not ev.cfg.eval_fixed_batch or not ev.evaluator.strategy_probs:
        return {}
    logits, _ = ev.outputs("eval")
    return M.kl_to_strategies(logits, ev.evaluator.strategy_probs, ev.batches["eval"], ev.task.masks, "eval_")


def in_context_score(ev: Evaluation) -> dict:
    """``eval_icl_score``: Olsson et al.'s score on the evaluation batch (late minus early loss)."""
    if "loss_by_position" not in ev.vectors:
        return {}
    return {"eval_icl_score": M.icl_score(ev.vectors["loss_by_position"])}


def heads(ev: Evaluation) -> dict:
    """Previous-token, induction (prefix-matching) and duplicate-token scores of every head on a
    fixed batch of repeated random tokens."""
    _, patterns = ev.outputs("heads")
    return heads_of.head_scores(patterns, ev.evaluator.heads_tokens)


METRICS: tuple[Metric, ...] = (training_batch, weights, out_of_distribution, evaluation_batch, gradient_norms,
                               strategies, in_context_score, heads)


class Evaluator:
    """The evaluation of one run: its fixed batches, the strategies' probabilities on the
    evaluation batch, the head-score batch, and the metric functions (package's, then callbacks')."""

    def __init__(self, setup, callbacks: Sequence[Metric] = (), metrics: Sequence[Metric] = METRICS,
                 timings: Optional[Timings] = None):
        self.setup = setup
        self.timings = timings or Timings()
        cfg = setup.cfg
        self.batches = setup.eval_batches()
        # the package's measures, then the config's (``metrics=...``), then a Python caller's callbacks
        self.functions = list(metrics) + metric_functions(cfg.metrics) + list(callbacks)
        self.strategy_probs: dict[str, torch.Tensor] = {}
        if cfg.eval_fixed_batch:
            self.strategy_probs = {name: fn(self.batches["eval"]).float()
                                   for name, fn in setup.task.strategies().items()}
        gen = stream_generator(cfg.eval_seed, "heads", 0, setup.device)
        self.heads_tokens = heads_of.repeated_random_tokens(setup.task.num_tokens, HEAD_SEQUENCES,
                                                     cfg.data_args.seq_length, gen)

    def strategy_table(self) -> dict[str, dict]:
        """Each strategy's loss and accuracy on each mask of the evaluation batch (for task.json;
        a loss is null where it is infinite: the strategy gives some target no probability)."""
        b = self.batches["eval"]
        finite = lambda v: v if math.isfinite(v) else None
        return {name: {mask: {k: finite(v) for k, v in scores.items()}
                       for mask, scores in M.strategy_scores(p, b, self.setup.task.masks).items()}
                for name, p in self.strategy_probs.items()}

    def __call__(self, step: int, stepped: Stepped) -> Evaluation:
        ev = Evaluation(step, self, stepped)
        for fn in self.functions:
            name = getattr(fn, "__name__", type(fn).__name__)
            # eval mode around each function: a callback that switches the mode leaves the next unaffected
            with self.timings.timed(f"eval: {name}"), evaluating(self.setup.model):
                added = fn(ev)
            if added:
                ev.metrics.update(added)
        return ev
