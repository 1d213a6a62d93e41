"""Lemma 1 and the noisy-input lemma (SPEC §3.2, §3.3) as formulas that tests compare with autograd.

Lemma 1. For L(W) = E_(z,y)~p[ CE(y, W_U W w_E(z)) ] with fixed embeddings,

    grad L(W) = sum_k E_z[ (p_hat_W(k|z) - p(k|z)) w_U(k) w_E(z)^T ],   p_hat_W = softmax(W_U W w_E(z)).

Corollary: from W = 0 (p_hat = 1/N), one step of size eta gives
    W_1 = eta sum_{z,k} p(z) (p(k|z) - 1/N) w_U(k) w_E(z)^T.

Noisy inputs. For L(W) = E_(x,y)[ CE(y, W_U W x) ] with x in R^d,

    grad L(W) = sum_k p(y=k) w_U(k) (mu_hat_k - mu_k)^T,
    mu_k = E[x | y=k],  mu_hat_k = E_x[ p_hat_W(k|x) x ] / p(y=k).

With x = w_E(y) + p_t (y, t uniform) one step from 0 gives (eta/N) sum_k w_U(k) (w_E(k) - mean w_E)^T:
the positional noise, independent of the label, drops out of the update.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


# -- Lemma 1: a linear memory between token embeddings ------------------------------------------
def memory_population_loss(w: torch.Tensor, w_e: torch.Tensor, w_u: torch.Tensor,
                           joint: torch.Tensor) -> torch.Tensor:
    """L(W) = sum_{z,y} p(z, y) CE(y, W_U W w_E(z)); w_e (N_in, d), w_u (N, d), joint (N_in, N)."""
    logp = F.log_softmax(w_e @ w.T @ w_u.T, dim=-1)                                   # (N_in, N)
    return -(joint * logp).sum()


def lemma1_gradient(w: torch.Tensor, w_e: torch.Tensor, w_u: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
    """sum_k sum_z p(z) (p_hat(k|z) - p(k|z)) w_U(k) w_E(z)^T, as a (d, d) matrix."""
    p_z = joint.sum(1)                                                               # (N_in,)
    p_hat = F.softmax(w_e @ w.T @ w_u.T, dim=-1)                                     # (N_in, N)
    delta = p_z[:, None] * p_hat - joint                                             # p(z)(p_hat - p(k|z))
    return w_u.T @ delta.T @ w_e                                                     # (d, N)(N, N_in)(N_in, d)


def one_step_from_zero(eta: float, w_e: torch.Tensor, w_u: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
    """The corollary: eta sum_{z,k} p(z) (p(k|z) - 1/N) w_U(k) w_E(z)^T."""
    n_out = w_u.shape[0]
    alpha = joint - joint.sum(1, keepdim=True) / n_out                               # p(z)(p(k|z) - 1/N)
    return eta * w_u.T @ alpha.T @ w_e


def association_weights(w: torch.Tensor, w_e: torch.Tensor, w_u: torch.Tensor) -> torch.Tensor:
    """alpha (N_in, N) with W = sum_{z,k} alpha[z, k] w_U(k) w_E(z)^T, by least squares (needs d >= N_in, N)."""
    return (torch.linalg.pinv(w_u.T) @ w @ torch.linalg.pinv(w_e)).T


def outside_span(w: torch.Tensor, w_e: torch.Tensor, w_u: torch.Tensor) -> float:
    """Frobenius norm of the part of W outside span{w_U(k) w_E(z)^T} (relative to |W|)."""
    q_u, _ = torch.linalg.qr(w_u.T)                                                  # (d, N) basis of outputs
    q_e, _ = torch.linalg.qr(w_e.T)                                                  # (d, N_in) basis of inputs
    inside = q_u @ (q_u.T @ w @ q_e) @ q_e.T
    return float((w - inside).norm() / w.norm().clamp(min=1e-300))


def gradient_descent(w0: torch.Tensor, w_e: torch.Tensor, w_u: torch.Tensor, joint: torch.Tensor,
                     lr: float, steps: int, weight_decay: float = 0.0) -> list[torch.Tensor]:
    """Iterates of W <- W - lr (grad L(W) + wd W), from w0; grad by Lemma 1 (tests check it is autograd's)."""
    out = [w0]
    for _ in range(steps):
        w = out[-1]
        out.append(w - lr * (lemma1_gradient(w, w_e, w_u, joint) + weight_decay * w))
    return out


# -- the noisy-input lemma -----------------------------------------------------------------------
def noisy_inputs(w_e: torch.Tensor, pos: torch.Tensor,
                 extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs x = w_E(y) + p_t (+ w_E(z) for every z if ``extra``), uniform over (y, t[, z]).

    Returns (x (M, d), y (M,)). Enumerating every combination makes the population exact.
    """
    n, t = w_e.shape[0], pos.shape[0]
    x = (w_e[:, None, :] + pos[None, :, :]).reshape(n * t, -1)                       # (N*T, d)
    y = torch.arange(n).repeat_interleave(t)
    if extra is not None:                                                            # a second noise component
        x = (x[:, None, :] + extra[None, :, :]).reshape(-1, x.shape[1])             # (N*T*Z, d)
        y = y.repeat_interleave(extra.shape[0])
    return x, y


def noisy_loss(w: torch.Tensor, w_u: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of softmax(W_U W x) over the inputs (x, y), all equally likely."""
    return F.cross_entropy(x @ w.T @ w_u.T, y)


def noisy_gradient(w: torch.Tensor, w_u: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum_k p(y=k) w_U(k) (mu_hat_k - mu_k)^T for inputs (x, y) all equally likely."""
    n_out, m = w_u.shape[0], x.shape[0]
    p_hat = F.softmax(x @ w.T @ w_u.T, dim=-1)                                       # (M, N)
    onehot = F.one_hot(y, n_out).to(x.dtype)                                         # (M, N)
    # p(y=k) mu_hat_k = E[p_hat(k|x) x];  p(y=k) mu_k = E[1{y=k} x]
    return w_u.T @ ((p_hat - onehot).T @ x) / m                                     # (d, N)(N, d)


def noisy_one_step(eta: float, w_e: torch.Tensor, w_u: torch.Tensor) -> torch.Tensor:
    """(eta/N) sum_k w_U(k) (w_E(k) - mean_k' w_E(k'))^T: the step from 0 on x = w_E(y) + p_t."""
    return eta / w_e.shape[0] * w_u.T @ (w_e - w_e.mean(0, keepdim=True))


def noisy_accuracy(w: torch.Tensor, w_u: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Population accuracy of argmax_k w_U(k)^T W x."""
    return float(((x @ w.T @ w_u.T).argmax(-1) == y).double().mean())
