"""Several runs of the same shapes trained together: one stacked forward and backward pass per step
(every weight with a leading run dimension, ``birth.model.simplified_pass.stacked_losses``), then each run's
own optimizer step, freeze schedule, evaluation, metrics, checkpoints and summary.

Each run keeps what it has alone: its directory, its batches (a pure function of its seed and the
step), its initialisation, optimizer state and learning rate. Its parameters are views into the
stacked tensors, so its optimizer (the same ``torch.optim`` object as alone) updates the stack in
place, and its checkpoints are those of a run trained alone: ``birth train --resume`` continues
one, and a stack of runs resumed at the same step continues exactly.

Runs of one stack share what the stacked pass needs equal (``stack_key``): the model's shapes,
batch size and T, the number of steps, the evaluation schedule, device and precision.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from birth.model import simplified_pass as targets
from birth.training.config import TrainConfig, to_dict
from birth.training.exits import NoSpace
from birth.training.loop import Interrupted, Trainee, apply_update, is_eval_step, precision, probe_pass, stop_signals

# model_args that only choose the initial values or what is trained: runs may differ in them
_PER_RUN_MODEL_KEYS = {"freeze_embeddings", "freeze_output", "zero_init", "sqrtd_embeddings", "sin_cos"}


def stack_key(cfg: TrainConfig) -> Optional[str]:
    """Runs with equal keys can train in one stack; None for a run that trains alone (the full
    model, RoPE, a first-layer FFN, a tied output, or a loss on every position)."""
    m = cfg.model_args
    if (not cfg.loss_head_only or m.arch != "simplified" or m.use_rope or m.first_ffn or m.tie_output):
        return None
    d = to_dict(cfg)
    shape = {k: v for k, v in d["model_args"].items() if k not in _PER_RUN_MODEL_KEYS}
    same = (shape, d["optim_args"]["batch_size"], d["data_args"]["seq_length"], d["data_args"]["corpus"],
            cfg.max_iters, cfg.eval_delta, cfg.device, cfg.precision, cfg.interventions)
    return repr(same)


class _Stack:
    """The parameters of several models as (R, ...) leaves; each model's parameters become views of them."""

    def __init__(self, models: Sequence[torch.nn.Module]):
        self.models = list(models)
        self.names = [n for n, _ in models[0].named_parameters()]
        own = [dict(m.named_parameters()) for m in models]
        self.leaves = {n: torch.stack([p[n].detach() for p in own]) for n in self.names}
        for r, params in enumerate(own):
            for n in self.names:
                params[n].data = self.leaves[n][r]  # the optimizer's in-place update writes into the stack
        self.params = own
        self.buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models])
                        for n, _ in models[0].named_buffers()}

    def weights(self) -> targets.Weights:
        return targets.Weights.stacked(self.models[0], {**self.leaves, **self.buffers})

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
        tokens = torch.stack([b.x for b in batches])
        losses = targets.stacked_losses(stack.weights(), tokens, torch.stack([b.y for b in batches]),
                                        torch.stack([b.masks["in_context"] for b in batches]),
                                        hooks=runs[0].interventions.stack_hooks(step, tokens))
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
    stack = _Stack([t.model for t in active])
    step = active[0].start
    max_iters = active[0].cfg.max_iters
    try:
        with stop_signals() as pending:
            for step in range(step, max_iters):
                if pending:
                    raise Interrupted(pending[0])
                ended = []
                for t, s in zip(active, _stacked_step(active, stack, step)):
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
                    stack = _Stack([t.model for t in active])
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
    if len(keys) != 1 or None in keys:
        raise ValueError("train_stacked: the runs differ in what a stack must share "
                         "(birth.launching.stacked.stack_key)")
    runs = [Trainee(c, d, resume=r, quiet=True) for c, d, r in zip(cfgs, run_dirs, resume)]
    done: dict[int, dict] = {}
    for start in sorted({t.start for t in runs}):
        done.update(_train_group([t for t in runs if t.start == start]))
    return [done[id(t)] for t in runs]
