"""Several runs of the same shapes trained together: one stacked forward and backward pass per step
(every weight with a leading run dimension), then each run's own optimizer step, freeze schedule,
evaluation, metrics, checkpoints and summary. The pass is the simplified model's rearranged stack
(``birth.model.simplified_pass.stacked_losses``) where it applies, else the model's own forward
mapped over the runs (``birth.model.stacked_pass``): every architecture and every task stacks.

Each run keeps what it has alone: its directory, its batches (a pure function of its seed and the
step), its initialisation, optimizer state and learning rate. Its parameters are views into the
stacked tensors, so its optimizer (the same ``torch.optim`` object as alone) updates the stack in
place, and its checkpoints are those of a run trained alone: ``birth train --resume`` continues
one, and a stack of runs resumed at the same step continues exactly.

Runs of one stack share what the stacked pass needs equal (``stack_key``): the model's shapes, the
loss, batch size, the number of steps, the evaluation schedule, device, precision and
interventions, and what their task declares (``Task.stack_keys``: the data arguments that fix the
shape of a batch and the vocabulary).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from birth import tasks
from birth.model import simplified_pass
from birth.model.stacked_pass import vmapped_losses
from birth.training.config import TrainConfig, to_dict
from birth.training.exits import NoSpace
from birth.training.loop import Interrupted, Trainee, apply_update, is_eval_step, precision, probe_pass, stop_signals

# model_args that only choose the initial values or what is trained: runs may differ in them
PER_RUN_MODEL_KEYS = {"simplified": {"freeze_embeddings", "freeze_output", "zero_init", "sqrtd_embeddings", "sin_cos"},
                      "full": {"freeze_embeddings", "freeze_output", "freeze_wv", "freeze_wo"}}


@dataclass(frozen=True)
class StackKey:
    """Runs with equal ``key`` can train in one stack; ``key`` None for a run that trains alone, and
    ``why`` says why."""

    key: Optional[str]
    why: str = ""


def rearranged(cfg: TrainConfig) -> bool:
    """Whether a stack of ``cfg``'s runs takes the simplified model's rearranged pass (targets only)."""
    m = cfg.model_args
    return cfg.loss_head_only and m.arch == "simplified" and not (m.use_rope or m.first_ffn or m.tie_output)


def stack_key(cfg: TrainConfig) -> StackKey:
    """What runs of one stack must share, as one string (``StackKey``)."""
    if cfg.model_args.dropout > 0:  # one stacked pass cannot draw each run the masks it draws alone
        return StackKey(None, "dropout draws random masks per run")
    d = to_dict(cfg)
    shape = {k: v for k, v in d["model_args"].items() if k not in PER_RUN_MODEL_KEYS[cfg.model_args.arch]}
    declared = tasks.task_class(cfg.data_args.task).stack_keys
    data = {k: v for k, v in d["data_args"].items() if declared is None or k in declared or k == "task"}
    if declared is not None:
        data.pop("task")  # the declared keys fix the batches' shapes, whichever task draws them
    same = (shape, data, d["optim_args"]["batch_size"], cfg.loss_head_only, cfg.max_iters, cfg.eval_delta,
            cfg.device, cfg.precision, cfg.interventions)
    return StackKey(repr(same))


class _Stack:
    """The parameters of several models as (R, ...) leaves; each model's parameters become views of them."""

    def __init__(self, models: Sequence[torch.nn.Module], cfg: TrainConfig):
        self.models = list(models)
        self.cfg = cfg
        self.names = [n for n, _ in models[0].named_parameters()]
        own = [dict(m.named_parameters()) for m in models]
        self.leaves = {n: torch.stack([p[n].detach() for p in own]) for n in self.names}
        for r, params in enumerate(own):
            for n in self.names:
                params[n].data = self.leaves[n][r]  # the optimizer's in-place update writes into the stack
        self.params = own
        self.buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models])
                        for n, _ in models[0].named_buffers()}

    def weights(self) -> simplified_pass.Weights:
        """The stack's weights as the rearranged pass reads them (``rearranged``)."""
        return simplified_pass.Weights.stacked(self.models[0], {**self.leaves, **self.buffers})

    def losses(self, batches: list, hooks) -> torch.Tensor:
        """Each run's loss on its batch (R,): at the in-context targets, or at every position."""
        tokens, y = torch.stack([b.x for b in batches]), torch.stack([b.y for b in batches])
        if self.cfg.loss_head_only:
            targets = torch.stack([b.masks["in_context"] for b in batches])
        else:
            targets = torch.ones_like(y, dtype=torch.bool)
        if rearranged(self.cfg):
            return simplified_pass.stacked_losses(self.weights(), tokens, y, targets, hooks=hooks(tokens))
        # the first run's model computes: its hook points hold the (shared) interventions
        return vmapped_losses(self.models[0], self.leaves, self.buffers, tokens, y, targets)

    def prepare(self) -> None:
        """Each leaf takes gradients where at least one run trains that parameter at this step."""
        for n, leaf in self.leaves.items():
            leaf.grad = None
            leaf.requires_grad_(any(p[n].requires_grad for p in self.params))

    def hand_out(self, r: int) -> None:
        """Run r's slice of each gradient, to the parameters run r trains at this step."""
        for n, leaf in self.leaves.items():
            p = self.params[r][n]
            p.grad = leaf.grad[r] if p.requires_grad and leaf.grad is not None else None


