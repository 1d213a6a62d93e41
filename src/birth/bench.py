"""Benchmarks that print ratios measured side by side in one process:

- sampler: the vectorised torch sampler vs the official per-token numpy sampler (tokens/s);
- step: one training step (forward, backward, SGD) of the simplified model of the official README
  command: birth's training step (``birth.model.simplified_pass``) and full pass (``birth.model.transformer``)
  against the official computation (``birth.model.official``: explicit scores, additive
  -inf mask, float softmax), on the same weights, timed interleaved and compared by their medians;
- stack: wall time of R runs trained one by one and as one stack (``birth.launching.stacked``);
- induction: wall time until the official README command, at batch 64 and T 128, reaches
  ``acc_end_test`` >= 0.9 (the induction head works out of distribution), start-up included, as
  configured and with the official script's evaluation work only (no fixed evaluation batch); with
  ``--official PATH`` (a checkout of albietz/transformer-birth, never copied here: it has no
  licence), the official ``ihead_basic_main.py`` on the same settings, timed the same way.

No number is typed in: every figure printed is measured by the command that prints it.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from birth.training.config import PRESETS, ConfigError, DataArgs, build_config
from birth.tasks.triggers.corpus import bundled_stats
from birth.tasks.triggers.official_sampler import naive_batch
from birth.training.build import bf16_cpu, build_setup, make_optimizer, resolve_device
from birth.model import simplified_pass
from birth.model.simplified_pass import EXPLICIT_SCORES
from birth.tasks.triggers.task import TriggersTask
from birth.training.evaluation import training_loss
from birth.training.loop import precision, step_loss
from birth.launching.stacked import train_stacked
from birth.model.official import OfficialSimplified
from birth.training.loop import train


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
    task = TriggersTask(data, device, stats=bundled_stats())
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
    """Median seconds per training step, interleaved on the same weights: birth's training step (the
    in-context loss at the targets only, ``birth.model.simplified_pass``), birth's full forward pass (its
    evaluation steps), and the official computation."""
    cfg = build_config("paper-readme", {"data_args.seq_length": seq_len, "model_args.max_length": seq_len,
                                        "model_args.dim": dim, "optim_args.batch_size": batch, "device": str(device)})
    setup = build_setup(cfg, device)
    model = setup.model
    opt = make_optimizer(cfg, model)
    official = OfficialSimplified(model)
    b = setup.train_batch(0)
    losses = {"ours": lambda: step_loss(cfg, model, b, keep=False)[0],
              "full": lambda: training_loss(cfg.loss_head_only, model(b.x), b),
              "official": lambda: training_loss(cfg.loss_head_only, official(b.x), b)}
    if device.type == "cuda" or bf16_cpu():
        bf16 = dataclasses.replace(cfg, precision="bf16")
        losses["bf16"] = lambda: _in_bf16(bf16, device, lambda: step_loss(bf16, model, b, keep=False)[0])
    with torch.no_grad():  # the same function of the same weights
        reference = float(losses["official"]())
        gap = max(abs(float(f()) - reference) for name, f in losses.items() if name != "bf16") / abs(reference)

    def step(loss) -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    sync = _sync(device)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for loss in losses.values():  # warm-up
        step(loss)
    sync()
    for _ in range(repeats):
        for name, loss in losses.items():
            t = time.perf_counter()
            step(loss)
            sync()
            times[name].append(time.perf_counter() - t)
    med = {name: float(np.median(v)) for name, v in times.items()}
    # the arithmetic of each step, counted with the attention written out (the fused kernel does the same
    # products; FlopCounterMode does not see inside it on CPU)
    m = b.masks["in_context"]
    flops = {"ours": _flops(lambda: F.cross_entropy(simplified_pass.forward(model, b.x, m, explicit=True), b.y[m])),
             "official": _flops(losses["official"])}
    return {"ours_s": med["ours"], "full_s": med["full"], "official_s": med["official"], "bf16_s": med.get("bf16"),
            "ours_flops": flops["ours"], "official_flops": flops["official"], "peak_flops": matmul_peak(device),
            "speedup": med["official"] / med["ours"], "full_speedup": med["official"] / med["full"],
            "loss_gap": gap, "attention": "explicit" if batch * seq_len ** 2 <= EXPLICIT_SCORES else "fused",
            "batch": batch, "seq_len": seq_len, "dim": dim, "device": str(device), "threads": torch.get_num_threads()}


def _flops(loss) -> float:
    """Floating-point operations of the matrix products of one forward and backward pass."""
    with FlopCounterMode(display=False) as counter:
        loss().backward()
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 arithmetic peak as this torch reaches it: FLOP/s of an n x n matrix product."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n ** 3 / _best_time(lambda: a @ b, repeats, _sync(device))


def stack_times(runs: int, steps: int, batch: int, seq_len: int, dim: int, repeats: int, device: torch.device,
                preset: str = "paper-readme") -> dict:
    """Wall seconds to train ``runs`` runs of ``preset`` (seeds differ; the README command's model
    also its freeze schedules, as in Fig. 3) one by one, and as one stack (``birth.launching.stacked``),
    alternately ``repeats`` times each in this process; medians, and the largest gap between their
    final loss, evaluation loss and in-context accuracy. The README command takes ``batch``,
    ``seq_len`` and ``dim``; another preset keeps its own sizes."""
    schedules = ["", f"{steps // 2}:W_O2", f"{steps // 2}:W_K1,W_K2", f"{steps // 2}:W_K1", f"{steps // 2}:W_K2"]
    sizes = {"data_args.seq_length": seq_len, "model_args.max_length": seq_len, "model_args.dim": dim,
             "optim_args.batch_size": batch} if preset == "paper-readme" else {}
    freeze = (lambda i: {"freeze_until": schedules[i % len(schedules)]} if preset == "paper-readme" else {})
    cfgs = [build_config(preset, {**sizes, "device": str(device), "max_iters": steps, "eval_delta": 20,
                                  "eval_batch_size": 128, "seed": 42 + i, "init_seed": i, **freeze(i)})
            for i in range(runs)]
    setup = build_setup(cfgs[0])
    acc = "eval_" + setup.task.metric_key("acc", "in_context")
    times: dict[str, list[float]] = {"alone": [], "stacked": []}
    gap = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            dirs = {way: [Path(tmp) / f"{way}{rep}-{i}" for i in range(runs)] for way in times}
            t = time.perf_counter()
            for cfg, d in zip(cfgs, dirs["alone"]):
                train(cfg, d, quiet=True)
            times["alone"].append(time.perf_counter() - t)
            t = time.perf_counter()
            train_stacked(cfgs, dirs["stacked"], [False] * runs)
            times["stacked"].append(time.perf_counter() - t)
            for a, b in zip(dirs["alone"], dirs["stacked"]):
                last = [json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in (a, b)]
                gap = max([gap] + [abs(last[0][k] - last[1][k]) for k in ("loss", "eval_loss", acc)])
    alone, stacked = (float(np.median(times[w])) for w in ("alone", "stacked"))
    c = cfgs[0]
    return {"alone_s": alone, "stacked_s": stacked, "speedup": alone / stacked, "metric_gap": gap, "runs": runs,
            "steps": steps, "batch": c.optim_args.batch_size, "seq_len": c.data_args.seq_length,
            "dim": c.model_args.dim, "device": str(device), "threads": torch.get_num_threads(), "preset": preset,
            "accuracy": acc}


def _in_bf16(cfg, device: torch.device, loss):
    with precision(cfg, device):
        return loss()


# The official README command, at batch 64 and T 128.
INDUCTION = ["--preset", "paper-readme", "optim_args.batch_size=64", "data_args.seq_length=128",
             "model_args.max_length=128", "max_iters=5000"]


# birth's default evaluates a fixed 512-sequence batch at every evaluation step besides the official
# ones (training batch, OOD batch): without it, the run does the official script's work
OFFICIAL_EVALUATION = ("eval_fixed_batch=false",)

# The official script calls .cuda() on its model and tensors unconditionally. Where CUDA is absent,
# this wrapper (ours; their code is run unchanged, from their checkout) makes .cuda() return its
# object as it is, then runs the script as __main__ with the arguments that follow.
OFFICIAL_CPU_WRAPPER = """\
import runpy, sys, torch
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
OFFICIAL_SCRIPT = "ihead_basic_main.py"
OFFICIAL_DEFAULT_WORKERS = 60  # TrainerArgs.num_data_workers of the official script
# one evaluation line of the official script's log (its logging.info, k > 0):
# "INFO:root:{i} ({dt_data}, {dt}, {t - t0}): loss: ... acc: {acc_tot} ({acc_end} / {acc_end_test}) probes: ..."
OFFICIAL_LINE = re.compile(r"^INFO:root:(\d+) \([-\d.]+, [-\d.]+, ([-\d.]+)\): loss: .*? acc: [-\d.naif]+ "
                           r"\([-\d.naif]+ / ([-\d.naif]+)\)")


