"""Associative memories (SPEC §3.1, §4.1): random embeddings, W = sum v_j u_i^T, recall and cross-talk.

A memory stores pairs M = {(i, j)} in one d x d matrix, W = sum_{(i,j) in M} v_j u_i^T, and recalls
j from i by argmax_j' v_j'^T W u_i. With random embeddings the recall is disturbed by cross-talk:

    W u_i = v_j (u_i . u_i) + sum_{(a,b) in M, a != i} v_b (u_a . u_i)

whose second term has relative norm about sqrt((|M| - 1) / d) (each u_a . u_i / |u_i|^2 ~ N(0, 1/d)).
A memory can also be *learned*, by gradient descent on the cross-entropy of softmax(V W u_i) (SPEC
§3.2); from W = 0 its first step is the outer-product memory, up to scale and the mean output.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_embeddings(n: int, d: int, scale: str = "unit", generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n random vectors (n, d): entries N(0, 1/d) ('unit': near-unit norm, the paper) or N(0, 1) ('code')."""
    if scale not in ("unit", "code"):
        raise ValueError(f"scale: expected 'unit' or 'code', got {scale!r}")
    e = torch.randn(n, d, generator=generator, dtype=dtype)
    return e / math.sqrt(d) if scale == "unit" else e


def outer_memory(u: torch.Tensor, v: torch.Tensor, pairs: torch.Tensor,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """W = sum_m alpha_m v_{j_m} u_{i_m}^T (d_out, d_in) for pairs (|M|, 2) of (input i, output j) rows."""
    alpha = torch.ones(len(pairs), dtype=u.dtype) if weights is None else weights.to(u.dtype)
    return (v[pairs[:, 1]] * alpha[:, None]).T @ u[pairs[:, 0]]                      # (d, |M|) @ (|M|, d)


def recall_scores(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Scores (|M|, n_out): v_j'^T W u_i for every stored input i and every candidate output j'."""
    return (u[pairs[:, 0]] @ w.T) @ v.T                                             # (|M|, d) @ (d, n_out)


def pair_recall(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, pairs: torch.Tensor) -> float:
    """R(W, M) = fraction of pairs (i, j) with j = argmax_j' v_j'^T W u_i (SPEC §4.1)."""
    return float((recall_scores(w, u, v, pairs).argmax(1) == pairs[:, 1]).double().mean())


def cross_talk(u: torch.Tensor, v: torch.Tensor, pairs: torch.Tensor) -> float:
    """Mean over stored pairs of |sum_{a != i} v_b (u_a . u_i)| / |v_j (u_i . u_i)| in the outer memory.

    The interference each recall suffers, relative to its own signal; about sqrt((|M| - 1) / d).
    """
    ui, vj = u[pairs[:, 0]], v[pairs[:, 1]]                                         # (|M|, d) each
    gram = ui @ ui.T                                                                 # (|M|, |M|): u_a . u_i
    own = gram.diagonal()                                                            # (|M|,)
    others = (gram - torch.diag_embed(own)) @ vj                                     # (|M|, d): sum_a (u_a.u_i) v_b
    return float((others.norm(dim=1) / (vj.norm(dim=1) * own.abs())).mean())


def predicted_cross_talk(n_pairs: int | torch.Tensor, d: int | torch.Tensor) -> torch.Tensor:
    """sqrt((|M| - 1) / d): the relative interference of an outer-product memory."""
    return ((torch.as_tensor(n_pairs, dtype=torch.float64) - 1).clamp(min=0) / d).sqrt()


def predicted_recall(n_pairs: int, n_out: int, d: int, n_points: int = 2001) -> float:
    """Gaussian approximation of R(W, M) for a random one-to-one memory of |M| pairs in dimension d.

    With unit embeddings, v_j'^T W u_i for a wrong j' is the sum of (v_j'.v_j)|u_i|^2, (u_a.u_i) for
    the input a stored with j', and |M| - 2 products of two N(0, 1/d): variance s^2 = 2/d + (|M|-2)/d^2.
    The right score is 1 + N(0, 4/d + (|M|-1)/d^2). Treating the n_out - 1 wrong scores as independent,
    R = E_z[ Phi((1 + s_r z) / s)^(n_out - 1) ].
    """
    s = math.sqrt(2.0 / d + max(n_pairs - 2, 0) / d ** 2)
    s_right = math.sqrt(4.0 / d + max(n_pairs - 1, 0) / d ** 2)
    z = torch.linspace(-8, 8, n_points, dtype=torch.float64)
    phi = torch.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf((1 + s_right * z) / (s * math.sqrt(2))))
    integrand = phi * cdf.clamp(min=1e-300) ** (n_out - 1)
    return float(torch.trapezoid(integrand, z))


def memory_loss(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, pairs: torch.Tensor,
                probs: torch.Tensor | None = None) -> torch.Tensor:
    """E_(i,j)[ cross-entropy(j, softmax_j'(v_j'^T W u_i)) ] with pair probabilities ``probs`` (uniform)."""
    logits = recall_scores(w, u, v, pairs)                                          # (|M|, n_out)
    losses = F.cross_entropy(logits, pairs[:, 1], reduction="none")
    return losses.mean() if probs is None else (losses * probs).sum()


def learned_memory(u: torch.Tensor, v: torch.Tensor, pairs: torch.Tensor, steps: int = 100,
                   lr: float | None = None) -> tuple[torch.Tensor, list[float]]:
    """W learned by full-batch gradient descent on ``memory_loss`` from W = 0; returns (W, losses).

    The step starts at lr (default |M|: from zero, one step then stores every pair with weight ~1,
    the outer-product scale) and is halved whenever the loss would increase, grown by 1.25 otherwise
    (a backtracking rule, so one setting serves every |M| and d).
    """
    w = torch.zeros(v.shape[1], u.shape[1], dtype=u.dtype)
    lr = float(len(pairs)) if lr is None else lr
    loss = memory_loss(w, u, v, pairs)
    losses = [float(loss)]
    for _ in range(steps):
        w.requires_grad_(True)
        loss = memory_loss(w, u, v, pairs)
        (grad,) = torch.autograd.grad(loss, w)
        w = w.detach()
        with torch.no_grad():
            for _ in range(30):
                trial = w - lr * grad
                new = memory_loss(trial, u, v, pairs)
                if new <= loss:
                    w, lr = trial, lr * 1.25
                    break
                lr /= 2
        losses.append(float(memory_loss(w, u, v, pairs)))
    return w.detach(), losses


def random_pairs(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A one-to-one memory of n pairs: input i -> output pi(i) for a random permutation pi, (n, 2)."""
    return torch.stack([torch.arange(n), torch.randperm(n, generator=generator)], dim=1)
