"""The local learning coefficient (LLC) of a run at each of its saved checkpoints
(``birth.measures.llc``: devinterp's SGLD sampler; the `llc` extra: ``pip install 'birth[llc]'``).

    LLC(w*) = nβ · (E_SGLD[L_m(w)] − L(w*))

where the chains start at the checkpoint's weights w*, sample the tempered posterior localized at
w* (SGLD with step ``lr``, localization ``gamma``, inverse temperature ``nbeta``), and L is the run's
own training objective (``training_loss``: cross-entropy at the in-context targets for
``loss_head_only``) on fresh batches of the run's task. The batches come from a stream of their
own (``"llc"``), not the training stream, and only the parameters the run trains move: the frozen
ones (``freeze_embeddings``, the simplified model's random memories, ...) stay fixed, and a
``freeze_until`` schedule is taken in its final state, so every checkpoint is measured on the same
parameters. The numbers are a pure function of the run, the settings and ``seed``.

    RUN/llc.csv           step, llc_mean, llc_std (across chains), init_loss, llc_chain_0, ...
    RUN/llc.json          the settings, the number of sampled parameters, the devinterp version
    RUN/figures/llc.png   the LLC over the checkpoint steps, the in-context accuracy on a second axis
"""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from birth.analysis.plots import COLUMN_WIDTH, paper_style, plt
from birth.measures.llc import LLCError, LLCSettings, estimate, require_devinterp, version_of
from birth.training.build import apply_freeze, build_setup, freeze_schedule
from birth.training.config import ConfigError
from birth.training.evaluation import training_loss
from birth.training.runs import RunDir


