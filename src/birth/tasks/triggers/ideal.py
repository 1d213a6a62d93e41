"""The ideal associative memories of the induction head (SPEC §2.4), from a simplified model's own
embeddings and frozen maps: what the ``set:M:ideal`` intervention writes, and the targets the
memory-recall probes and the theory compare the trained matrices with."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

IDEAL = ("W_K1", "W_K2", "W_O2")
DEFAULT_GAIN = 10.0


def _scaled(u: torch.Tensor, v: torch.Tensor, gain: float, factor: float) -> torch.Tensor:
    """sum_i u_i v_i^T, scaled so that u_i^T M v_i, times ``factor`` (how the model scales that
    bilinear form), is ``gain`` for an association of average norms."""
    memory = u.t() @ v                                                                 # (d, d) = sum_i u_i v_i^T
    typical = float(((u * u).sum(-1) * (v * v).sum(-1)).mean())
    return memory * (gain / (factor * typical))


@torch.no_grad()
def ideal_memory(model, name: str, gain: float = DEFAULT_GAIN, triggers: Optional[Sequence[int]] = None,
                 length: Optional[int] = None) -> torch.Tensor:
    """The ideal memory (d, d) of the simplified model's ``name`` (SPEC §2.4), from its current
    embeddings and frozen maps, key on the right (score = query^T W key):

    - W_K1* = sum_{t=2..T} p_t p_{t-1}^T (previous-token head; ``length`` = T, default max_length);
    - W_K2* = sum_{k in Q} w_E(k) w_1(k)^T, w_1(k) = W_O1 W_V1 w_E(k), Q the fixed triggers (else all);
    - W_O2* = sum_k w_U(k) w_V2(k)^T, w_V2(k) = W_V2 w_E(k).

    Each is scaled (``_scaled``) so that a stored association scores ``gain``: in the attention
    scores (times 1/sqrt(d)) for the keys, in the logits (times the output scale) for W_O2.
    """
    if model.args.arch != "simplified" or model.use_rope:
        raise ValueError(f"set:{name}:ideal: ideal memories are the simplified model's with absolute positions")
    emb = model.tok_embeddings.weight
    l1, l2 = model.layers[0].attention, model.layers[1].attention
    scale = l1.scale
    if name == "W_K1":
        p = model.positions(length)
        return _scaled(p[1:], p[:-1], gain, scale)
    if name == "W_K2":
        q = emb if triggers is None else emb[list(triggers)]
        return _scaled(q, l1.wo(l1.wv(q)), gain, scale)
    if name == "W_O2":
        return _scaled(model.output.weight, l2.wv(emb), gain, model.output_scale)
    raise ValueError(f"set:{name}:ideal: ideal memories exist for {', '.join(IDEAL)}")
