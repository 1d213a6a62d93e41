"""Head scores: how much each attention head attends as a previous-token, induction (prefix-matching)
or duplicate-token head, on repeated random tokens (TransformerLens' ``detect_head``; docs/metrics.md)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

HEAD_SCORES = ("previous", "induction", "duplicate")


def repeated_random_tokens(n_tokens: int, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """(B, T) sequences of uniform random tokens whose second half repeats the first (the
    TransformerLens / Olsson et al. induction test)."""
    half = (length + 1) // 2
    first = torch.randint(n_tokens, (batch, half), generator=gen, device=gen.device)
    return torch.cat([first, first], 1)[:, :length]


def detection_patterns(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """TransformerLens' detection patterns (B, T, T), 1 where a head of that kind attends:
    previous (s = t - 1), duplicate (s < t, x_s = x_t), induction (1 <= s <= t, x_{s-1} = x_t)."""
    b, t = tokens.shape
    same = tokens[:, :, None] == tokens[:, None, :]                                   # (B, T, S): x_t = x_s
    below = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril(-1)
    previous = torch.zeros(t, t, dtype=torch.bool, device=tokens.device)
    previous[1:, :-1] = torch.eye(t - 1, dtype=torch.bool, device=tokens.device)
    induction = torch.zeros_like(same)
    induction[:, :, 1:] = same[:, :, :-1] & below[:, :-1]                             # x_{s-1} = x_t, s-1 < t
    return {"previous": previous.expand(b, t, t), "duplicate": same & below, "induction": induction}


def head_scores(patterns: Sequence[torch.Tensor], tokens: torch.Tensor) -> dict[str, float]:
    """``head_<kind>_l<L>h<H>`` per layer and head, and ``head_<kind>_max`` over all heads: the
    attention mass on the detection pattern over the mass of the whole pattern (TransformerLens'
    ``detect_head`` with error_measure 'mul', no exclusions), averaged over sequences."""
    detect = detection_patterns(tokens)
    res: dict[str, float] = {}
    best = {kind: -math.inf for kind in HEAD_SCORES}
    for layer, attn in enumerate(patterns):                                           # (B, H, T, T)
        a = attn.float()
        total = a.sum((-1, -2))                                                        # (B, H)
        for kind in HEAD_SCORES:
            score = ((a * detect[kind][:, None].float()).sum((-1, -2)) / total).mean(0)  # (H,)
            for h, v in enumerate(score.tolist()):
                res[f"head_{kind}_l{layer}h{h}"] = v
                best[kind] = max(best[kind], v)
    res.update({f"head_{kind}_max": v for kind, v in best.items() if math.isfinite(v)})
    return res