def _stacked_step(runs: Sequence[Trainee], stack: _Stack, step: int) -> list:
    """One update of every run on its batch ``step``: per run, what evaluating it needs (``Stepped``)
    on evaluation steps, None on others, or the FloatingPointError that ends it."""
    cfg = runs[0].cfg
    for t in runs:
        t.prepare_step(step)
    batches = [t.setup.train_batch(step) for t in runs]
    is_eval = is_eval_step(cfg, step)
    # the probes of each training batch, on the weights before the update, in float32
    probes = [probe_pass(t.model, b.x) if is_eval else (None, None) for t, b in zip(runs, batches)]
    stack.prepare()
    with precision(cfg, runs[0].setup.device):
        losses = stack.losses(batches, lambda tokens: runs[0].interventions.stack_hooks(step, tokens))
    finite = torch.isfinite(losses.detach())
    if finite.any():
        losses[finite].sum().backward()  # runs are independent: each slice gets its own run's gradient
    out: list = []
    for r, (t, b) in enumerate(zip(runs, batches)):
        if not finite[r]:
            out.append(FloatingPointError(f"non-finite loss {losses[r].item()}"))
            continue
        stack.hand_out(r)
        try:
            out.append(apply_update(cfg, t.model, t.optimizer, b, losses[r].item(), *probes[r], is_eval))
        except FloatingPointError as err:
            out.append(err)
    return out


def _train_group(runs: list[Trainee]) -> dict[int, dict]:
    """Trains runs that start at the same step as one stack; their summaries by id."""
    done: dict[int, dict] = {}
    active = list(runs)
    stack = _Stack([t.model for t in active], active[0].cfg)
    step = active[0].start
    max_iters = active[0].cfg.max_iters
    try:
        with stop_signals() as pending:
            for step in range(step, max_iters):
                if pending:
                    raise Interrupted(pending[0])
                ended = []
                t0 = time.perf_counter()
                stepped = _stacked_step(active, stack, step)
                share = (time.perf_counter() - t0) / len(active)  # each run's part of the stacked step
                for t in active:
                    t.timings.add("training step (stacked)", share)
                for t, s in zip(active, stepped):
                    try:
                        if isinstance(s, FloatingPointError):
                            raise s
                        t.record(step, s)
                    except FloatingPointError as err:
                        done[id(t)] = t.diverged(err, step)
                        ended.append(t)
                    except NoSpace as err:
                        done[id(t)] = t.no_space(err, step)
                        ended.append(t)
                if ended:  # the others go on as a smaller stack
                    active = [t for t in active if t not in ended]
                    if not active:
                        return done
                    stack = _Stack([t.model for t in active], active[0].cfg)
            for t in active:
                try:
                    done[id(t)] = t.completed()
                except NoSpace as err:
                    done[id(t)] = t.no_space(err, step)
    except Interrupted as stop:
        for t in active:
            done[id(t)] = t.interrupted(stop, step)
    return done


def train_stacked(cfgs: Sequence[TrainConfig], run_dirs: Sequence[str | Path],
                  resume: Sequence[bool]) -> list[dict]:
    """Trains ``cfgs`` (equal ``stack_key``) into ``run_dirs`` (prepared by the caller, who holds
    their locks), those marked in ``resume`` from their checkpoints; returns their summaries. Runs
    that resume at different steps train in one stack per starting step."""
    keys = {stack_key(c) for c in cfgs}
    if len(keys) != 1 or any(k.key is None for k in keys):
        raise ValueError("train_stacked: the runs differ in what a stack must share "
                         "(birth.launching.stacked.stack_key)")
    runs = [Trainee(c, d, resume=r, quiet=True) for c, d, r in zip(cfgs, run_dirs, resume)]
    done: dict[int, dict] = {}
    for start in sorted({t.start for t in runs}):
        done.update(_train_group([t for t in runs if t.start == start]))
    return [done[id(t)] for t in runs]
