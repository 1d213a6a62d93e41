"""Checks a whole config before any work starts; every problem is one ConfigError line that names
the key and the allowed values."""
from __future__ import annotations

import dataclasses

import torch

from birth import tasks
from birth.measures import metric_functions
from birth.plugins import UnknownPlugin
from birth.model.transformer import Transformer
from birth.training.config import ConfigError, ModelArgs, TrainConfig, build_config
from birth.training.build import bf16_cpu, checkpoint_steps, freeze_schedule, resolve_device
from birth.training import interventions
from birth.training.config import all_keys
from birth.training.wandb_log import problem

# Options that only exist in one architecture: setting one in the other is a contradiction.
SIMPLIFIED_ONLY = ("final_ffn", "first_ffn", "use_rope", "sqrtd_embeddings", "no_sqrtd", "zero_init")
FULL_ONLY = ("no_norm", "no_ffn", "linear_ffn", "no_first_layer_ffn", "parallel_ffn", "freeze_wv",
             "freeze_wo", "no_wv", "no_wo")
MAX_LAYERS = 256


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(cfg: TrainConfig, keys: list[str]) -> None:
    for key in keys:
        group, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, group) if group else cfg, name)
        _require(value > 0, f"{key}: must be > 0, got {value}")


def validate(cfg: TrainConfig) -> None:
    """Raises ConfigError for the first problem found; returns None when the config can run."""
    d, m, o = cfg.data_args, cfg.model_args, cfg.optim_args
    _positive(cfg, ["optim_args.learning_rate", "optim_args.batch_size", "optim_args.eps", "model_args.dim",
                    "model_args.max_length", "model_args.n_heads", "model_args.n_layers", "data_args.seq_length",
                    "max_iters", "eval_delta", "eval_batch_size", "keep_checkpoints"])
    _require(o.weight_decay >= 0, f"optim_args.weight_decay: must be >= 0, got {o.weight_decay}")
    for key, value in (("optim_args.momentum", o.momentum), ("optim_args.beta1", o.beta1),
                       ("optim_args.beta2", o.beta2)):
        _require(0 <= value < 1, f"{key}: must be in [0, 1), got {value}")
    _require(cfg.checkpoint_every >= 0,
             f"checkpoint_every: must be >= 0 (0 = only at the end), got {cfg.checkpoint_every}")
    checkpoint_steps(cfg.checkpoint_steps, cfg.max_iters)
    for key in ("seed", "init_seed", "eval_seed"):  # numpy's SeedSequence refuses negative seeds
        _require(getattr(cfg, key) >= 0, f"{key}: must be >= 0, got {getattr(cfg, key)}")
    _require(d.seq_length <= m.max_length,
             f"data_args.seq_length: {d.seq_length} exceeds model_args.max_length={m.max_length}")
    _model(m)
    n = _task(cfg).num_tokens
    device = resolve_device(cfg.device)
    _require(cfg.precision != "bf16" or device.type == "cuda" or bf16_cpu(),
             "precision: bf16 needs CUDA or a CPU with bf16 instructions (AVX512-BF16 or AMX), which this one "
             "lacks; use precision=float32")
    rows = max(n, m.max_length, 4 * m.dim)  # the largest weight is rows x dim
    key = "model_args.max_length" if rows == m.max_length > m.dim else "model_args.dim"  # the bigger culprit
    _require(rows * m.dim < 2 ** 62, f"{key}: a {rows} x {m.dim} weight is too large to represent")
    # Parameter names depend on the architecture flags and depth, not on the sizes: a dim-2 stand-in
    # names them at no cost (a meta-device model would import torch._dynamo, 2 s, for its init).
    with torch.random.fork_rng(devices=[]):
        names_only = Transformer(dataclasses.replace(m, dim=2, n_heads=1, max_length=1), n)
    freeze_schedule(cfg.freeze_until, names_only)
    _interventions(cfg, names_only, n)
    try:
        metric_functions(cfg.metrics)
    except UnknownPlugin as err:
        raise ConfigError(f"metrics: {err}") from None
    if cfg.wandb:  # a missing extra: one line now, not a traceback once the run directory exists
        _require(problem() is None, f"wandb={cfg.wandb}: {problem()}")


def _interventions(cfg: TrainConfig, names_only: Transformer, n: int) -> None:
    """Every intervention parses and fits the model; a graft is checked against the real shapes."""
    try:
        model = names_only
        if any(iv.kind == "set" and iv.args[1:2] != ("ideal",) for iv in interventions.parse(cfg.interventions)):
            with torch.random.fork_rng(devices=[]):
                model = Transformer(cfg.model_args, n)  # a graft is checked against the real shapes
        interventions.check(cfg.interventions, model, interventions.ModelShape.of(cfg.model_args))
    except ValueError as err:
        raise ConfigError(f"interventions: {err}") from None


def _task(cfg: TrainConfig) -> tasks.Task:
    """The task of ``cfg`` built once on the CPU after its own checks (``Task.check``), which raise
    ValueError lines that name the key."""
    try:
        cls = tasks.task_class(cfg.data_args.task)
        cls.check(cfg.data_args, loss_head_only=cfg.loss_head_only)
        return cls(cfg.data_args, "cpu")
    except tasks.UnknownTask as err:
        raise ConfigError(f"data_args.task: {err}") from None
    except ValueError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("data_args.") else f"data_args: {msg}") from None


def _model(m: ModelArgs) -> None:
    defaults = ModelArgs()
    if m.arch == "simplified":
        _require(m.n_layers == 2, f"model_args.n_layers: the simplified model has 2 layers, got {m.n_layers} "
                                  "(use model_args.arch=full for other depths)")
        _require(m.n_heads == 1, f"model_args.n_heads: the simplified model has 1 head, got {m.n_heads} "
                                 "(use model_args.arch=full for several heads)")
        wrong = [k for k in FULL_ONLY if getattr(m, k) != getattr(defaults, k)]
        _require(not wrong, f"model_args.{wrong[0] if wrong else ''}: applies to arch=full only, not arch=simplified")
        _require(not (m.use_rope and m.sin_cos), "model_args.use_rope: cannot be combined with model_args.sin_cos")
    else:
        # a bound, so that naming the parameters (and building the model) cannot run for hours
        _require(m.n_layers <= MAX_LAYERS, f"model_args.n_layers: must be <= {MAX_LAYERS}, got {m.n_layers}")
        wrong = [k for k in SIMPLIFIED_ONLY if getattr(m, k) != getattr(defaults, k)]
        _require(not wrong, f"model_args.{wrong[0] if wrong else ''}: applies to arch=simplified only, not arch=full")
        _require(m.dim % m.n_heads == 0, f"model_args.dim: {m.dim} is not divisible by model_args.n_heads={m.n_heads}")
    _require(not (m.sin_cos or m.use_rope) or m.dim % 2 == 0,
             f"model_args.dim: sin/cos and rotary positions need an even dim, got {m.dim}")
    _require(not (m.tie_output and m.freeze_output and not m.freeze_embeddings and m.arch == "full"),
             "model_args.tie_output: a tied W_U cannot be frozen while the embeddings train "
             "(set model_args.freeze_embeddings too)")


def resolve_config(preset: str | None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Builds and validates a config: the one entry point for user input."""
    cfg = build_config(preset, overrides)
    validate(cfg)
    return cfg


def config_fields_help() -> list[tuple[str, str, str]]:
    """(key, default, description) of every key, for ``birth train --help``."""
    rows = []
    for key, f in all_keys().items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
