"""The training loop: one fresh batch per step, the freeze schedule, evaluation every
``eval_delta`` steps (``birth.training.evaluation``: the task's metrics on the training batch, the
fixed evaluation and OOD batches, progress measures, callbacks), checkpoints, exact resume, clean
stop on SIGINT/SIGTERM, divergence detection.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from birth.tasks.triggers.probes import weight_norms
from birth.tasks import Batch, stream_generator
from birth.training.build import Setup, apply_freeze, build_setup, checkpoint_steps, freeze_schedule, make_optimizer
from birth.training.config import TrainConfig, to_dict
from birth.training.evaluation import Evaluator, Stepped, evaluating, training_loss
from birth.training.exits import EXIT_DIVERGED, EXIT_NO_SPACE, NoSpace
from birth.training.interventions import Interventions
from birth.training.runs import MetricsWriter, RunDir, VectorWriter, atomic_write_bytes
from birth.training.timings import Timings
from birth.training.tensorboard import open_log
from birth.training.wandb_log import open_run


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def headline_accuracy(metrics: dict, key: str = "acc_end") -> str:
    """The key of the in-context accuracy a run reports (``key``: the task's name for it): on the
    fixed evaluation batch, or out of distribution where there is none (eval_fixed_batch=false)."""
    return f"eval_{key}" if f"eval_{key}" in metrics else f"{key}_test"


def precision(cfg: TrainConfig, device: torch.device):
    """The context of a training step's forward pass: bfloat16 autocast for ``precision=bf16``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def step_loss(cfg: TrainConfig, model, batch: Batch, keep: bool):
    """(loss, logits, patterns) of a training step on ``batch``; the logits and attention patterns
    only with ``keep`` (for the probes), else the loss alone, at the targets only where it can."""
    if not keep and cfg.loss_head_only:  # the simplified model then computes layer 2 at the targets only
        m = batch.masks["in_context"]
        return F.cross_entropy(model(batch.x, targets=m), batch.y[m]), None, None
    out = model(batch.x, return_attn=keep)
    pred, patterns = out if keep else (out, None)
    return training_loss(cfg.loss_head_only, pred, batch), pred, patterns


@contextmanager
def stop_signals():
    """SIGINT/SIGTERM raise ``Interrupted`` between steps, not in the middle of a write."""
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: pending.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _as_tensor(data: bytearray) -> torch.Tensor:
    """Bytes as a uint8 tensor (what weights-only checkpoint loading accepts)."""
    return torch.from_numpy(np.frombuffer(bytes(data), dtype=np.uint8).copy())


def params_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Trainee:
    """One run in training: its directory (prepared by the caller, who holds its lock), model,
    optimizer, freeze schedule, metrics, checkpoints and summary. ``train`` drives one;
    ``birth.launching.stacked`` drives several through one stacked step."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, quiet: bool = False,
                 callbacks: Sequence = (), hooks: Optional[dict] = None):
        self.cfg = cfg
        self.timings = Timings()
        started = time.perf_counter()
        self.run = run = RunDir(run_dir)
        run.remove_temporaries()  # left by a process killed in the middle of a write
        self.setup = build_setup(cfg)
        self.model = self.setup.model
        self.schedule = freeze_schedule(cfg.freeze_until, self.model)
        self.base_trainable = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for name, fn in (hooks or {}).items():  # a user's TransformerLens-style hooks: points or modules
            self.model.add_hook(name, fn)
        self.interventions = Interventions(cfg.interventions, self.model, self.setup.triggers, cfg.data_args.seq_length)
        self.optimizer = make_optimizer(cfg, self.model)
        restored = _restore(run, self.setup, self.optimizer) if resume else None
        if restored is None:  # a resumed run continues from its checkpoint's RNG state instead
            seed_dropout(cfg)
        self.start, offsets, self.elapsed_before = restored or (0, {}, 0.0)
        self.evaluator = Evaluator(self.setup, callbacks, timings=self.timings)
        if restored is None:
            run.write_config(cfg)
            run.write_task(task_info(self.setup, self.evaluator))
        acc = self.setup.task.metric_key("acc", "in_context")
        self.accuracy_key = f"eval_{acc}" if cfg.eval_fixed_batch else f"{acc}_test"  # what transition reads
        self.writer = MetricsWriter(run.metrics_path, truncate_to=offsets.get("metrics", 0))
        self.positions = VectorWriter(run.positions_path, truncate_to=offsets.get("positions", 0))
        # trackers: log(record) after each metrics line, close() at the end
        self.trackers = [t for t in (open_log(cfg, run.path, self.setup, self.start), open_run(cfg, run.path)) if t]
        self.keep_steps = checkpoint_steps(cfg.checkpoint_steps, cfg.max_iters)
        self.summary = {"status": "running", "config": to_dict(cfg), "floors": run.read_task()["floors"],
                        "device": str(self.setup.device), "start_step": self.start, "threads": torch.get_num_threads(),
                        "training_pass": self.interventions.describe_pass(cfg.optim_args.batch_size,
                                                                          cfg.data_args.seq_length, cfg.loss_head_only),
                        "hook_points": self.interventions.hook_points(),
                        "interventions": [iv.text() for iv in self.interventions.entries]}
        run.write_summary(self.summary)
        self.last: dict = {}
        self.t0 = time.perf_counter()
        self.timings.add("start-up (task, strategies, floors, model)", self.t0 - started)
        self.bar = _progress(cfg.max_iters, self.start, quiet)

    def _finish(self, step: int, code: int) -> dict:
        """Closes the run's outputs and writes its final summary, however it ended."""
        self.bar.close()
        for tracker in self.trackers:
            tracker.close()
        self.writer.close()
        self.positions.close()
        now = time.perf_counter()
        o, d = self.cfg.optim_args, self.cfg.data_args
        self.summary.update(steps=step, final_metrics=dict(self.last), exit_code=code, profile=self.timings.rounded(),
                            wall_seconds=round(self.elapsed_before + now - self.t0, 3),
                            tokens_per_s=round((step - self.start) * o.batch_size * d.seq_length
                                               / max(now - self.t0, 1e-9)),
                            checkpoint=str(self.run.latest_checkpoint() or ""),
                            transition=transition(self.writer.content, self.accuracy_key))
        try:
            self.run.write_summary(self.summary)
        except NoSpace:
            if code != EXIT_NO_SPACE:
                raise
            # the disk is still full: summary.json keeps its previous whole content; --resume needs no more
        return self.summary

    def prepare_step(self, step: int) -> None:
        """Before the forward pass of ``step``: what trains (freeze schedule, held sets), and the
        interventions of this step (sets on the weights, the clamps' and ablations' window)."""
        self.model.step = step  # what hooks read as hook.context.step
        self.model.train()  # dropout acts in the step's passes; evaluation takes eval mode and gives it back
        apply_freeze(self.model, self.schedule, step, self.base_trainable, self.interventions.held(step))
        self.interventions.before_step(step)

    def checkpoint(self, step: int) -> Path:
        with self.timings.timed("checkpoints"):
            return self._checkpoint(step)

    def _checkpoint(self, step: int) -> Path:
        self.writer.sync()
        self.positions.sync()
        # copies: in a stack the parameters are views, and saving a view would save the whole stack
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        state = {"step": step, "model": weights, "optimizer": self.optimizer.state_dict(),
                 "rng_cpu": torch.get_rng_state(), "metrics_offset": self.writer.offset,
                 "metrics": self.writer.content.decode(), "positions_offset": self.positions.offset,
                 "positions": _as_tensor(self.positions.content),
                 "elapsed": self.elapsed_before + time.perf_counter() - self.t0, "config": to_dict(self.cfg)}
        if self.setup.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.setup.device)
        return self.run.save_checkpoint(state, step, self.cfg.keep_checkpoints, self.keep_steps)

    def record(self, step: int, stepped: Optional["Stepped"]) -> None:
        """After the update of ``step``: its metrics line (evaluation steps), due checkpoints, the bar."""
        if stepped is not None:
            ev = self.evaluator(step, stepped)
            self.last = ev.metrics
            # seconds of training so far, across resumes: the one field that measures the machine
            self.last["elapsed"] = round(self.elapsed_before + time.perf_counter() - self.t0, 3)
            self.writer.write(self.last)
            if "loss_by_position" in ev.vectors:
                self.positions.write(step, ev.vectors["loss_by_position"].cpu().numpy())
            for tracker in self.trackers:
                tracker.log(self.last)
        every = self.cfg.checkpoint_every
        if every and (step + 1) % every == 0 or (step + 1) in self.keep_steps:
            # parameters are only checked on evaluation steps: never save a non-finite one as "good"
            if not params_finite(self.model):
                raise FloatingPointError("non-finite parameter after the update")
            self.checkpoint(step + 1)
        self.bar.update(1)
        if "loss" in self.last and self.last.get("iter") == step:
            acc = headline_accuracy(self.last, self.setup.task.metric_key("acc", "in_context"))
            self.bar.set_postfix({"train_loss": f"{self.last['loss']:.3f}", acc: f"{self.last.get(acc) or 0:.3f}"})

    def completed(self) -> dict:
        self.checkpoint(self.cfg.max_iters)
        self.summary.update(status="completed")
        return self._finish(self.cfg.max_iters, code=0)

    def interrupted(self, stop: Interrupted, step: int) -> dict:
        self.bar.close()  # before the message, so that the resume hint is the last line on screen
        try:
            path = self.checkpoint(step)
        except NoSpace as err:
            return self.no_space(err, step)
        self.summary.update(status="interrupted", signal=str(stop), step=step)
        print(f"birth: {stop} at step {step}; checkpoint {path}\n"
              f"resume with: birth train --resume {self.run.path}", file=sys.stderr)
        return self._finish(step, code=128 + stop.signum)

    def no_space(self, err: NoSpace, step: int) -> dict:
        """Stops a run that could not write a file: one line naming it, exit code EXIT_NO_SPACE."""
        self.bar.close()
        good = self.run.latest_checkpoint()
        self.summary.update(status="no_space", reason=str(err), step=step, last_good_checkpoint=str(good or ""))
        print(f"birth: {err}; stopped at step {step}, newest complete checkpoint {good or '(none)'}; "
              f"free space, then: birth train --resume {self.run.path}", file=sys.stderr)
        return self._finish(step, code=EXIT_NO_SPACE)

    def diverged(self, err: FloatingPointError, step: int) -> dict:
        self.bar.close()
        good = self.run.latest_checkpoint()
        self.summary.update(status="diverged", diverged_at=step, reason=str(err), last_good_checkpoint=str(good or ""))
        print(f"birth: run diverged at step {step} ({err}); kept the last good checkpoint "
              f"{good or '(none)'}", file=sys.stderr)
        return self._finish(step, code=EXIT_DIVERGED)


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, quiet: bool = False,
          callbacks: Sequence = (), hooks: Optional[dict] = None) -> dict:
    """Trains ``cfg`` into ``run_dir`` (prepared by the caller, who holds its lock); returns the
    summary. ``callbacks``: metric functions of your own, called at every evaluation after the
    package's (``birth.training.evaluation``); ``hooks``: {hook point: fn(tensor, hook)} acting in
    every pass (``birth.model.hooks``)."""
    t = Trainee(cfg, run_dir, resume=resume, quiet=quiet, callbacks=callbacks, hooks=hooks)
    step = t.start
    try:
        with stop_signals() as pending:
            for step in range(t.start, cfg.max_iters):
                if pending:
                    raise Interrupted(pending[0])
                # raises on divergence: ``t.last`` stays the last good line
                t.prepare_step(step)
                t.record(step, _train_step(t.setup, t.optimizer, step, t.timings))
            return t.completed()
    except Interrupted as stop:
        return t.interrupted(stop, step)
    except NoSpace as err:
        return t.no_space(err, step)
    except FloatingPointError as err:
        return t.diverged(err, step)


