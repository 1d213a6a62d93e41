"""Measures of a model's predictions on any task, as pure functions of (logits, batch, task): losses
and accuracies per target mask, the KL from each exact strategy to the model, Olsson et al.'s
in-context learning score and the loss at each position (docs/metrics.md).

The paper's own probes (memory recall, the official attention probes) are the paper task's
(``birth.tasks.triggers.probes``, called by ``birth.tasks.triggers.task``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

NAN = float("nan")
# Olsson et al. 2022: the loss at token 500 minus the loss at token 50, of 512; here at the same
# fractions of T, each averaged over a window of ICL_WINDOW * T positions around it.
ICL_EARLY, ICL_LATE, ICL_WINDOW = 50 / 512, 500 / 512, 1 / 64


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean()) if values.numel() else NAN


def mask_metrics(logits: torch.Tensor, batch, task, prefix: str = "") -> dict[str, float]:
    """Loss and accuracy of ``logits`` (B, T, N) on each target mask of the task, named by
    ``task.metric_key`` (``loss_in_context``, ``acc_global``, ...)."""
    hit = logits.argmax(-1) == batch.y
    ce = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), reduction="none").view_as(batch.y)
    res = {}
    for mask in task.masks:
        m = batch.masks[mask]
        res[prefix + task.metric_key("loss", mask)] = _mean(ce[m])
        res[prefix + task.metric_key("acc", mask)] = _mean(hit[m])
    return res


def strategy_scores(probs: torch.Tensor, batch, masks: Sequence[str]) -> dict[str, dict[str, float]]:
    """The loss (nats) and accuracy of a strategy's probabilities (B, T, N) on each mask."""
    p_true = probs.gather(-1, batch.y.unsqueeze(-1)).squeeze(-1)                      # (B, T)
    loss = -torch.log(p_true.double())
    hit = probs.argmax(-1) == batch.y
    return {m: {"loss": _mean(loss[batch.masks[m]]), "acc": _mean(hit[batch.masks[m]])} for m in masks}


def kl_to_strategies(logits: torch.Tensor, strategies: dict[str, torch.Tensor], batch,
                     masks: Sequence[str], prefix: str = "") -> dict[str, float]:
    """``kl_<strategy>_<mask>``: KL(strategy || model) in nats, averaged over the mask's positions
    (0 log 0 = 0); ``strategies``: each one's probabilities on this batch (B, T, N)."""
    log_model = F.log_softmax(logits.double(), -1)
    res = {}
    for name, probs in strategies.items():
        p = probs.double()
        kl = (p * (torch.log(torch.where(p > 0, p, 1.0)) - log_model)).sum(-1)         # (B, T)
        for mask in masks:
            res[f"{prefix}kl_{name}_{mask}"] = _mean(kl[batch.masks[mask]])
    return res


def loss_by_position(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cross-entropy at each position, averaged over the batch: (T,)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y).float().mean(0)


def icl_window(t: int, fraction: float) -> slice:
    """The positions of the ICL score around ``fraction`` of T: a window of max(1, T/64) positions."""
    width = max(1, round(ICL_WINDOW * t))
    centre = min(t - 1, round(fraction * t))
    start = max(0, min(centre - width // 2, t - width))
    return slice(start, start + width)


def icl_score(per_position: torch.Tensor) -> float:
    """Olsson et al.'s in-context learning score: the loss late in the context minus the loss
    early in it (negative: later tokens are predicted better, from the context)."""
    t = len(per_position)
    late, early = per_position[icl_window(t, ICL_LATE)], per_position[icl_window(t, ICL_EARLY)]
    return float(late.mean() - early.mean())
