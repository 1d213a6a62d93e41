"""The dataclasses that describe the science of a run: the model (``ModelArgs``) and, for each task,
its data (``birth.tasks``: ``TaskArgs`` and its subclasses). Every field carries a one-line
description (``birth train --help`` lists them) and, where it has a closed set of values, its
``choices``. Defaults are those of the official ``ihead_basic_main.py`` except where a help says
otherwise. The run-level keys (optimiser, steps, seeds, output) are ``birth.training.config``'s.
"""
from __future__ import annotations

from dataclasses import dataclass

from birth.fields import documented


_f = documented


@dataclass
class ModelArgs:
    arch: str = _f("simplified", "simplified (paper Sec. 4.2, ihead_basic_model) or full (ihead_full_model)",
                   choices=("simplified", "full"))
    dim: int = _f(64, "model width d")
    max_length: int = _f(256, "number of positional embeddings (>= seq_length)")
    n_layers: int = _f(2, "number of layers (full architecture; the simplified model has 2)")
    n_heads: int = _f(1, "attention heads per layer (full architecture; official full default 4)")
    freeze_embeddings: bool = _f(False, "freeze token (and learned positional) embeddings at init")
    freeze_output: bool = _f(False, "freeze the unembedding W_U at init")
    tie_output: bool = _f(False, "tie W_U to the token embeddings")
    sin_cos: bool = _f(False, "sin/cos positional embeddings instead of random (simplified) or learned (full)")
    # simplified architecture
    final_ffn: bool = _f(False, "simplified: final feed-forward W_F after layer 2")
    first_ffn: bool = _f(False, "simplified: feed-forward after layer 1")
    linear_final_ffn: bool = _f(True, "simplified: final FFN is linear d x d (else ReLU MLP 4d)")
    linear_first_ffn: bool = _f(True, "simplified: first FFN is linear d x d (else ReLU MLP 4d)")
    use_rope: bool = _f(False, "simplified: rotary positions in layer 1 (drops absolute positions)")
    sqrtd_embeddings: bool = _f(False, "simplified: embeddings with variance 1/d (paper) instead of 1 (code)")
    no_sqrtd: bool = _f(False, "simplified: no 1/sqrt(d) attention score scale")
    zero_init: bool = _f(False, "simplified: start W_K1, W_K2, W_O2 at zero (as in the theory)")
    # full architecture
    pre_norm: bool = _f(True, "full: pre-LayerNorm (else post-LayerNorm)")
    no_norm: bool = _f(False, "full: no LayerNorm at all")
    no_ffn: bool = _f(False, "full: no feed-forward in any layer")
    linear_ffn: bool = _f(False, "full: linear feed-forward d x d instead of ReLU MLP 4d")
    no_first_layer_ffn: bool = _f(False, "full: no feed-forward in layer 1")
    parallel_ffn: bool = _f(False, "full: official pre-norm block whose FFN reads the block input")
    freeze_wv: bool = _f(False, "full: freeze every W_V")
    freeze_wo: bool = _f(False, "full: freeze every W_O")
    no_wv: bool = _f(False, "full: W_V = identity")
    no_wo: bool = _f(False, "full: W_O = identity")
    dropout: float = _f(0.0, "full: dropout probability on the embeddings, the attention probabilities and each "
                        "residual branch (minGPT's embd/attn/resid_pdrop), training steps only; 0 = none")
