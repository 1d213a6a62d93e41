"""Builds what a run needs from its config: corpus statistics, the task samplers, the model, the
freeze schedule and the optimizer. Shared by training, plotting and analysis of saved runs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from birth.model.transformer import Transformer, resolve_param_names
from birth.tasks import Batch, Task, make_task
from birth.training.config import ConfigError, TrainConfig
from birth.training.runs import RunDir


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA device is available; use device=auto or cpu")
    return torch.device(name)


def bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (elsewhere autocast to bf16 is emulated, and slow).
    ``BIRTH_NO_BF16=1`` makes it answer no on any CPU, to test the no-bf16 path (torch reads the CPU)."""
    if os.environ.get("BIRTH_NO_BF16", "0") not in ("", "0"):
        return False
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def parse_freeze_until(spec: str) -> list[tuple[int, str]]:
    """``'300:W_O2,W_K2,600:layers.0.attention.wk.weight'`` -> [(300, 'W_O2'), (300, 'W_K2'), (600, ...)].

    An entry without a step takes the step of the entry before it.
    """
    entries: list[tuple[int, str]] = []
    step: Optional[int] = None
    for raw in filter(None, (e.strip() for e in spec.split(","))):
        if ":" in raw:
            head, _, name = raw.partition(":")
            try:
                step = int(head)
            except ValueError:
                raise ConfigError(f"freeze_until: {head!r} is not a step number in {raw!r} "
                                  "(format STEP:NAME,...)") from None
        elif step is None:
            raise ConfigError(f"freeze_until: {raw!r} has no step (format STEP:NAME,...)")
        else:
            name = raw
        if step < 0:
            raise ConfigError(f"freeze_until: negative step {step} in {raw!r}")
        if not name.strip():
            raise ConfigError(f"freeze_until: empty parameter name in {raw!r}")
        entries.append((step, name.strip()))
    return entries


def freeze_schedule(spec: str, model: Transformer) -> dict[str, int]:
    """Parameter name -> step at which it is unfrozen; every name must match a parameter."""
    schedule: dict[str, int] = {}
    for step, name in parse_freeze_until(spec):
        names = resolve_param_names(name, model)
        if not names:
            raise ConfigError(f"freeze_until: {name!r} names no parameter of this model "
                              f"(e.g. W_K1, W_K2, W_O2 or {next(iter(dict(model.named_parameters())))})")
        for n in names:
            schedule[n] = step
    return schedule


def checkpoint_steps(spec: str, max_iters: int) -> set[int]:
    """The steps of ``checkpoint_steps``: numbers, and ``log:N`` = N distinct log-spaced steps in
    [1, max_iters] (all of them when N >= max_iters); ConfigError naming a bad entry."""
    steps: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part.startswith("log:"):
            n = part[4:]
            if not (n.isascii() and n.isdigit() and int(n) > 0):
                raise ConfigError(f"checkpoint_steps: {part!r}: log:N takes a number of steps N >= 1")
            steps |= log_spaced(int(n), max_iters)
        elif part.isascii() and part.isdigit():  # isascii: '²'.isdigit() is True, yet int('²') fails
            steps.add(int(part))
        else:
            raise ConfigError(f"checkpoint_steps: {part!r} is not a non-negative step number or log:N "
                              "(format '100,300' or 'log:40')")
    return steps


def log_spaced(n: int, max_iters: int) -> set[int]:
    """``n`` distinct integer steps spaced evenly in log between 1 and ``max_iters`` (both included)."""
    import numpy as np
    if n >= max_iters:
        return set(range(1, max_iters + 1))
    k = n
    while True:  # rounding merges the small steps: draw more points until n distinct remain
        steps = set(np.unique(np.rint(np.geomspace(1, max_iters, k)).astype(int)).tolist())
        if len(steps) >= n:
            return set(sorted(steps)[:n - 1]) | {max_iters} if len(steps) > n else steps
        k += 1


def apply_freeze(model: Transformer, schedule: dict[str, int], step: int, base: Optional[dict[str, bool]] = None,
                 held: frozenset | set = frozenset()) -> None:
    """Parameters of the schedule train from their step on (the official unfreezing at step i); the
    others as in ``base`` (their trainability at construction, when given); ``held`` ones not at all."""
    for name, p in model.named_parameters():
        if name in held:
            p.requires_grad_(False)
        elif name in schedule:
            p.requires_grad_(step >= schedule[name])
        elif base is not None:
            p.requires_grad_(base[name])


def make_optimizer(cfg: TrainConfig, model: Transformer) -> torch.optim.Optimizer:
    o = cfg.optim_args
    # all parameters, as official: frozen ones get no grad and are skipped (no decay either)
    if o.use_sgd:
        return torch.optim.SGD(model.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay, momentum=o.momentum)
    return torch.optim.AdamW(model.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay,
                             betas=(o.beta1, o.beta2), eps=o.eps)


@dataclass
class Setup:
    """The task distributions and the model of one config, on one device."""

    cfg: TrainConfig
    device: torch.device
    task: Task                     # the training distribution (its fixed ``eval`` batch too)
    ood: dict[str, Task]           # other distributions, one fixed batch each (the paper's: test, split_test)
    model: Transformer

    @property
    def triggers(self) -> Optional[list[int]]:
        """The fixed trigger set of the paper's task (None for random triggers or another task)."""
        return getattr(self.task, "fixed", None)

    @property
    def vocab(self) -> list[str]:
        return list(self.task.vocab)

    def train_batch(self, step: int) -> Batch:
        return self.task.batch(self.cfg.seed, "train", step, self.cfg.optim_args.batch_size)

    def eval_batches(self) -> dict[str, Batch]:
        """The fixed evaluation batches: ``eval`` of the training distribution, one per OOD task."""
        c = self.cfg
        out = {"eval": self.task.batch(c.eval_seed, "eval", 0, c.eval_batch_size)}
        out.update({name: task.batch(c.eval_seed, name, 0, c.eval_batch_size) for name, task in self.ood.items()})
        return out


def build_setup(cfg: TrainConfig, device: Optional[torch.device] = None) -> Setup:
    """Samplers and a freshly initialised model (seeded by ``init_seed`` only)."""
    device = device or resolve_device(cfg.device)
    task = make_task(cfg.data_args, device)
    # init on CPU under a private RNG: the weights depend on init_seed alone, not on the device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        model = Transformer(cfg.model_args, task.num_tokens)
    return Setup(cfg, device, task, task.evaluation_tasks(), model.to(device))


def trained_setup(run_dir, device: torch.device | str = "cpu") -> Setup:
    """The Setup of a saved run with the weights of its newest whole checkpoint (for analysis; a
    damaged newer one is named in one warning line, NoWholeCheckpoint when none is whole)."""
    run = RunDir(run_dir)
    setup = build_setup(run.read_config(), torch.device(device))
    _, state = run.newest_whole_checkpoint(device)
    setup.model.load_state_dict(state["model"])
    setup.model.eval()
    return setup
