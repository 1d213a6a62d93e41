"""Checks a whole config before any work starts; every problem is one ConfigError line that names
the key and the allowed values."""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional

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


def validate(cfg: TrainConfig, memo: Optional[dict] = None) -> None:
    """Raises ConfigError for the first problem found; returns None when the config can run.
    ``memo``: the checks of one planning (a sweep's runs), each done once per distinct input."""
    memo = {} if memo is None else memo
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
    task = _once(memo, ("task", repr(d), cfg.loss_head_only), lambda: _task(cfg))
    n = task.num_tokens
    device = resolve_device(cfg.device)
    _require(cfg.precision != "bf16" or device.type == "cuda" or bf16_cpu(),
             "precision: bf16 needs CUDA or a CPU with bf16 instructions (AVX512-BF16 or AMX), which this one "
             "lacks; use precision=float32")
    rows = max(n, m.max_length, 4 * m.dim)  # the largest weight is rows x dim
    key = "model_args.max_length" if rows == m.max_length > m.dim else "model_args.dim"  # the bigger culprit
    _require(rows * m.dim < 2 ** 62, f"{key}: a {rows} x {m.dim} weight is too large to represent")
    stand_in = dataclasses.replace(m, dim=2, n_heads=1, max_length=1)
    names_only = _once(memo, ("names", repr(stand_in), n), lambda: _names_only(stand_in, n))
    _once(memo, ("freeze", cfg.freeze_until, repr(stand_in)), lambda: freeze_schedule(cfg.freeze_until, names_only))
    _once(memo, ("interventions", cfg.interventions, repr(m), n), lambda: _interventions(cfg, names_only, n))
    _once(memo, ("metrics", cfg.metrics), lambda: _metrics(cfg.metrics))
    _once(memo, ("memory", repr(d), repr(m), o.batch_size, cfg.eval_batch_size, device),
          lambda: _memory(cfg, task, device))
    if cfg.wandb:  # a missing extra: one line now, not a traceback once the run directory exists
        _require(problem() is None, f"wandb={cfg.wandb}: {problem()}")


def _once(memo: dict, key, check):
    """``check()``, once per ``key`` in ``memo`` (its result kept); a failing check raises each time."""
    if key not in memo:
        memo[key] = check()
    return memo[key]


def _names_only(stand_in: ModelArgs, n: int) -> Transformer:
    # Parameter names depend on the architecture flags and depth, not on the sizes: a dim-2 stand-in
    # names them at no cost (a meta-device model would import torch._dynamo, 2 s, for its init).
    with torch.random.fork_rng(devices=[]):
        return Transformer(stand_in, n)


def _metrics(spec: str) -> None:
    try:
        metric_functions(spec)
    except UnknownPlugin as err:
        raise ConfigError(f"metrics: {err}") from None


def memory_need(cfg: TrainConfig, task: tasks.Task) -> dict[str, int]:
    """About the bytes a training step, the evaluation and the task's strategies hold at once, by
    part: a bound to refuse what cannot fit, not a measurement (float32 weights, their gradients
    and two optimizer moments; logits, their softmax and gradient; attention scores and patterns)."""
    m, o = cfg.model_args, cfg.optim_args
    n, t = task.num_tokens, cfg.data_args.seq_length
    heads = m.n_heads if m.arch == "full" else 1
    layers = m.n_layers if m.arch == "full" else 2
    weights = 4 * 4 * (n * m.dim * 2 + m.max_length * m.dim + layers * 12 * m.dim * m.dim)
    step = o.batch_size * t * (3 * 4 * n + layers * (3 * 4 * heads * t + 10 * 4 * m.dim))
    # the evaluation batch's logits, and their KL to the strategies: six float64 temporaries at once
    evaluation = cfg.eval_batch_size * t * (4 + 8 * 6) * n
    return {"weights": weights, "step": step, "evaluation": evaluation,
            "strategies": task.strategy_bytes(cfg.eval_batch_size)}


def available_memory(device: torch.device) -> int:
    """Bytes free for a run: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _memory(cfg: TrainConfig, task: tasks.Task, device: torch.device) -> None:
    """ConfigError (one line, naming the key that sets the biggest part) for a run that cannot fit:
    checked before anything is allocated."""
    need = memory_need(cfg, task)
    have = available_memory(device)
    total = sum(need.values())
    if total <= 0.9 * have:  # the estimate is rough (measured within 5% at N = 8192 on the repeat task)
        return
    biggest = max(need, key=need.get)
    key = {"weights": "model_args.dim", "step": "optim_args.batch_size", "evaluation": "eval_batch_size",
           "strategies": task.vocab_key}[biggest]
    gib = lambda b: f"{b / 2 ** 30:.1f} GiB"
    raise ConfigError(f"{key}: a run of this size needs about {gib(total)} ({biggest} {gib(need[biggest])}, with "
                      f"N = {task.num_tokens} tokens, T = {cfg.data_args.seq_length}), more than the {gib(have)} "
                      f"free on {device.type}; lower it (or the batch sizes)")


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
    _require(0 <= m.dropout < 1, f"model_args.dropout: must be in [0, 1), got {m.dropout}")
    if m.arch == "simplified":
        _require(m.dropout == 0, "model_args.dropout: the simplified model has no dropout (full architecture only)")
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


def resolve_config(preset: str | None, overrides: list[str] | dict | None = None,
                   warn=lambda line: print(line, file=sys.stderr), memo: Optional[dict] = None) -> TrainConfig:
    """Builds and validates a config: the one entry point for user input. What is valid but likely
    unintended (``notices``) is said through ``warn``, one line each; ``memo``: see ``validate``."""
    cfg = build_config(preset, overrides)
    validate(cfg, memo)
    for line in notices(cfg):
        warn(line)
    return cfg


def notices(cfg: TrainConfig) -> list[str]:
    """Warnings for settings that run but may not do what was meant: a checkpoint step or an
    intervention window past the end of training."""
    out = []
    late = sorted(s for s in checkpoint_steps(cfg.checkpoint_steps, cfg.max_iters) if s > cfg.max_iters)
    if late:
        out.append(f"birth: warning: checkpoint_steps: {', '.join(map(str, late))} past max_iters={cfg.max_iters}: "
                   "never saved")
    for iv in interventions.parse(cfg.interventions):
        if iv.start >= cfg.max_iters:
            out.append(f"birth: warning: interventions: {iv.text()} starts at or after max_iters={cfg.max_iters}: "
                       "it never acts")
        elif iv.end is not None and iv.end > cfg.max_iters:
            out.append(f"birth: warning: interventions: {iv.text()} ends after max_iters={cfg.max_iters}: it acts "
                       "until the end of training")
    return out


def config_fields_help() -> list[tuple[str, str, str]]:
    """(key, default, description) of every key, for ``birth train --help``."""
    rows = []
    for key, f in all_keys().items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
