"""``scripts/gpu-check``: one command that checks birth on a GPU and prints one table (docs/runs.md#gpu-check).

1. the ``quick`` preset trained on the device and on the CPU, same config and seeds: every logged
   metric within a tolerance (exact when both are the CPU);
2. a few seeds trained as one stack and one by one, on the device: every metric within a tolerance;
3. the paper-scale training step against the official computation (``birth.bench.step_times``):
   ms/step, speed-up, and the same loss on the same weights;
4. stacks of 1, 8, 32 and 128 quick runs: run-steps per second, every run completed.

Everything is float32 with TF32 off, so that the device rounds as the CPU does. Importable
without CUDA; exit code 0 when every row passes, 1 otherwise, 2 on bad input.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import platform
import re
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from birth.bench import step_times
from birth.launching.stacked import train_stacked
from birth.measures import heads
from birth.tasks import Task
from birth.training.config import TrainConfig, build_config
from birth.training.loop import train
from birth.training.runs import RunDir

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
PROG = "gpu-check"

# |a - b| <= ATOL + RTOL |b| for every metric of two runs that differ in rounding only (float32,
# TF32 off) ...
ATOL = RTOL = 1e-3
# ... but a probe's accuracy or rank counts argmaxes over ~65 tokens or ~63 positions, where
# rounding may flip a near-tie: two of them
PROBE_COUNT = re.compile(r"^w[ok]\d\w*_(acc|rank|auc)$")
PROBE_ATOL = 0.04
# ... at the logged steps up to this one. Rounding differences grow about tenfold every 20 steps of
# the quick preset (AdamW), and faster as its induction head forms (steps 60-100): two CPU runs that
# differ in summation order only (4 seeds, stacked and alone, 2026-12-04) part by at most 2.4e-4
# (1 + |b|) up to step 40, 1.6e-3 at step 60 and 0.19 at step 80. Later steps are reported, not judged.
JUDGED_UNTIL = 40
STEP_LOSS_RTOL = 1e-4  # row 3: our step and the official computation, same weights: one function


@dataclasses.dataclass(frozen=True)
class Sizes:
    steps: int                 # rows 1 and 2: steps of each run
    seeds: int                 # row 2: runs in the stack
    stacks: tuple[int, ...]    # row 4: stack sizes
    stack_steps: int           # row 4: steps of each run
    repeats: int               # row 3: timings per path
    step_shape: tuple[int, int, int]  # row 3: batch, T, d
    overrides: dict            # on top of the quick preset (rows 1, 2, 4)
    budget_s: float            # row 4 skips a stack that would end past this many seconds since the start


FULL = Sizes(steps=100, seeds=4, stacks=(1, 8, 32, 128), stack_steps=50, repeats=10, step_shape=(512, 256, 128),
             overrides={}, budget_s=270.0)
# the sizes of tests/conftest.py's TINY: seconds on one CPU thread
TINY = Sizes(steps=20, seeds=2, stacks=(1, 2, 4), stack_steps=10, repeats=2, step_shape=(16, 32, 32),
             overrides={"optim_args.batch_size": 16, "eval_batch_size": 16, "data_args.seq_length": 32,
                        "model_args.max_length": 32, "model_args.dim": 32, "eval_delta": 5},
             budget_s=120.0)


@dataclasses.dataclass
class Row:
    check: str
    setting: str
    result: str
    tolerance: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


# -- comparing two runs' metrics ----------------------------------------------------------------------

Tolerance = Callable[[str, float], float]  # (metric, reference value) -> the largest gap allowed


def rounding_tolerance(key: str, reference: float) -> float:
    """What two runs that differ in rounding only may differ by (ATOL, RTOL, PROBE_ATOL)."""
    return PROBE_ATOL if PROBE_COUNT.match(key) else ATOL + RTOL * abs(reference)


def exact(key: str, reference: float) -> float:
    return 0.0


@dataclasses.dataclass(frozen=True)
class Gap:
    """The worst metric of a comparison: its gap, what was allowed, where."""

    gap: float
    allowed: float
    key: str = ""
    step: Optional[int] = None
    run: Optional[int] = None
    why: str = ""  # set when the runs differ in what must be equal (steps, keys, None)

    @property
    def ratio(self) -> float:
        if self.why:
            return math.inf
        return self.gap / self.allowed if self.allowed > 0 else (math.inf if self.gap > 0 else 0.0)

    @property
    def passed(self) -> bool:
        return self.ratio <= 1.0

    def worse(self, other: "Gap") -> "Gap":
        return max(self, other, key=lambda g: (g.ratio, g.gap))

    def describe(self) -> str:
        if not self.why and self.gap == 0:
            return "every metric equal"
        where = ", ".join(filter(None, [self.key, f"run {self.run}" if self.run is not None else "",
                                        f"step {self.step}" if self.step is not None else ""]))
        if self.why:
            return f"{self.why} ({where})"
        return f"largest gap {self.gap:.1e} ({where}; {self.ratio:.2g} of the tolerance)"


NO_GAP = Gap(0.0, 0.0)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_gap(ours: list[dict], reference: list[dict], tolerance: Tolerance,
               steps: tuple[float, float] = (0, math.inf)) -> Gap:
    """The worst gap between two runs' metrics lines (``elapsed`` aside) at the logged steps in
    ``steps`` (first, last), by gap / allowed. Steps, keys and non-numbers must be equal at every
    step; NaN equals NaN only."""
    if [r.get("iter") for r in ours] != [r.get("iter") for r in reference]:
        return Gap(math.inf, 0.0, "iter", why=f"logged steps differ: {len(ours)} and {len(reference)} lines")
    worst = NO_GAP
    for a, b in zip(ours, reference):
        step = b.get("iter")
        if a.keys() != b.keys():
            return Gap(math.inf, 0.0, sorted(a.keys() ^ b.keys())[0], step, why="logged in one run only")
        for key in sorted(a.keys() - {"elapsed"}):
            x, y = a[key], b[key]
            if not (_number(x) and _number(y)):
                if x != y:
                    return Gap(math.inf, 0.0, key, step, why=f"{x!r} != {y!r}")
            elif math.isnan(x) or math.isnan(y):
                if not (math.isnan(x) and math.isnan(y)):
                    return Gap(math.inf, 0.0, key, step, why=f"{x} != {y}")
            elif steps[0] <= step <= steps[1]:
                worst = worst.worse(Gap(abs(x - y), tolerance(key, y), key, step))
    return worst


def runs_gap(ours: list[Path], reference: list[Path], tolerance: Tolerance,
             steps: tuple[float, float] = (0, math.inf)) -> Gap:
    """``metric_gap`` over pairs of run directories, naming the run (by index) where there are several."""
    worst = NO_GAP
    for i, (a, b) in enumerate(zip(ours, reference)):
        g = metric_gap(RunDir(a).read_metrics(), RunDir(b).read_metrics(), tolerance, steps)
        worst = worst.worse(dataclasses.replace(g, run=i if len(ours) > 1 else None))
    return worst


def judged(ours: list[Path], reference: list[Path], tolerance: Tolerance) -> tuple[bool, str]:
    """The verdict and the result text of two sets of runs: exact at every step, or within the
    rounding tolerance up to JUDGED_UNTIL with the gap after it reported."""
    if tolerance is exact:
        gap = runs_gap(ours, reference, exact)
        return gap.passed, gap.describe()
    gap = runs_gap(ours, reference, tolerance, (0, JUDGED_UNTIL))
    later = runs_gap(ours, reference, tolerance, (JUDGED_UNTIL + 1, math.inf))
    text = f"steps <= {JUDGED_UNTIL}: {gap.describe()}"
    if later.step is not None:
        text += f"; later, not judged: {later.describe()}"
    return gap.passed, text


def tolerance_text(tolerance: Tolerance) -> str:
    if tolerance is exact:
        return "exact, every metric at every logged step (same device)"
    return (f"every metric at each logged step <= {JUDGED_UNTIL}: abs(a-b) <= {ATOL:g} + {RTOL:g} abs(b); "
            f"probe acc/rank (argmax counts): <= {PROBE_ATOL:g}")


# -- the same data on every device --------------------------------------------------------------------

def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def cpu_twin(task: Task) -> Task:
    """A copy of ``task`` on the CPU (its tensors copied there): it draws the batches the task draws on the CPU."""
    twin = copy.copy(task)
    twin.__dict__.update({k: _to_cpu(v) for k, v in vars(task).items()})
    twin.device = torch.device("cpu")
    return twin


@contextmanager
def data_drawn_on_cpu() -> Iterator[None]:
    """CUDA's random numbers are not the CPU's, so the same seed gives other batches there. Inside,
    a task on another device draws its batches on the CPU and moves them, and so do the head-score
    tokens: a run on CUDA then sees the data of the same run on the CPU, and only the arithmetic differs."""
    batch, tokens = Task.batch, heads.repeated_random_tokens
    twins: dict[int, tuple[Task, Task]] = {}  # id -> (task, twin): the task is kept so that its id stays its own

    def moved_batch(task, seed, stream, index, batch_size):
        if task.device.type == "cpu":
            return batch(task, seed, stream, index, batch_size)
        if id(task) not in twins:
            twins[id(task)] = (task, cpu_twin(task))
        return batch(twins[id(task)][1], seed, stream, index, batch_size).to(task.device)

    def moved_tokens(n_tokens, count, length, gen):
        if gen.device.type == "cpu":
            return tokens(n_tokens, count, length, gen)
        # birth.tasks.stream_generator seeds it once, fresh: the CPU generator of that seed is its twin
        return tokens(n_tokens, count, length, torch.Generator().manual_seed(gen.initial_seed())).to(gen.device)

    Task.batch, heads.repeated_random_tokens = moved_batch, moved_tokens
    try:
        yield
    finally:
        Task.batch, heads.repeated_random_tokens = batch, tokens


@contextmanager
def fp32() -> Iterator[None]:
    """TF32 off: the device's matrix products round as float32 does on the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# -- the rows -----------------------------------------------------------------------------------------