def official_workers() -> int:
    """The official default of 60 data worker processes, as far as this machine has cores beside
    the training process (each worker is a busy process: on 2 cores, one)."""
    return max(1, min(OFFICIAL_DEFAULT_WORKERS, (os.cpu_count() or 2) - 1))


def official_induction_args(workers: int) -> list[str]:
    """INDUCTION in the official script's own arguments: the README command (birth's preset of it)
    with the same overrides, and ``num_data_workers``."""
    preset = INDUCTION[INDUCTION.index("--preset") + 1]
    values = {**PRESETS[preset], **dict(arg.split("=", 1) for arg in INDUCTION if "=" in arg)}
    return [f"{key}={value}" for key, value in values.items()] + [f"num_data_workers={workers}"]


def parse_official_log(text: str) -> list[dict]:
    """The evaluation lines of an official log, whole lines only: iteration, acc_end_test and the
    script's own seconds since its training loop began."""
    lines = text.split("\n")[:-1]  # the last piece has no newline yet: it may be cut short
    rows = []
    for line in lines:
        m = OFFICIAL_LINE.match(line)
        if m:
            rows.append({"iter": int(m[1]), "acc_end_test": float(m[3]), "loop_seconds": float(m[2])})
    return rows


def check_official(path: str | Path) -> Path:
    """The checkout at ``path``, or a ConfigError naming what is missing, before any work."""
    root = Path(path)
    for rel in (OFFICIAL_SCRIPT, "ihead_data.py", "data/meta.pkl"):
        if not (root / rel).is_file():
            raise ConfigError(f"--official: {root / rel} not found; PATH must be a checkout of "
                              "https://github.com/albietz/transformer-birth")
    if importlib.util.find_spec("omegaconf") is None:
        raise ConfigError("--official: the official script needs omegaconf, which is not installed: "
                          "pip install omegaconf")
    return root


