"""Presets: named starting points of a run's config, as dotted keys (``birth train --preset NAME``)."""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The CPU demo: 3 fixed triggers, T = 64, AdamW; the induction head forms in about 400 steps.
    "quick": {
        "max_iters": 400, "eval_delta": 20, "loss_head_only": True,
        "data_args.k": 3, "data_args.fixed_special_toks": True, "data_args.seq_length": 64,
        "model_args.dim": 128, "model_args.max_length": 64,
        "model_args.freeze_embeddings": True, "model_args.freeze_output": True,
        "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01, "optim_args.weight_decay": 1e-4,
        "optim_args.batch_size": 128, "eval_batch_size": 256, "device": "cpu",
    },
    # Top-down staged training (theory, SPEC §3.4): W_O2 alone, then W_K2 from 300, then W_K1 from 600.
    "staged": {
        "max_iters": 900, "eval_delta": 5, "loss_head_only": True, "freeze_until": "300:W_K2,600:W_K1",
        "data_args.k": 5, "data_args.fixed_special_toks": True,
        "optim_args.use_sgd": True, "optim_args.learning_rate": 0.03, "optim_args.batch_size": 512,
        "model_args.freeze_embeddings": True, "model_args.freeze_output": True, "model_args.dim": 256,
    },
    # The command of the official README (ties to the Figure 3 setting).
    "paper-readme": {
        "max_iters": 1000, "log_probes": True, "eval_delta": 5, "loss_head_only": True,
        "data_args.k": 5, "data_args.fixed_special_toks": True,
        "optim_args.use_sgd": True, "optim_args.learning_rate": 0.03, "optim_args.weight_decay": 1e-4,
        "optim_args.batch_size": 512,
        "model_args.final_ffn": False, "model_args.freeze_embeddings": True,
        "model_args.freeze_output": True, "model_args.dim": 256,
    },
    # Defaults of the official ihead_full_main.py.
    "full": {
        "model_args.arch": "full", "model_args.dim": 128, "model_args.n_heads": 4,
        "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01, "optim_args.weight_decay": 0.01,
        "optim_args.beta2": 0.99, "optim_args.batch_size": 64, "loss_head_only": False,
    },
    # In-context Markov chains on CPU (Edelman et al.'s setting: 3 states, T = 100, batch 64, a
    # 2-layer attention-only model, AdamW beta2 0.95; sin/cos positions stand in for their relative
    # ones, lr 1e-2 instead of 5e-4 to learn in 600 steps): the loss passes the unigram strategy's
    # level and ends 0.015-0.02 nats above the ngram (Bayes) strategy's.
    "markov-quick": {
        "data_args.task": "markov", "data_args.seq_length": 100, "max_iters": 600, "eval_delta": 20,
        "loss_head_only": False, "model_args.arch": "full", "model_args.no_ffn": True, "model_args.n_layers": 2,
        "model_args.n_heads": 1, "model_args.dim": 16, "model_args.max_length": 100, "model_args.sin_cos": True,
        "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01, "optim_args.weight_decay": 0.01,
        "optim_args.beta2": 0.95, "optim_args.batch_size": 64, "eval_batch_size": 256, "device": "cpu",
    },
    # Repeated random tokens with a random period per sequence (no fixed offset to copy from): an
    # induction head forms in about 250 steps and the in-context loss falls from log V to about 0.5.
    "repeat-quick": {
        "data_args.task": "repeat", "data_args.vocab_size": 64, "data_args.seq_length": 64,
        "data_args.random_period": True, "max_iters": 500, "eval_delta": 20, "loss_head_only": False,
        "model_args.arch": "full", "model_args.no_ffn": True, "model_args.n_layers": 2, "model_args.n_heads": 1,
        "model_args.dim": 32, "model_args.max_length": 64,
        "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01, "optim_args.weight_decay": 0.01,
        "optim_args.beta2": 0.95, "optim_args.batch_size": 64, "eval_batch_size": 256, "device": "cpu",
    },
}