def quick_configs(runs: int, steps: int, device: torch.device, sizes: Sizes) -> list[TrainConfig]:
    """``runs`` quick runs of ``steps`` steps on ``device``, seeds 42+i and init_seed i (as birth.bench.stack_times)."""
    return [build_config("quick", {**sizes.overrides, "max_iters": steps, "device": device.type,
                                   "seed": 42 + i, "init_seed": i}) for i in range(runs)]


def _dirs(tmp: Path, name: str, runs: int) -> list[Path]:
    return [tmp / f"{name}-{i}" for i in range(runs)]


def _stacked(cfgs: list[TrainConfig], dirs: list[Path]) -> tuple[float, list[dict]]:
    """Wall seconds of one stacked training (the device synchronised) and the runs' summaries."""
    t = time.perf_counter()
    summaries = train_stacked(cfgs, dirs, [False] * len(cfgs))
    _sync(cfgs[0])
    return time.perf_counter() - t, summaries


def _sync(cfg: TrainConfig) -> None:
    if cfg.device == "cuda":
        torch.cuda.synchronize()


def device_against_cpu(device: torch.device, sizes: Sizes, tmp: Path) -> Row:
    """Row 1: the same quick run on ``device`` and on the CPU, its data drawn on the CPU for both."""
    (cfg,) = quick_configs(1, sizes.steps, device, sizes)
    (cpu,) = quick_configs(1, sizes.steps, torch.device("cpu"), sizes)
    with data_drawn_on_cpu():
        train(cfg, tmp / "row1-device", quiet=True)
    train(cpu, tmp / "row1-cpu", quiet=True)
    tolerance = exact if device.type == "cpu" else rounding_tolerance
    passed, text = judged([tmp / "row1-device"], [tmp / "row1-cpu"], tolerance)
    lines = RunDir(tmp / "row1-cpu").read_metrics()
    same = " (same device)" if device.type == "cpu" else ", batches drawn on the CPU for both"
    return Row(f"{device.type.upper()} against CPU", f"quick preset, {sizes.steps} steps, seed 42{same}",
               f"{text}; {len(lines)} lines x {len(lines[-1].keys() - {'iter', 'elapsed'})} metrics",
               tolerance_text(tolerance), passed)


