"""The losses of a stack of R runs of any architecture in one pass: the model's own forward mapped
over the runs with ``torch.func.vmap`` (``functional_call`` on each run's weights, a leading R on
every parameter, buffer and batch). The simplified model's rearranged stack
(``birth.model.simplified_pass.stacked_losses``) is the faster path where it applies; this one
serves every other model (the full architecture, RoPE, tied outputs, a loss on every position).

Hooks act as in a pass of the template model: its hook points see each run's tensors (without the
leading R) and the tokens of that run's batch in ``hook.context``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap


def vmapped_losses(template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                   tokens: torch.Tensor, y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy at the ``targets`` of each run (R,): run r's weights (``params`` and
    ``buffers``, each (R, ...), named as the template's) on its batch (tokens, y, targets: (R, B, T)).
    Their sum has each run's own gradient in that run's slice."""
    def one(p, b, x, labels, mask):
        logits = functional_call(template, {**p, **b}, (x,))                              # (B, T, N)
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        weight = mask.flatten().to(ce.dtype)
        return (ce * weight).sum() / weight.sum()
    template.explicit_attention = True
    try:
        return vmap(one)(params, buffers, tokens, y, targets)
    finally:
        template.explicit_attention = False