def seed_dropout(cfg: TrainConfig) -> None:
    """Seeds the global torch RNG, which dropout draws its masks from, from the run's data seed (a
    stream of its own, apart from ``init_seed``'s): the masks are a function of the config. Without
    dropout nothing in training draws from it, and it is left alone."""
    if cfg.model_args.dropout > 0:
        torch.manual_seed(stream_generator(cfg.seed, "dropout", 0, "cpu").initial_seed())


def _restore(run: RunDir, setup: Setup, optimizer) -> Optional[tuple[int, dict, float]]:
    """Loads the newest valid checkpoint into the model, optimizer and RNGs; returns (step, the
    offsets of metrics.jsonl and loss_by_position.bin, elapsed), or None when there is none (the run
    then starts over). Damaged checkpoints are skipped with one warning line."""
    damaged = []
    for _, path in reversed(run.checkpoints()):
        state, why = run.try_checkpoint(path, setup.device)
        try:
            if state is None:
                raise ValueError(why)
            _check_state(state, setup.model)
        except ValueError as err:
            damaged.append(f"{path.name} ({err})")
            continue
        if damaged:
            print(f"birth: warning: damaged checkpoint {'; '.join(damaged)}; resuming from {path.name}",
                  file=sys.stderr)
        setup.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if "rng_cuda" in state and setup.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), setup.device)
        if "metrics" in state:  # the checkpoint's own copy: exact even if metrics.jsonl was damaged or cut short
            atomic_write_bytes(run.metrics_path, state["metrics"].encode())
        positions = state.get("positions")
        atomic_write_bytes(run.positions_path, positions.numpy().tobytes() if positions is not None else b"")
        offsets = {"metrics": int(state["metrics_offset"]), "positions": int(state.get("positions_offset", 0))}
        return int(state["step"]), offsets, float(state.get("elapsed", 0.0))
    if damaged:
        print(f"birth: warning: no valid checkpoint in {run.path} (damaged: {'; '.join(damaged)}); "
              "starting over from step 0", file=sys.stderr)
    return None