def stack_against_alone(device: torch.device, sizes: Sizes, tmp: Path) -> Row:
    """Row 2: ``sizes.seeds`` quick runs as one stack and one by one, on ``device``."""
    cfgs = quick_configs(sizes.seeds, sizes.steps, device, sizes)
    alone, stacked = _dirs(tmp, "row2-alone", len(cfgs)), _dirs(tmp, "row2-stack", len(cfgs))
    t = time.perf_counter()
    for cfg, d in zip(cfgs, alone):
        train(cfg, d, quiet=True)
    _sync(cfgs[0])
    alone_s = time.perf_counter() - t
    stacked_s, _ = _stacked(cfgs, stacked)
    passed, text = judged(stacked, alone, rounding_tolerance)
    return Row(f"stack against alone, {device.type.upper()}",
               f"quick preset, {len(cfgs)} seeds x {sizes.steps} steps, one stack vs one by one",
               f"{text}; {stacked_s:.1f} s stacked, {alone_s:.1f} s alone",
               tolerance_text(rounding_tolerance), passed)


def step_against_official(device: torch.device, sizes: Sizes, tmp: Path) -> Row:
    """Row 3: birth.bench.step_times at the paper's shape (batch 512, T 256, d 128)."""
    batch, seq_len, dim = sizes.step_shape
    r = step_times(batch=batch, seq_len=seq_len, dim=dim, repeats=sizes.repeats, device=device)
    bf16 = f", bf16 autocast {r['bf16_s'] * 1e3:.1f} ms" if r["bf16_s"] else ""
    return Row(f"paper-scale step against official, {device.type.upper()}",
               f"README model, batch {batch}, T {seq_len}, d {dim}, {r['attention']} attention, "
               f"median of {sizes.repeats} interleaved",
               f"birth {r['ours_s'] * 1e3:.1f} ms/step, official {r['official_s'] * 1e3:.1f} ms/step: "
               f"**{r['speedup']:.2f}x** (full pass {r['full_speedup']:.2f}x{bf16}); loss gap {r['loss_gap']:.1e}",
               f"same loss on the same weights: relative gap <= {STEP_LOSS_RTOL:g}", r["loss_gap"] <= STEP_LOSS_RTOL)


