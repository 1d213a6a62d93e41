"""Benchmarks that print ratios measured side by side in one process:

- sampler: the vectorised torch sampler vs the official per-token numpy sampler (tokens/s);
- step: one training step of the simplified model with fused attention vs the same model computed
  the plain way (explicit float32 softmax attention, as the official code).
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from birth.running.config import DataArgs, build_config
from birth.core.corpus import bundled_stats
from birth.baselines.official_sampler import naive_batch
from birth.running.build import build_setup, make_optimizer, resolve_device
from birth.core.task import Task
from birth.running.train import training_loss


def _best_time(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def _sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def sampler_speed(batch: int, seq_len: int, k: int, repeats: int, device: torch.device) -> dict:
    """tokens/s of our sampler on this process's threads and device."""
    data = DataArgs(k=k, seq_length=seq_len)
    task = Task(data, bundled_stats(), device=device)
    counter = iter(range(10**9))
    t = _best_time(lambda: task.batch(0, "train", next(counter), batch), repeats, _sync(device))
    return {"tokens_per_s": batch * seq_len / t, "seconds_per_batch": t, "batch": batch, "seq_len": seq_len,
            "k": k, "device": str(device), "threads": torch.get_num_threads()}


def naive_sampler_speed(seq_len: int, k: int, repeats: int) -> dict:
    """tokens/s of the official per-token sampler (best of ``repeats`` timings of 8 sequences)."""
    data = DataArgs(k=k, seq_length=seq_len)
    stats = bundled_stats()
    rng = np.random.default_rng(0)
    t = _best_time(lambda: naive_batch(rng, data, stats, 8), repeats)
    return {"tokens_per_s": 8 * seq_len / t}


def step_times(batch: int, seq_len: int, dim: int, repeats: int, device: torch.device) -> dict:
    """Seconds per training step (forward, backward, SGD) with fused vs explicit attention."""
    cfg = build_config(None, {"data_args.k": 3, "data_args.seq_length": seq_len, "model_args.max_length": seq_len,
                              "model_args.dim": dim, "optim_args.batch_size": batch, "device": str(device)})
    setup = build_setup(cfg, device)
    opt = make_optimizer(cfg, setup.model)
    b = setup.train_batch(0)

    def step(explicit: bool):
        opt.zero_grad(set_to_none=True)
        out = setup.model(b.x, return_attn=explicit)
        pred = out[0] if explicit else out
        training_loss(cfg, pred, b.y, b.outs).backward()
        opt.step()

    sync = _sync(device)
    fused = _best_time(lambda: step(False), repeats, sync)
    plain = _best_time(lambda: step(True), repeats, sync)
    return {"fused_s": fused, "plain_s": plain, "speedup": plain / fused, "batch": batch, "seq_len": seq_len,
            "dim": dim, "device": str(device)}


def main(args) -> int:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what in ("all", "sampler"):
        ours = sampler_speed(args.batch, args.seq_len, args.k, args.repeats, device)
        if args.json:
            print(json.dumps(ours))
            return 0
        naive = naive_sampler_speed(args.seq_len, args.k, args.repeats)
        print(f"sampler  batch={args.batch} T={args.seq_len} K={args.k} random triggers, {ours['threads']} thread(s), {device}")
        print(f"  vectorised (birth.core.task): {ours['tokens_per_s']:>12,.0f} tokens/s")
        print(f"  per-token (official):    {naive['tokens_per_s']:>12,.0f} tokens/s")
        print(f"  ratio: {ours['tokens_per_s'] / naive['tokens_per_s']:.0f}x")
    if args.what in ("all", "step"):
        r = step_times(args.batch, args.seq_len, args.dim, args.repeats, device)
        print(f"train step  batch={r['batch']} T={r['seq_len']} d={r['dim']} simplified model, {device}")
        print(f"  fused attention (sdpa):     {r['fused_s'] * 1e3:9.1f} ms/step")
        print(f"  explicit float32 softmax:   {r['plain_s'] * 1e3:9.1f} ms/step")
        print(f"  ratio: {r['speedup']:.2f}x")
    return 0
