"""Run directory names: a stable hash of what a config sets differently from the defaults.

``config_hash`` hashes only the keys, at any depth, whose values differ from their defaults (the
defaults of the config's task for ``data_args.*``), so adding a key with a default renames no run.
``legacy_hash`` is the name the launcher gave a config before that rule (commit ee17ae3: the whole
config, less two keys added at their defaults); ``birth.launching.local`` still finds a run saved
under it.
"""
from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Optional

from birth.training.config import TrainConfig, flat_dict
from birth import tasks

# Every key of the config schema at commit ee17ae3, when runs were named by their whole config.
LEGACY_KEYS = frozenset({
    "bigram_outs_test", "bigram_outs_train", "checkpoint_every", "checkpoint_steps", "data_args.corpus",
    "data_args.fixed_special_toks", "data_args.k", "data_args.no_repeat", "data_args.output_counter",
    "data_args.output_split", "data_args.seq_length", "data_args.show_latents", "data_args.special_toks_offset",
    "device", "eval_batch_size", "eval_delta", "eval_fixed_batch", "eval_seed", "freeze_until", "init_seed",
    "keep_checkpoints", "log_norms", "log_probes", "loss_head_only", "max_iters", "model_args.arch", "model_args.dim",
    "model_args.final_ffn", "model_args.first_ffn", "model_args.freeze_embeddings", "model_args.freeze_output",
    "model_args.freeze_wo", "model_args.freeze_wv", "model_args.linear_ffn", "model_args.linear_final_ffn",
    "model_args.linear_first_ffn", "model_args.max_length", "model_args.n_heads", "model_args.n_layers",
    "model_args.no_ffn", "model_args.no_first_layer_ffn", "model_args.no_norm", "model_args.no_sqrtd",
    "model_args.no_wo", "model_args.no_wv", "model_args.parallel_ffn", "model_args.pre_norm", "model_args.sin_cos",
    "model_args.sqrtd_embeddings", "model_args.tie_output", "model_args.use_rope", "model_args.zero_init",
    "num_data_workers", "optim_args.batch_size", "optim_args.beta1", "optim_args.beta2", "optim_args.eps",
    "optim_args.learning_rate", "optim_args.momentum", "optim_args.use_sgd", "optim_args.weight_decay", "precision",
    "root_dir", "save_dir", "seed", "tensorboard"})
# Their names in that schema, where a key has moved since.
LEGACY_NAMES = {"data_args.bigram_outs_train": "bigram_outs_train", "data_args.bigram_outs_test": "bigram_outs_test"}
# Keys that schema left out of the hash at these defaults (it had added them after the first runs).
LEGACY_LATER = {"precision": "float32", "eval_fixed_batch": True}


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def defaults_of(cfg: TrainConfig) -> dict[str, Any]:
    """Every dotted key of a default config of ``cfg``'s task, with its default value."""
    return dict(_defaults(cfg.data_args.task, tasks.args_class(cfg.data_args.task)))


@functools.lru_cache(maxsize=64)  # per task: a sweep names thousands of runs of one task
def _defaults(task: str, args_class: type) -> dict[str, Any]:
    base = TrainConfig()
    base.data_args = args_class()
    base.data_args.task = task
    return flat_dict(base)


def non_default(cfg: TrainConfig, flat: Optional[dict] = None) -> dict[str, Any]:
    """The dotted keys of ``cfg`` (``flat``: its ``flat_dict``, when at hand) whose values differ from
    their defaults."""
    defaults = _defaults(cfg.data_args.task, tasks.args_class(cfg.data_args.task))
    return {k: v for k, v in (flat or flat_dict(cfg)).items() if defaults.get(k, object()) != v}


def config_hash(cfg: TrainConfig, flat: Optional[dict] = None) -> str:
    """First 12 hex digits of the sha256 of the non-default keys: equal configs, equal names."""
    return _digest(non_default(cfg, flat))


def legacy_hash(cfg: TrainConfig, flat: Optional[dict] = None) -> Optional[str]:
    """The name ``cfg`` had before ``config_hash`` hashed only non-default keys, or None for a
    config that schema could not express (another task, or a later key set)."""
    if cfg.data_args.task != "triggers":
        return None
    defaults = _defaults(cfg.data_args.task, tasks.args_class(cfg.data_args.task))
    legacy: dict[str, Any] = {}
    for key, value in (flat or flat_dict(cfg)).items():
        name = LEGACY_NAMES.get(key, key)
        if name not in LEGACY_KEYS:
            if value != defaults.get(key):
                return None
            continue
        if LEGACY_LATER.get(name, object()) == value:
            continue
        group, _, leaf = name.rpartition(".")
        (legacy.setdefault(group, {}) if group else legacy)[leaf] = value
    return _digest(legacy)