def stack_throughput(device: torch.device, sizes: Sizes, tmp: Path, started: float) -> Row:
    """Row 4: run-steps per second of stacks of ``sizes.stacks`` quick runs; a stack that would end
    past ``sizes.budget_s`` (estimated as linear in the runs from the last one) is skipped."""
    cells, passed, last, first_rate = [], True, None, None
    for runs in sizes.stacks:
        if last is not None:
            estimate = last[1] * runs / last[0]
            left = sizes.budget_s - (time.perf_counter() - started)
            if estimate > left:
                cells.append(f"{runs}: skipped (about {estimate:.0f} s, {max(left, 0):.0f} s of the budget left)")
                continue
        cfgs = quick_configs(runs, sizes.stack_steps, device, sizes)
        try:
            seconds, summaries = _stacked(cfgs, _dirs(tmp, f"row4-{runs}", runs))
        except RuntimeError as err:  # out of memory, say: the smaller stacks' numbers stay in the row
            traceback.print_exc()
            cells.append(f"{runs}: {_one_line(err)}")
            passed = False
            break
        failed = sum(s["status"] != "completed" for s in summaries)
        passed &= failed == 0
        rate = runs * sizes.stack_steps / seconds
        notes = [f"{seconds:.1f} s"] + ([f"{rate / first_rate:.1f}x"] if first_rate else [])
        notes += [f"{failed} not completed"] if failed else []
        first_rate = first_rate or rate
        cells.append(f"{runs}: {rate:,.0f}/s ({', '.join(notes)})")
        last = (runs, seconds)
    return Row(f"stacked throughput, {device.type.upper()}",
               f"quick preset, {sizes.stack_steps} steps per run; per stack of R runs: R x steps / wall s of one "
               "stacked training (run-steps/s; setup, evaluations, checkpoints included), the wall s, and x the "
               "first stack's rate",
               "; ".join(cells), "every run completed", passed)


# -- the table ----------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda, CUDA {torch.version.cuda})"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)"


def header(device: torch.device, tiny: bool, seconds: float) -> str:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"birth gpu-check, {date}: torch {torch.__version__}, {device_name(device)}, float32 with TF32 off, "
            f"{'--tiny' if tiny else 'full'} sizes, {seconds:.0f} s")


