"""Positional encodings: sin/cos tables and rotary angles (RoPE), shared by the model's passes and
the official computation."""
from __future__ import annotations

import math

import torch


def sin_cos_positions(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length).unsqueeze(1)                                      # (L, 1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))        # (d/2,)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe                                                                         # (L, d)


def rope_frequencies(dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))      # (d/2,)
    angles = torch.outer(torch.arange(length).float(), freqs)                         # (L, d/2)
    return torch.polar(torch.ones_like(angles), angles)                               # complex (L, d/2)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotates pairs of features of x (B, H, T, hd) by the position angles freqs (T, hd/2)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))               # (B, H, T, hd/2)
    return torch.view_as_real(xc * freqs).flatten(-2).type_as(x)                      # (B, H, T, hd)
