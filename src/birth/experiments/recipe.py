"""The recipe framework: scales, what a recipe is, and reading its runs back.

A recipe (one module per paper figure, or the theory) is data:

- ``conditions(scale)``: ``{label: overrides}``, each a complete dotted-key config of one curve
  (no preset underneath), so that ``birth reproduce NAME --show-config`` prints exactly what is
  trained. Seeds are applied on top by ``specs``: seed i sets the data seed 42 + i, the init seed i
  and the evaluation seed i (``seed_overrides``).
- ``rules``: the claims it checks (``birth.experiments.rules``), each a value with its thresholds;
- ``plot(results, out)``: figures into ``out.figures`` and the plotted numbers into ``out.data``;
- ``setup(scale, configs)`` and ``differences`` ({scale: text}): what it trains, and each of its
  differences from the paper scale with the reason; ``Recipe.notes(scale)`` joins them (tiny and
  paper get the text every recipe shares).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from birth.launching.plan import Planned, Sweep
from birth.training.config import ConfigError, TrainConfig, seed_overrides
from birth.experiments.rules import evaluate
from birth.training.build import trained_setup
from birth.training.runs import RunDir
from birth.training.validation import resolve_config

# tiny: seconds per run, for the tests; quick: a preview in minutes; laptop: every claim on 2 CPU
# cores in under an hour (52 min measured; the default); paper: the paper's sizes, for a GPU.
SCALES = ("tiny", "quick", "laptop", "paper")
DEFAULT_SCALE = "laptop"
DEFAULT_SEEDS = 3
# The published seeds are 20, 21, 22: none was used to choose a scale, a budget or a rule (pilots
# use 100 and up; docs/laptop-scale.md). 10-12 were the published seeds of the rules before issue
# 28; once seen, seeds are not reused for a new set of rules. Held-out seeds (--held-out H: the H
# after the published ones) are opt-in: they double the cost of a reproduction.
DEFAULT_FIRST_SEED = 20
DEFAULT_HELD_OUT = 0
PILOT_SEEDS = 100  # the first pilot seed: pilots never use the seeds below
# What a scale's output says about itself, in its figures and claims tables ("" = evidence).
SCALE_STATUS = {
    "tiny": "SMOKE TEST (scale tiny): runs of seconds for the tests; not evidence for or against any claim",
    "quick": "PREVIEW (scale quick): too short for several claims; run the default scale (laptop) for the verdicts",
    "laptop": "",
    "paper": "",
}


def differences(scale: str, **per_scale: str) -> str:
    """A recipe's differences from the paper scale at ``scale``: its own text for the scales it
    names, else what every recipe shares (tiny: test sizes; paper: none)."""
    shared = {"tiny": "test-only sizes, nothing to learn from.",
              "paper": "none: the paper's sizes (batch 512, T = 256; docs/spec.md §6)."}
    return per_scale.get(scale) or shared[scale]


def smaller_than_paper(size: "Size") -> str:
    """The difference every laptop recipe shares: shorter sequences, smaller batches."""
    return f"T = {size.T} and batch {size.batch} instead of 256 and 512"


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"--scale: unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return scale


@dataclass(frozen=True)
class Seeds:
    """The seeds a reproduction runs: the published ones, whose values the table and figures show,
    and a disjoint held-out set, judged by the same rules."""

    published: tuple[int, ...]
    held_out: tuple[int, ...] = ()

    @classmethod
    def of(cls, n: int = DEFAULT_SEEDS, first: int = DEFAULT_FIRST_SEED, held_out: int = DEFAULT_HELD_OUT) -> "Seeds":
        """``n`` seeds from ``first``, then ``held_out`` more after them."""
        if n < 1:
            raise ConfigError(f"--seeds: must be >= 1, got {n}")
        if first < 0:
            raise ConfigError(f"--first-seed: must be >= 0, got {first}")
        if held_out < 0:
            raise ConfigError(f"--held-out: must be >= 0, got {held_out}")
        return cls(tuple(range(first, first + n)), tuple(range(first + n, first + n + held_out)))

    @property
    def all(self) -> tuple[int, ...]:
        return self.published + self.held_out

    def flags(self) -> str:
        """The command-line flags that give these seeds."""
        return f"--seeds {len(self.published)} --first-seed {self.published[0]} --held-out {len(self.held_out)}"

    def as_dict(self) -> dict:
        return {"published": list(self.published), "held_out": list(self.held_out)}


@dataclass(frozen=True)
class Size:
    """The sizes and budget of one recipe at one scale."""

    T: int                  # sequence length (and number of positions)
    d: int                  # model width
    batch: int              # fresh sequences per step
    steps: int
    lr: float               # constant learning rate
    eval_every: int = 10
    eval_batch: int = 128   # sequences in each fixed evaluation batch
    device: str = "cpu"     # paper scale: "auto" (CUDA when present)
    checkpoint_every: int = 0  # paper scale: hours-long runs survive a lost node (0: at the end only)

    def keys(self) -> dict:
        return {"checkpoint_every": self.checkpoint_every, "data_args.seq_length": self.T,
                "model_args.max_length": self.T, "model_args.dim": self.d,
                "optim_args.batch_size": self.batch, "max_iters": self.steps,
                "optim_args.learning_rate": self.lr, "eval_delta": self.eval_every,
                "eval_batch_size": self.eval_batch, "device": self.device}


def tiny_size(**keys) -> Size:
    """The test-only scale of every recipe: seconds per run, nothing to learn from."""
    return Size(**{"T": 32, "d": 32, "batch": 32, "steps": 30, "lr": 0.1, "eval_every": 10, "eval_batch": 32, **keys})


def paper_size(**keys) -> Size:
    """The paper's sizes (docs/spec.md §6): batch 512, T = 256, d = 128, 1000 steps at lr 0.03, an
    evaluation every 5 steps on 512 sequences, CUDA when present, a checkpoint every 100 steps."""
    return Size(**{"T": 256, "d": 128, "batch": 512, "steps": 1000, "lr": 0.03, "eval_every": 5, "eval_batch": 512,
                   "device": "auto", "checkpoint_every": 100, **keys})


def simplified(size: Size, **keys) -> dict:
    """The simplified model of Sec. 4.2 trained as in the official README command: frozen random
    embeddings and W_U, loss on the in-context targets only, SGD with momentum 0.9 and weight decay
    1e-4 at a constant learning rate, at ``size``; ``keys``: further dotted keys (``__`` for ``.``)."""
    ov = {"model_args.arch": "simplified", "model_args.freeze_embeddings": True, "model_args.freeze_output": True,
          "loss_head_only": True, "optim_args.use_sgd": True, "optim_args.momentum": 0.9,
          "optim_args.weight_decay": 1e-4, **size.keys()}
    ov.update({k.replace("__", "."): v for k, v in keys.items()})
    return ov


def full_model(size: Size, **keys) -> dict:
    """The general architecture with the official ``ihead_full_main.py`` defaults (pre-LN, ReLU MLP,
    learned positions, full loss, AdamW lr 0.01, wd 0.01, betas (0.9, 0.99)), at ``size``
    (whose ``lr`` is AdamW's); ``keys``: further dotted keys (``__`` for ``.``)."""
    ov = {"model_args.arch": "full", "loss_head_only": False, "optim_args.use_sgd": False,
          "optim_args.weight_decay": 0.01, "optim_args.beta1": 0.9, "optim_args.beta2": 0.99, **size.keys()}
    ov.update({k.replace("__", "."): v for k, v in keys.items()})
    return ov


@dataclass
class Output:
    """Where a reproduction writes: ``root/figures``, ``root/data``, ``root/runs``."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


@dataclass
class Recipe:
    name: str
    figure: str                 # the paper figure it reproduces
    title: str
    conditions: Callable[[str], dict[str, dict]]
    plot: Callable[["Results", Output], list[Path]]
    rules: Sequence = ()
    # what it trains, from the scale and its conditions' configs (seed 0), for the notes
    setup: Callable[[str, dict], str] = lambda scale, configs: ""
    differences: dict = field(default_factory=dict)  # scale -> its own differences from the paper scale
    # a computation instead of (or besides) training runs: compute(scale, seeds, out, workers) -> files
    compute: Optional[Callable[..., list[Path]]] = None
    info: Callable[["Results"], list[str]] = field(default=lambda res: [])  # shown without a verdict

    def sweep(self, scale: str, seeds: Sequence[int], base: Optional[dict] = None) -> Sweep:
        """The runs of the recipe at ``scale`` for the consecutive seed indices ``seeds``: its
        conditions, each a complete config (``base``: keys set in every run, e.g. the precision)."""
        seeds = list(seeds)
        if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            raise ValueError(f"{self.name}: seeds {seeds} are not consecutive")
        conditions = tuple((label, dict(ov)) for label, ov in self.conditions(check_scale(scale)).items())
        return Sweep(base=dict(base or {}), seeds=len(seeds), first_seed=seeds[0], conditions=conditions,
                     name=self.name)

    def claims(self, res: "Results", held_out: Optional["Results"] = None) -> list:
        """The claims-table rows of every rule on the published seeds' ``res`` and the held-out seeds'."""
        return [evaluate(rule, res, self.name, held_out) for rule in self.rules]

    def notes(self, scale: str) -> str:
        """What the recipe trains at ``scale`` and every difference from the paper scale, and why."""
        configs = self.configs(scale)
        what = self.setup(scale, configs)
        if not configs:  # computations only: nothing is scaled down
            return what
        return f"{what} Differences from the paper scale: {differences(scale, **self.differences)}"

    def configs(self, scale: str, seed: int = 0) -> dict[str, TrainConfig]:
        """The resolved (validated) config of each condition, for seed index ``seed``."""
        return {label: resolve_config(None, {**ov, **seed_overrides(seed)})
                for label, ov in self.conditions(check_scale(scale)).items()}


# ---------------------------------------------------------------------------------------------
# Reading runs back

class Results:
    """The completed runs of a recipe, by condition; curves are per seed on common iterations."""

    def __init__(self, scale: str, runs: dict[str, list[tuple[int, Path]]], order: Sequence[str],
                 root: Optional[Path] = None, seeds: Optional[Sequence[int]] = None):
        self.scale = scale
        self.root = root             # the reproduction's output folder (computations read from it)
        self.seeds = list(seeds) if seeds is not None else sorted({s for v in runs.values() for s, _ in v})
        self._runs = runs            # group -> [(seed index, run dir)] of completed runs
        self.order = list(order)     # groups in the order the recipe lists them
        self._metrics: dict[Path, list[dict]] = {}

    @classmethod
    def from_planned(cls, scale: str, pairs: Sequence[tuple[Planned, Path]],
                     complete: Callable[[Path], bool], root: Optional[Path] = None,
                     seeds: Optional[Sequence[int]] = None) -> "Results":
        """``pairs``: (planned run, its run directory); runs for which ``complete`` is false, or whose
        seed is not in ``seeds`` (when given), are left out."""
        runs: dict[str, list[tuple[int, Path]]] = {}
        order: list[str] = []
        for planned, path in pairs:
            if planned.condition not in order:
                order.append(planned.condition)
            if complete(Path(path)) and (seeds is None or planned.seed in seeds):
                runs.setdefault(planned.condition, []).append((planned.seed, Path(path)))
        return cls(scale, runs, order, root, seeds)

    def groups(self) -> list[str]:
        return [g for g in self.order if self._runs.get(g)]

    def has(self, *groups: str) -> bool:
        return all(g in self.groups() for g in groups)

    def run_dirs(self, group: str) -> list[Path]:
        return [p for _, p in self._runs.get(group, [])]

    def metrics(self, path: Path) -> list[dict]:
        if path not in self._metrics:
            self._metrics[path] = RunDir(path).read_metrics()
        return self._metrics[path]

    def curve(self, group: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(iters, values (n_seeds, n_iters)): NaN where a run has no value at an iteration."""
        runs = [self.metrics(p) for p in self.run_dirs(group)]
        iters = sorted({r["iter"] for rows in runs for r in rows})
        index = {it: i for i, it in enumerate(iters)}
        values = np.full((len(runs), len(iters)), np.nan)
        for s, rows in enumerate(runs):
            for r in rows:
                v = r.get(key)
                if isinstance(v, (int, float)):
                    values[s, index[r["iter"]]] = float(v)
        return np.asarray(iters, dtype=float), values

    def final(self, group: str, key: str) -> np.ndarray:
        """The last logged value of ``key`` for each seed."""
        _, values = self.curve(group, key)
        out = []
        for row in values:
            finite = row[~np.isnan(row)]
            out.append(finite[-1] if finite.size else np.nan)
        return np.asarray(out)

    def task(self, group: str) -> dict:
        return RunDir(self.run_dirs(group)[0]).read_task()

    def tasks(self, group: str) -> list[dict]:
        """task.json of each seed's run of ``group`` (its strategies were scored on its own batch)."""
        return [RunDir(p).read_task() for p in self.run_dirs(group)]

    def floors(self, group: str) -> dict:
        return self.task(group)["floors"]

    def config(self, group: str) -> TrainConfig:
        return RunDir(self.run_dirs(group)[0]).read_config()


def load_model(run_dir: Path):
    """The run's Setup on CPU with its final weights loaded."""
    return trained_setup(run_dir)


def describe(cfg: TrainConfig) -> str:
    """One line of a config's main settings: triggers, sizes, steps, optimiser."""
    d, m, o = cfg.data_args, cfg.model_args, cfg.optim_args
    opt = f"SGD + momentum {o.momentum:g} lr {o.learning_rate:g}" if o.use_sgd else f"AdamW lr {o.learning_rate:g}"
    task = (f"K = {d.k} {'fixed' if d.fixed_special_toks else 'random'} triggers" if d.task == "triggers"
            else f"task {d.task}")
    return f"{task}, T = {d.seq_length}, d = {m.dim}, batch {o.batch_size}, {cfg.max_iters} steps, {opt}"
