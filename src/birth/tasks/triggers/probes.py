"""Probes and metrics with the official key names (SPEC §4): pure functions returning flat dicts.

- ``memory_probes``: memory-recall of W_O2, W_K2, W_K1, W_F from the weights alone;
- ``attention_probes``: previous-token and induction-head attention on a batch;
- ``loss_metrics``: losses and accuracies per token type.
New metrics beside the official ones: ``*_margin`` (mean score of the right answer minus the best
wrong one), ``*_rank`` (mean rank of the right answer, 0 = top), ``wk1_full_acc`` (W_K2 recall
over all N tokens even with fixed triggers), ``wk1_trig_*`` (with fixed triggers: the K trigger
queries against all N keys, the part of W_K2 that the gradient reaches; ``wk1_trig_auc`` = 1 -
rank / (N - 1), the fraction of wrong keys the right one beats: 0.5 at chance, 1.0 learned) and
``wo1_split_test_acc`` (W_O2 recall on held-out tokens).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from birth.measures.heads import detection_patterns
from birth.model.transformer import Transformer

NAN = float("nan")


def _mean(mask_or_values: torch.Tensor) -> float:
    """Mean of a boolean/float tensor, NaN when empty (as the official .mean() of an empty mask)."""
    return float(mask_or_values.float().mean()) if mask_or_values.numel() else NAN


def recall_metrics(scores: torch.Tensor, target: torch.Tensor, prefix: str) -> dict[str, float]:
    """Accuracy, margin and rank of ``target`` under ``scores`` (rows = probe items, cols = candidates)."""
    right = scores.gather(1, target[:, None])                                         # (M, 1)
    wrong = scores.scatter(1, target[:, None], float("-inf"))                         # (M, C)
    return {
        f"{prefix}_acc": _mean(scores.argmax(-1) == target),
        f"{prefix}_margin": _mean(right[:, 0] - wrong.max(-1).values),
        f"{prefix}_rank": _mean((scores > right).sum(-1).float()),
    }


@torch.no_grad()
def memory_probes(model: Transformer, *, triggers: Optional[Sequence[int]], n_train_toks: int,
                  cond: Optional[torch.Tensor] = None) -> dict[str, float]:
    """The official memory-recall probes, read from the weights only.

    ``triggers``: the fixed trigger set (None for random triggers); ``n_train_toks``: tokens probed
    by ``wo1_acc`` (N, or the first 75% under the output split); ``cond``: pi_b (N, N) for ``ff1_loss``.
    A model with fewer than two layers gets -1 for the layer-2 probes, as the official full script.
    """
    if len(model.layers) < 2:
        return {k: -1.0 for k in ("wo1_acc", "wk1_acc", "wk0_acc", "wk0_64_acc", "ff1_loss")}
    dev = model.output.weight.device
    n = model.vocab_size
    toks = torch.arange(n, device=dev)
    emb = model.tok_embeddings(toks)                                                  # (N, d)
    out: dict[str, float] = {}
    # W_O2: w_U(j)^T W_O2 W_V2 w_E(k) should peak at j = k
    l2 = model.layers[1].attention
    wo_scores = model.output(l2.wo(l2.wv(emb))) * model.output_scale                  # (N, N)
    out.update(recall_metrics(wo_scores[:n_train_toks], toks[:n_train_toks], "wo1"))
    if n_train_toks < n:
        out["wo1_split_test_acc"] = _mean(wo_scores[n_train_toks:].argmax(-1) == toks[n_train_toks:])
    # W_K2: query w_E(k) against keys W_O1 W_V1 w_E(j), argmax over keys
    l1 = model.layers[0].attention
    keys = l2.wk(l1.wo(l1.wv(emb)))                                                   # (N, d)
    queries = l2.wq(emb)                                                              # (N, d)
    scores = queries @ keys.t()                                                       # (N, N)
    if triggers is not None:
        idx = torch.as_tensor(list(triggers), device=dev, dtype=torch.long)
        out.update(recall_metrics(scores[idx][:, idx], torch.arange(len(idx), device=dev), "wk1"))
        # wk1_full_acc's ceiling is near (K + (N - K) / N) / N under fixed triggers: only the K trigger
        # rows of W_K2 get gradient. The trigger rows against every key can reach 1.0.
        out["wk1_full_acc"] = recall_metrics(scores, toks, "wk1_full")["wk1_full_acc"]
        out.update(recall_metrics(scores[idx], idx, "wk1_trig"))
        out["wk1_trig_auc"] = 1.0 - out["wk1_trig_rank"] / (n - 1)
    else:
        out.update(recall_metrics(scores, toks, "wk1"))
    # W_K1: position t should attend to t-1 (keys 0..T-2, not causally masked, as official)
    pe = model.positions()
    if pe is None:  # RoPE: no absolute positions to probe
        out.update({"wk0_acc": NAN, "wk0_64_acc": NAN, "wk0_early_acc": NAN, "wk0_late_acc": NAN})
    else:
        for cutoff, name in ((None, "wk0"), (64, "wk0_64")):
            p = pe[:cutoff]                                                           # (L, d)
            s = l1.wq(p[1:]) @ l1.wk(p[:-1]).t()                                      # (L-1, L-1)
            res = recall_metrics(s, torch.arange(len(p) - 1, device=dev), name)
            out.update(res)
        out.update(early_late_recall(l1, pe))
    out["ff1_loss"] = _ff1_loss(model, triggers, cond) if cond is not None else -1.0
    return out


EARLY = 64  # positions t < 64 are "early" (the paper's Fig. 3, SPEC §7 claim 10)


def early_late_recall(attention, pe: torch.Tensor) -> dict[str, float]:
    """W_K1's previous-token recall at queries t < 64 (``wk0_early_acc``) and t >= 64
    (``wk0_late_acc``), each an argmax over the same keys: every position 0..L-2 (unlike
    ``wk0_64_acc``, whose argmax has 63 candidates against wk0's L-1). NaN for the late queries
    when L <= 64."""
    s = attention.wq(pe[1:]) @ attention.wk(pe[:-1]).t()                              # (L-1, L-1): query t = row + 1
    right = torch.arange(len(pe) - 1, device=pe.device)
    hit = s.argmax(-1) == right
    early = right + 1 < EARLY
    return {"wk0_early_acc": _mean(hit[early]), "wk0_late_acc": _mean(hit[~early])}


def _ff1_loss(model: Transformer, triggers: Optional[Sequence[int]], cond: torch.Tensor) -> float:
    """KL(pi_b(.|i) || softmax(W_U W_F w_E(i))) averaged over non-trigger tokens i (official)."""
    ff = getattr(model.layers[1], "ff", None)
    if ff is None:
        return -1.0
    n = model.vocab_size
    used = [i for i in range(n) if triggers is None or i not in set(triggers)]
    idx = torch.tensor(used, device=cond.device)
    logits = model.output(ff(model.tok_embeddings(idx))) * model.output_scale         # (M, N)
    return float(F.kl_div(F.log_softmax(logits.float(), dim=1), cond[idx].float(), reduction="batchmean"))


def loss_metrics(pred: torch.Tensor, y: torch.Tensor, outs: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """Losses and accuracies per token type (official definitions; ``acc_end`` covers every position)."""
    hit = pred.argmax(-1) == y                                                        # (B, T)
    ce = F.cross_entropy(pred.flatten(0, 1), y.flatten(), reduction="none").view_as(y)  # (B, T)
    first10 = torch.zeros_like(outs, dtype=torch.bool)
    first10[:, :10] = True
    res = {
        "loss_bigram": _mean(ce[outs == 0]),
        "loss_head": _mean(ce[outs >= 2]),
        "acc_tot": _mean(hit[outs >= 1]),
        "acc_start": _mean(hit[(outs >= 1) & first10]),
        "acc_end": _mean(hit[outs >= 2]),
        "acc_first": _mean(hit[outs == 1]),
        "acc_bigram": _mean(hit[outs == 0]),
    }
    return {prefix + k: v for k, v in res.items()}


@torch.no_grad()
def attention_probes(x: torch.Tensor, y: torch.Tensor, outs: torch.Tensor, pred: torch.Tensor,
                     patterns: Sequence[torch.Tensor]) -> dict[str, float]:
    """Previous-token (layer 1) and induction (layer 2) attention probes of the official code.

    ``patterns``: attention (B, H, T, T) of layers 1 and 2. With several heads, each probe is
    computed per head and the best head is reported (``score2_head`` says which).
    """
    if len(patterns) < 2:
        return {}
    heads = patterns[0].shape[1]
    per_head = [_head_probes(x, y, outs, pred, patterns[0][:, h], patterns[1][:, h]) for h in range(heads)]
    best = max(range(heads), key=lambda h: -1 if math.isnan(per_head[h]["score2_acc"]) else per_head[h]["score2_acc"])
    res = dict(per_head[best])
    if heads > 1:
        res["score_acc"] = max((r["score_acc"] for r in per_head), key=lambda v: -1 if math.isnan(v) else v)
        res["score2_head"] = float(best)
    res["repeat_frac"] = _mean(x[outs >= 1] == y[outs >= 1])
    return res


def _head_probes(x, y, outs, pred, attn1: torch.Tensor, attn2: torch.Tensor) -> dict[str, float]:
    amax1 = attn1.argmax(-1)                                                          # (B, T)
    # layer 1: right after a trigger (outs>=1 at t), position t+1 should attend to t
    b, t = torch.where(outs[:, :-1] >= 1)
    bs, ts = torch.where(outs[:, :-1] == 1)
    res = {"score_acc": _mean(amax1[b, t + 1] == t), "score_start_acc": _mean(amax1[bs, ts + 1] == ts)}
    # layer 2: at in-context targets, attend to s whose previous token equals the current one
    b, t = torch.where(outs >= 2)
    amax2 = attn2[b, t].argmax(-1)                                                    # (M,)
    res["score2_next_acc"] = _mean(x[b, amax2] == y[b, t])
    res["pred_attended_acc"] = _mean(x[b, amax2] == pred[b, t].argmax(-1))
    # the argmax key follows an earlier occurrence of x_t (TransformerLens' induction pattern: never
    # position 0, which counts as a failure)
    hit = detection_patterns(x)["induction"][b, t, amax2]
    total = len(amax2)
    res["score2_acc"] = float(hit.sum()) / total if total else NAN
    ok = amax2 >= 1
    b2, s2 = b[ok], amax2[ok]
    res["score_cond_acc"] = _mean(amax1[b2, s2] == s2 - 1)
    return res


@torch.no_grad()
def weight_norms(model: Transformer, log_norms: bool) -> dict[str, float]:
    """``norm_<param>`` and ``gradnorm_<param>`` of trainable parameters (after backward)."""
    res = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            res["norm_" + name] = float(p.norm())
            res["gradnorm_" + name] = float(p.grad.norm()) if p.grad is not None else 0.0
    if log_norms:
        for i, layer in enumerate(model.layers):
            for m in ("wk", "wv", "wo"):
                w = getattr(layer.attention, m)
                if hasattr(w, "weight"):
                    res[f"layer{i}_{m}_norm"] = float(w.weight.norm())
    return res