def session_cpu_seconds(session: int) -> float | None:
    """CPU seconds (user + system, with reaped children's) used so far by the processes of session
    ``session``; None without Linux's /proc. On a busy machine a measure of the work done that
    other processes disturb less than the wall time."""
    if not Path("/proc/self/stat").exists():
        return None
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # the command, in parentheses, may hold spaces
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == session:  # fields 6 (session) and 14-17 (utime stime cutime cstime) of proc(5)
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _time_until(cmd: list[str], rows, threshold: float, timeout: float, what: str, error, **popen) -> dict:
    """Starts ``cmd`` in a session of its own and polls ``rows()`` (the evaluation rows logged so
    far) every 50 ms until one has acc_end_test >= ``threshold``; returns that row with the wall
    seconds since the start and the CPU seconds of the session's processes. The whole group is
    killed at the end (the official script's data workers are child processes that would outlive it)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    try:
        while time.perf_counter() - t0 < timeout:
            for row in rows():
                if (row.get("acc_end_test") or 0) >= threshold:
                    return {**row, "seconds": time.perf_counter() - t0, "cpu_seconds": session_cpu_seconds(proc.pid)}
            if proc.poll() is not None:
                raise RuntimeError(f"{what} ended (rc {proc.returncode}) before acc_end_test {threshold}: "
                                   f"{error()[-300:]}")
            time.sleep(0.05)
        raise RuntimeError(f"acc_end_test did not reach {threshold} within {timeout:.0f} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone already
            pass
        proc.wait()


def time_to_induction(threshold: float = 0.9, timeout: float = 600.0, threads: int | None = None,
                      extra: tuple[str, ...] = ()) -> dict:
    """Runs ``birth train`` (INDUCTION + ``extra``) in a subprocess until a metrics line has
    acc_end_test >= ``threshold``; returns the wall seconds since the process started and that
    line's iteration."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "run" / "metrics.jsonl"
        args = [*INDUCTION, *extra]
        cmd = [sys.executable, "-m", "birth", "train", *args, "--quiet", "--out", str(Path(tmp) / "run")]
        if threads:
            cmd += ["--threads", str(threads)]
        rows = lambda: [json.loads(line) for line in (metrics.read_text().splitlines() if metrics.exists() else [])
                        if line.endswith("}")]
        stderr = Path(tmp) / "stderr"
        with open(stderr, "w") as err:
            r = _time_until(cmd, rows, threshold, timeout, "birth train", lambda: stderr.read_text().strip(),
                            stdout=subprocess.DEVNULL, stderr=err)
        return {"seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "iter": r["iter"],
                "acc_end_test": r["acc_end_test"], "command": "birth train " + " ".join(args)}


