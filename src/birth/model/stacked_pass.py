"""The losses of a stack of R runs of any architecture in one pass: the model's own forward mapped
over the runs with ``torch.func.vmap`` (``functional_call`` on each run's weights, a leading R on
every parameter, buffer and batch). The simplified model's rearranged stack
(``birth.model.simplified_pass.stacked_losses``) is the faster path where it applies; this one
serves every other model (the full architecture, RoPE, tied outputs, a loss on every position).

Hooks act as in a pass of the template model: its hook points see each run's tensors (without the
leading R) and the tokens of that run's batch in ``hook.context``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from birth.model import simplified_pass
from birth.model.hooks import Hooks


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


@torch.no_grad()
def stacked_run_with_cache(models: Sequence[nn.Module], tokens: torch.Tensor, names: Optional[Sequence[str]] = None
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``run_with_cache`` of a stack of runs of one shape: the logits (R, B, T, N) of each model on
    its tokens (R, B, T), and each hook point's tensor with the leading run dimension R. The
    simplified model takes its rearranged stacked pass where its points allow it (all but
    ``attn.hook_z``); any other model runs one at a time, stacked after."""
    template = models[0]
    names = list(template.hook_points()) if names is None else list(names)
    if template.args.arch == "simplified" and set(names) <= simplified_pass.HONOURED and not any(
            m.module_by_module() for m in models):
        cache: dict[str, torch.Tensor] = {}

        def keep(name):
            def record(t):
                cache[name] = t.detach()
                return t
            return record
        own = [dict(m.named_parameters(remove_duplicate=False)) | dict(m.named_buffers()) for m in models]
        stacked = {n: torch.stack([o[n] for o in own]) for n in own[0] if n != "freqs"}
        weights = simplified_pass.Weights.stacked(template, stacked)
        logits = simplified_pass.stacked_logits(weights, tokens, Hooks({n: keep(n) for n in names}))
        return logits, cache
    outs = [m.run_with_cache(x, names) for m, x in zip(models, tokens)]
    return torch.stack([o[0] for o in outs]), {n: torch.stack([o[1][n] for o in outs]) for n in names}