def _check_state(state, model: torch.nn.Module) -> None:
    """Raises ValueError unless ``state`` is a whole checkpoint of ``model``: checked before anything
    is loaded, so that a bad one leaves the model untouched for the next candidate."""
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "rng_cpu", "metrics_offset"} <= set(state):
        raise ValueError("not a birth checkpoint (keys missing)")
    own = model.state_dict()
    if set(state["model"]) != set(own) or any(state["model"][k].shape != v.shape for k, v in own.items()):
        raise ValueError("its weights do not fit this run's model")


def is_eval_step(cfg: TrainConfig, step: int) -> bool:
    return step % cfg.eval_delta == 0 or step == cfg.max_iters - 1


def _train_step(setup: Setup, optimizer, step: int, timings: Timings) -> Optional[Stepped]:
    """One update on batch ``step`` (after ``Trainee.prepare_step``); returns what evaluating it needs
    on evaluation steps, else None. Raises FloatingPointError for a non-finite loss, or a non-finite
    parameter on an evaluation step."""
    cfg, model = setup.cfg, setup.model
    with timings.timed("data: the training batch"):
        batch = setup.train_batch(step)
    is_eval = is_eval_step(cfg, step)
    with timings.timed("training step, evaluation steps (with the probes' pass)" if is_eval else "training step"):
        return _update(cfg, model, optimizer, batch, is_eval, setup.device)