class _StreamBatch:
    """A loader's ``collate_fn``: the indices k·m .. k·m+m−1 of its k-th batch -> batch k of the
    run's task on the stream ``llc``, m sequences (devinterp reads m as the loader's batch size)."""

    def __init__(self, task, seed: int, batch_size: int):
        self.task, self.seed, self.batch_size = task, seed, batch_size

    def __call__(self, indices: list[int]):
        return self.task.batch(self.seed, "llc", indices[0] // self.batch_size, self.batch_size)


def stream_loader(setup, batches: int, batch_size: int) -> torch.utils.data.DataLoader:
    """The first ``batches`` batches of the stream ``llc`` of the run's task, in order."""
    return torch.utils.data.DataLoader(range(batches * batch_size), batch_size=batch_size, shuffle=False,
                                       collate_fn=_StreamBatch(setup.task, setup.cfg.seed, batch_size))


def _objective(loss_head_only: bool):
    """The run's training loss as devinterp's ``evaluate(model, batch) -> loss``."""

    def evaluate(model, batch):
        return training_loss(loss_head_only, model(batch.x), batch)
    return evaluate


def sampled_setup(run_dir: str | Path, device: torch.device | None = None):
    """The run's Setup with requires_grad as at the end of training (the freeze schedule's final
    state): the parameters SGLD samples are those with requires_grad."""
    cfg = RunDir(run_dir).read_config()
    setup = build_setup(cfg, device)
    apply_freeze(setup.model, freeze_schedule(cfg.freeze_until, setup.model), cfg.max_iters - 1)
    return setup


def select_checkpoints(run: RunDir, steps: Sequence[int] | None) -> list[tuple[int, Path]]:
    """The run's checkpoints, or those at ``steps``; ConfigError for none or a missing step."""
    found = run.checkpoints()
    if not found:
        raise ConfigError(f"llc: {run.path} has no checkpoint (save some with checkpoint_steps=100,300 "
                          "or checkpoint_every=N)")
    if not steps:
        return found
    by_step = dict(found)
    missing = [s for s in steps if s not in by_step]
    if missing:
        raise ConfigError(f"llc: --steps: no checkpoint at step {missing[0]} in {run.path} "
                          f"(saved: {', '.join(str(s) for s, _ in found)})")
    return [(s, by_step[s]) for s in sorted(set(steps))]


def llc_over_checkpoints(run_dir: str | Path, settings: LLCSettings = LLCSettings(),
                         steps: Sequence[int] | None = None, log=print) -> tuple[list[dict], dict]:
    """(one row per checkpoint: step, llc_mean, llc_std, init_loss, llc_chain_i; the header: the
    resolved settings, the sampled parameter count and the devinterp version)."""
    run = RunDir(run_dir)
    if not run.holds_run():
        raise ConfigError(f"llc: {run.path} holds no run (no config.yaml)")
    try:
        settings.check()
        chosen = select_checkpoints(run, steps)
        require_devinterp()
    except LLCError as err:
        raise ConfigError(str(err)) from None
    setup = sampled_setup(run.path)
    # before any estimate: a damaged checkpoint is named and left out; none whole ends here (exit 5)
    states = run.whole_checkpoints(setup.device, [step for step, _ in chosen], warn=log)
    s = settings.resolved(setup.cfg.optim_args.batch_size)
    sampled = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
    header = {"settings": asdict(s), "sampled_parameters": sampled, "devinterp": version_of("devinterp"),
              "objective": "loss_head_only" if setup.cfg.loss_head_only else "all positions"}
    rows = []
    for step, state in states:
        setup.model.load_state_dict(state["model"])
        loader = stream_loader(setup, s.burnin + s.draws, s.batch_size)
        row = {"step": step, **estimate(setup.model, loader, _objective(setup.cfg.loss_head_only), s, setup.device)}
        log(f"birth: llc step {step}: {row['llc_mean']:.3f} ± {row['llc_std']:.3f}")
        rows.append(row)
    return rows, header


def write_llc(out: str | Path, rows: list[dict], header: dict) -> tuple[Path, Path]:
    """Writes OUT/llc.csv (one row per checkpoint) and OUT/llc.json (the header)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "llc.csv", out / "llc.json"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    json_path.write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    return csv_path, json_path


def read_llc(path: str | Path) -> list[dict]:
    """llc.csv as a list of dicts (step an int, the rest floats)."""
    with open(path, newline="") as f:
        return [{k: int(v) if k == "step" else float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_llc(run_dir: str | Path, rows: list[dict], header: dict, path: str | Path) -> Path:
    """The LLC (mean ± std across chains) over the checkpoint steps, with the run's in-context
    accuracy on the fixed evaluation batch on a second axis where the run logged it."""
    run = RunDir(run_dir)
    steps = [r["step"] for r in rows]
    mean = [r["llc_mean"] for r in rows]
    std = [r["llc_std"] for r in rows]
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.3, 2.4))
        ax.errorbar(steps, mean, yerr=std, marker="o", ms=3, capsize=2, color="C0", label="LLC (± std over chains)")
        ax.set(xlabel="checkpoint step", ylabel="local learning coefficient")
        if min(m - d for m, d in zip(mean, std)) > 0:
            ax.set_ylim(bottom=0)  # the scale from zero: how large the changes are, not only their sign
        s = header["settings"]
        ax.set_title(f"LLC: {s['chains']} chains × {s['draws']} draws, ε={s['lr']:g}, γ={s['gamma']:g}, "
                     f"nβ={s['nbeta']:.3g}")
        acc = _accuracy_series(run)
        if acc:
            twin = ax.twinx()
            twin.spines["right"].set_visible(True)
            twin.plot(*acc[1:], color="C1", lw=1, alpha=0.8, label=f"{acc[0]} (right axis)")
            twin.set_ylabel("in-context accuracy")
            twin.set_ylim(0, 1.02)
            ax.legend(handles=ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0],
                      loc="upper left", bbox_to_anchor=(0.0, -0.22), frameon=False)
        else:
            ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.22), frameon=False)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
    return path


def _accuracy_series(run: RunDir) -> tuple[str, list, list] | None:
    """(key, iterations, values) of the in-context accuracy on the evaluation batch, if logged."""
    try:
        key = "eval_" + run.read_task()["masks"]["in_context"]["acc"]
    except (OSError, KeyError, ValueError):
        return None
    pts = [(r["iter"], r[key]) for r in run.read_metrics() if r.get(key) is not None and "iter" in r]
    return (key, *map(list, zip(*pts))) if pts else None


def run_llc(run_dir: str | Path, settings: LLCSettings = LLCSettings(), steps: Sequence[int] | None = None,
            out: str | Path | None = None, log=print) -> list[Path]:
    """``birth llc``: estimates, writes llc.csv, llc.json and figures/llc.png (in OUT, default RUN)."""
    rows, header = llc_over_checkpoints(run_dir, settings, steps, log)
    out = Path(out) if out else Path(run_dir)
    paths = list(write_llc(out, rows, header))
    paths.append(plot_llc(run_dir, rows, header, out / "figures" / "llc.png"))
    return paths