def official_time_to_induction(path: str | Path, threshold: float = 0.9, timeout: float = 600.0,
                               threads: int | None = None, workers: int | None = None) -> dict:
    """Runs the official ``ihead_basic_main.py`` of the checkout at ``path`` with INDUCTION's
    settings (``official_induction_args``) in a subprocess, through OFFICIAL_CPU_WRAPPER, until its
    log has acc_end_test >= ``threshold``; the same timing as ``time_to_induction``. ``threads``
    sets OMP_NUM_THREADS (torch's thread count there); ``workers`` defaults to ``official_workers()``."""
    root = check_official(path)
    workers = workers or official_workers()
    args = official_induction_args(workers)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        with open(log, "w") as out:
            r = _time_until([sys.executable, "-c", OFFICIAL_CPU_WRAPPER, OFFICIAL_SCRIPT, *args],
                            lambda: parse_official_log(log.read_text()), threshold, timeout,
                            f"the official {OFFICIAL_SCRIPT}", lambda: log.read_text().strip(),
                            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    return {**r, "workers": workers, "cuda": torch.cuda.is_available(),
            "command": f"cd {root} && {f'OMP_NUM_THREADS={threads} ' if threads else ''}python {OFFICIAL_SCRIPT} "
                       f"{' '.join(args)}"}


def main(args) -> int:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.official and args.what != "induction":
        raise ConfigError("--official: times the official script for `birth bench induction` only")
    if args.what in ("all", "sampler"):
        ours = sampler_speed(args.batch, args.seq_len, args.k, args.repeats, device)
        if args.json:
            print(json.dumps(ours))
            return 0
        naive = naive_sampler_speed(args.seq_len, args.k, args.repeats)
        print(f"sampler  batch={args.batch} T={args.seq_len} K={args.k} random triggers, "
              f"{ours['threads']} thread(s), {device}")
        print(f"  vectorised (birth.tasks): {ours['tokens_per_s']:>12,.0f} tokens/s")
        print(f"  per-token (official):    {naive['tokens_per_s']:>12,.0f} tokens/s")
        print(f"  ratio: {ours['tokens_per_s'] / naive['tokens_per_s']:.0f}x")
    if args.what == "induction":
        return _induction(args)
    if args.what == "stack":
        r = stack_times(args.runs, args.steps, args.batch, args.seq_len, args.dim, args.repeats, device, args.preset)
        print(f"stack  {r['preset']}: {r['runs']} runs x {r['steps']} steps, batch={r['batch']} T={r['seq_len']} "
              f"d={r['dim']}, {r['threads']} thread(s), {device}, median of {args.repeats}")
        print(f"  one by one:  {r['alone_s']:8.1f} s")
        print(f"  one stack:   {r['stacked_s']:8.1f} s   {r['speedup']:.2f}x  (largest gap in final loss, "
              f"eval_loss, {r['accuracy']}: {r['metric_gap']:.1e})")
        return 0
    if args.what in ("all", "step"):
        r = step_times(args.batch, args.seq_len, args.dim, args.repeats, device)
        print(f"train step  batch={r['batch']} T={r['seq_len']} d={r['dim']} simplified model (README command), "
              f"{r['threads']} thread(s), {device}, float32, median of {args.repeats} interleaved")
        rows = ((f"birth training step ({r['attention']} attention)", r["ours_s"], r["speedup"]),
                ("birth full pass (evaluation steps)", r["full_s"], r["full_speedup"]),
                ("official computation", r["official_s"], 1.0))
        if r["bf16_s"]:
            rows = (rows[:1] + (("birth training step, bf16 autocast", r["bf16_s"], r["official_s"] / r["bf16_s"]),)
                    + rows[1:])
        for label, seconds, ratio in rows:
            print(f"  {label:42s} {seconds * 1e3:9.1f} ms/step  {ratio:.2f}x")
        print(f"  (same weights; largest loss gap {r['loss_gap']:.1e}, relative)")
        for line in arithmetic_lines(r):
            print(f"  {line}")
    return 0


def arithmetic_lines(r: dict) -> list[str]:
    """Which part of each step is arithmetic at the machine's matrix-product peak, and which overhead."""
    peak = r["peak_flops"]
    lines = [f"arithmetic at the measured peak ({peak / 1e9:.0f} GFLOP/s, a 2048 x 2048 fp32 matrix product):"]
    for label, flops, seconds in (("birth training step", r["ours_flops"], r["ours_s"]),
                                  ("official computation", r["official_flops"], r["official_s"])):
        least = flops / peak
        lines.append(f"  {label:26s} {flops / 1e9:6.2f} GFLOP = {least * 1e3:7.1f} ms at peak, {least / seconds:4.0%} "
                     f"of its time; the other {(seconds - least) * 1e3:.1f} ms is overhead (memory traffic, "
                     "softmax, gathers, calls)")
    return lines


def _induction(args) -> int:
    """`birth bench induction [--official PATH]`: birth's two timings, then, with a checkout of the
    official code, its script's timing on the same settings and the ratios."""
    root = check_official(args.official) if args.official else None  # before any work
    if args.official_workers is not None and args.official_workers < 1:
        raise ConfigError(f"--official-workers: must be >= 1 (the official script waits on its workers), "
                          f"got {args.official_workers}")
    threads = f"{args.threads} thread(s)" if args.threads else "threads as each process picks"
    print(f"induction  birth train {' '.join(INDUCTION)} [{' '.join(OFFICIAL_EVALUATION)}], until acc_end_test "
          f">= 0.9, start-up included, {threads}")
    def line(label: str, r: dict) -> None:
        cpu = f", {r['cpu_seconds']:6.1f} s CPU" if r.get("cpu_seconds") is not None else ""
        print(f"  {label:48s} {r['seconds']:6.1f} s wall{cpu}  (acc_end_test {r['acc_end_test']:.3f} at iteration "
              f"{r['iter']})")
    try:
        ours = {}
        for key, label, extra in (("configured", "birth, as configured (+ fixed evaluation batch)", ()),
                                  ("equal", "birth, the official script's evaluations only", OFFICIAL_EVALUATION)):
            ours[key] = time_to_induction(timeout=args.timeout, threads=args.threads, extra=extra)
            line(label, ours[key])
        if root is None:
            print("  (no official timing: --official PATH times a checkout of albietz/transformer-birth side by side)")
            return 0
        theirs = official_time_to_induction(root, timeout=args.timeout, threads=args.threads,
                                            workers=args.official_workers)
    except RuntimeError as err:  # a run that failed or did not get there in time: one line, not a traceback
        print(f"birth bench induction: {err}", file=sys.stderr)
        return 1
    line(f"official {OFFICIAL_SCRIPT}, {theirs['workers']} data worker(s)", theirs)
    for unit, key in (("wall", "seconds"), ("CPU", "cpu_seconds")):
        if theirs.get(key) is not None and all(r.get(key) for r in ours.values()):
            print(f"  official / birth, {unit} time: {theirs[key] / ours['configured'][key]:.2f}x as configured, "
                  f"{theirs[key] / ours['equal'][key]:.2f}x at equal evaluation work")
    print(f"  official command: {theirs['command']}")
    if not theirs["cuda"]:
        print("  (no CUDA here: run through birth.bench.OFFICIAL_CPU_WRAPPER, which makes the script's .cuda() "
              "calls return their object unchanged; the script itself is not modified)")
    return 0