def _update(cfg: TrainConfig, model, optimizer, batch: Batch, is_eval: bool, device) -> Optional[Stepped]:
    optimizer.zero_grad(set_to_none=True)
    # the probes read the training pass itself, unless it is bf16 or drops units: they stay float32
    # and see no dropout, in a pass of their own on the same weights
    shared = is_eval and cfg.precision == "float32" and cfg.model_args.dropout == 0
    with precision(cfg, device):
        loss, pred, patterns = step_loss(cfg, model, batch, keep=shared)
    if is_eval and not shared:
        pred, patterns = probe_pass(model, batch.x)
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"non-finite loss {loss.item()}")
    loss.backward()
    return apply_update(cfg, model, optimizer, batch, loss.item(), pred, patterns, is_eval)


@torch.no_grad()
def probe_pass(model, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Logits and attention patterns of a training batch for its probes, in float32, no gradient,
    eval mode (one pass over the whole batch, as its training pass)."""
    with evaluating(model):
        return model(x, return_attn=True)


def apply_update(cfg: TrainConfig, model, optimizer, batch: Batch, loss: float, pred, patterns,
                 is_eval: bool) -> Optional[Stepped]:
    """After the backward pass: the gradient norms (evaluation steps, before the step), the
    optimizer step, then what evaluating it needs; FloatingPointError for a non-finite parameter."""
    norms = weight_norms(model, cfg.log_norms) if is_eval else {}
    optimizer.step()
    if not is_eval:
        return None
    if not params_finite(model):
        raise FloatingPointError("non-finite parameter after the update")
    return Stepped(batch, pred.detach(), patterns, loss, norms)


def task_info(setup: Setup, evaluator: Evaluator) -> dict:
    """task.json: what the task says of itself, the names of its metrics per mask, its floors and
    each strategy's loss and accuracy on the evaluation batch."""
    task = setup.task
    return {**task.info(), "task": setup.cfg.data_args.task,
            "masks": {m: {kind: task.metric_key(kind, m) for kind in ("loss", "acc")} for m in task.masks},
            "reference_strategies": list(task.reference_strategies),
            "floors": task.floors(), "strategies": evaluator.strategy_table()}


TRANSITION_LEVELS = (0.5, 0.9)


def transition(lines: bytes, key: str) -> dict:
    """The first iteration at which the in-context accuracy ``key`` reaches each level (None: never)."""
    first: dict[str, Optional[int]] = {str(level): None for level in TRANSITION_LEVELS}
    for line in bytes(lines).splitlines():
        row = json.loads(line)
        value = row.get(key)
        for level in TRANSITION_LEVELS:
            if first[str(level)] is None and isinstance(value, (int, float)) and value >= level:
                first[str(level)] = row["iter"]
    return {"metric": key, **first}


def _progress(total: int, initial: int, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=quiet, unit="step", dynamic_ncols=True, leave=True)