def table(rows: list[Row]) -> str:
    lines = ["| # | check | setting | result | tolerance | verdict |", "|---|---|---|---|---|---|"]
    lines += [f"| {i} | {r.check} | {r.setting} | {r.result} | {r.tolerance} | {r.verdict} |"
              for i, r in enumerate(rows, 1)]
    return "\n".join(lines)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".replace("|", "/")


def run_checks(device: torch.device, sizes: Sizes) -> list[Row]:
    """The four rows; a row that raises is a FAIL with its error (traceback on stderr), the others still run."""
    started = time.perf_counter()
    on = device.type.upper()
    checks = [(f"{on} against CPU", device_against_cpu), (f"stack against alone, {on}", stack_against_alone),
              (f"paper-scale step against official, {on}", step_against_official),
              (f"stacked throughput, {on}", lambda d, s, tmp: stack_throughput(d, s, tmp, started))]
    rows = []
    with fp32(), tempfile.TemporaryDirectory(prefix="birth-gpu-check-") as tmp:
        for i, (name, check) in enumerate(checks, 1):
            print(f"{PROG}: row {i}/{len(checks)}: {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                rows.append(check(device, sizes, Path(tmp)))
            except Exception as err:  # one broken row must not hide the others
                traceback.print_exc()
                rows.append(Row(name, "-", f"error: {_one_line(err)}", "-", False))
            print(f"{PROG}: row {i} {rows[-1].verdict} in {time.perf_counter() - t:.1f} s", file=sys.stderr,
                  flush=True)
    return rows


# -- the command line ---------------------------------------------------------------------------------

class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like birth's own errors (argparse would print the usage too)
        raise UsageError(message)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _stacks(text: str) -> tuple[int, ...]:
    return tuple(_positive(s) for s in text.split(","))


_positive.__name__ = "positive integer"   # what argparse names in "invalid ... value"
_stacks.__name__ = "comma-separated positive integers"


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Checks birth on a GPU (docs/runs.md#gpu-check) and prints one table.")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto (default): CUDA when present; cpu: row 1 compares the CPU with itself, exactly")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: seconds on a CPU (a smoke test of the command)")
    p.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    p.add_argument("--steps", type=_positive, help=f"steps of each run of rows 1 and 2 (default {FULL.steps})")
    p.add_argument("--seeds", type=_positive, help=f"runs of row 2's stack (default {FULL.seeds})")
    p.add_argument("--stacks", type=_stacks, help=f"row 4's stack sizes (default {','.join(map(str, FULL.stacks))})")
    p.add_argument("--stack-steps", type=_positive, help=f"steps of each run of row 4 (default {FULL.stack_steps})")
    p.add_argument("--repeats", type=_positive, help=f"timings per path in row 3 (default {FULL.repeats})")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="row 4 skips a stack that would end later than this many seconds after the start "
                        f"(default {FULL.budget_s:g}; --tiny {TINY.budget_s:g})")
    return p


def sizes_of(args: argparse.Namespace) -> Sizes:
    sizes = TINY if args.tiny else FULL
    given = {"steps": args.steps, "seeds": args.seeds, "stacks": args.stacks, "stack_steps": args.stack_steps,
             "repeats": args.repeats, "budget_s": args.budget}
    return dataclasses.replace(sizes, **{k: v for k, v in given.items() if v is not None})


def resolve(args: argparse.Namespace) -> torch.device:
    """The device, or a UsageError before any work."""
    if args.device == "cuda" and not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise UsageError(f"--device cuda: no CUDA device here (torch {torch.__version__}, {built}); "
                         "use --device cpu or auto")
    if args.out is not None and not args.out.parent.is_dir():
        raise UsageError(f"--out: {args.out.parent} is not a directory")
    return torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                        else "cpu")


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = parser().parse_args(argv)
        device = resolve(args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    rows = run_checks(device, sizes_of(args))
    text = f"{header(device, args.tiny, time.perf_counter() - started)}\n\n{table(rows)}\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return EXIT_PASS if all(r.passed for r in rows) else EXIT_FAIL
