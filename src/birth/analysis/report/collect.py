"""The payload of a report: everything the page draws, gathered from a run or reproduction directory.

A run: config, summary, the curves of ``birth.analysis.plots.run_panels``, the attention of both layers on
one evaluation sequence at every saved checkpoint, and the TransformerLens export check and head
scores (when ``transformer-lens`` is installed). A reproduction (``OUT/reproduce.json``): its
claims table, its figures (PNG, inlined as data URIs) and the same run view for each of its runs.
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
import sys
from pathlib import Path

import torch

from birth.training.config import ConfigError, dump_yaml
from birth.analysis.plots import attention_example, glyph, metric_names, repeat_boxes, run_panels
from birth.training.exits import NoWholeCheckpoint
from birth.training.runs import RunDir
from birth.analysis.sweep_plots import plot_sweep
from birth.analysis.transformer_lens import tl_head_scores, to_transformer_lens
from birth.launching.sweep import read_index
from birth.measures.heads import HEAD_SCORES, head_scores
from birth.training.build import build_setup
from birth.training.evaluation import Evaluator
from birth.training.interventions import Interventions

MAX_RUNS = 12          # runs of a reproduction shown in its page
# the final metrics a run's page lists first: the task's per-mask ones (``metric_names``), then these
SUMMARY_KEYS = ("eval_icl_score", "head_previous_max", "head_induction_max", "score2_acc", "wo1_acc", "wk1_acc",
                "wk0_acc")


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def label_html(label: str) -> str:
    """A plot label as HTML: ``$W_O^2$`` -> W<sub>O</sub><sup>2</sup>, everything else escaped."""
    return re.sub(r"\$W_(\w)\^(\d)\$", r"W<sub>\1</sub><sup>\2</sup>", html.escape(label))


def collect(path: Path) -> dict:
    """The payload of ``path``: a reproduction output if it holds reproduce.json, a sweep output if it
    holds sweep.json, else a run."""
    if (path / "reproduce.json").exists():
        return _reproduction(path)
    if (path / "sweep.json").exists():
        return _sweep(path)
    if not RunDir(path).holds_run():
        raise ConfigError(f"report: {path} holds no run (config.yaml), reproduction (reproduce.json) or sweep "
                          "(sweep.json)")
    return {"kind": "run", "title": f"birth run {path.name}", "runs": [run_payload(path)]}


def _reproduction(root: Path) -> dict:
    state = json.loads((root / "reproduce.json").read_text())
    claims_file = root / "claims.json"
    claims = json.loads(claims_file.read_text()).get("claims", []) if claims_file.exists() else []
    figures = [{"name": p.stem, "src": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()}
               for p in sorted((root / "figures").glob("*.png"))]
    run_dirs = [p for p in sorted((root / "runs").glob("*")) if RunDir(p).holds_run() and RunDir(p).checkpoints()]
    shown, damaged = _readable([(p, p.name) for p in run_dirs[:MAX_RUNS]])
    return {"kind": "reproduction", "title": f"birth reproduction {root.name}",
            "command": state.get("last", {}).get("command", ""),
            "claims": [{k: str(c.get(k, ""))
                        for k in ("id", "claim", "figure", "rule", "measured", "verdict", "reason")}
                       for c in claims],
            "figures": figures, "runs_total": len(run_dirs), "runs": shown, "damaged": damaged}


def _sweep(root: Path) -> dict:
    """A sweep output (``birth sweep``) as a reproduction's page: its figures, drawn afresh by each
    swept key (``birth plot OUT --by KEY``), and the run view of its runs, named by their labels."""
    index = read_index(root)
    files: list[Path] = []
    for key in index["swept"]:
        try:
            files += plot_sweep(root, key)
        except ConfigError as err:  # no metrics yet, or too many panels: the page goes on without it
            print(f"birth: report: no figure by {key}: {err}", file=sys.stderr)
    figures = [{"name": p.stem, "src": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()}
               for p in files]
    runs = [r for r in index["runs"] if RunDir(root / r["run_dir"]).checkpoints()]  # trained, or resumable
    shown, damaged = _readable([(root / r["run_dir"], f"{r['label']} ({Path(r['run_dir']).name})")
                                for r in runs[:MAX_RUNS]])
    return {"kind": "reproduction", "title": f"birth sweep {root.name}", "command": index.get("command", ""),
            "claims": [], "figures": figures, "runs_total": len(runs), "runs": shown, "damaged": damaged}


def _readable(runs: list[tuple[Path, str]]) -> tuple[list[dict], list[str]]:
    """The run view of each (run directory, name), and the names of the runs skipped because no
    checkpoint of theirs is whole (each said in one line)."""
    shown, damaged = [], []
    for path, name in runs:
        try:
            shown.append({**run_payload(path), "name": name})
        except NoWholeCheckpoint as err:
            print(f"birth: report: skipped {name}: {err}", file=sys.stderr)
            damaged.append(name)
    return shown, damaged


def run_payload(path: Path) -> dict:
    """Config, summary, curves, attention over checkpoints and TL scores of one run."""
    run = RunDir(path)
    cfg, task, rows = run.read_config(), run.read_task(), run.read_metrics()
    summary = run.read_summary()
    final = rows[-1] if rows else {}
    panels = []
    for p in run_panels(cfg, task, rows):
        series = []
        for key, label in p.series:
            pts = [(r["iter"], _finite(r.get(key))) for r in rows if "iter" in r]
            if any(v is not None and v >= 0 for _, v in pts):
                series.append({"key": key, "label": label_html(label), "iters": [i for i, _ in pts],
                               "values": [v for _, v in pts]})
        if not series:  # nothing this run logged for it (e.g. the paper's probes in another task)
            continue
        panels.append({"name": p.name, "title": html.escape(p.title), "ylabel": p.ylabel, "series": series,
                       "lines": [{"value": v, "label": label_html(lab)} for v, lab in p.lines
                                 if _finite(v) is not None],
                       "note": label_html(p.note), "ylim": p.ylim, "log": p.log,
                       "windows": [{"start": a, "end": b, "label": html.escape(lab)} for a, b, lab in p.windows]})
    return {"name": path.name, "config": dump_yaml(cfg), "status": summary.get("status", "unknown"),
            "steps": summary.get("steps"), "wall_seconds": summary.get("wall_seconds"),
            "summary": {k: _finite(final.get(k)) for k in _summary_keys(task) if k in final},
            "panels": panels, **_attention(run)}


def _summary_keys(task: dict) -> list[str]:
    names = metric_names(task)
    return [f"eval_{names[m][kind]}" for m in names for kind in ("acc", "loss")] + list(SUMMARY_KEYS)


def _attention(run: RunDir, length: int = 64) -> dict:
    """Attention maps of every layer and head at every checkpoint, on one evaluation sequence."""
    if not run.checkpoints():
        return {"attention": None, "tl": {"error": "no checkpoint"}}
    ckpts = run.whole_checkpoints()  # a damaged one is named and left out; NoWholeCheckpoint when none is whole
    cfg = run.read_config()
    setup = build_setup(cfg, torch.device("cpu"))
    ex = attention_example(setup, length)
    t = len(ex["tokens"])
    # the patterns the run used: its clamps act on them in their windows (the step that made a checkpoint)
    clamps = Interventions(cfg.interventions, setup.model, setup.triggers, cfg.data_args.seq_length)
    maps, clamped = [], []
    for step, state in ckpts:
        setup.model.load_state_dict(state["model"])
        setup.model.eval()
        clamps.step = max(step - 1, 0)
        with torch.no_grad():
            _, patterns = setup.model(ex["x"], return_attn=True)
        # [layer][head] -> row-major T*T, 3 decimals
        maps.append([[[round(float(v), 3) for v in attn[0, h].flatten()] for h in range(attn.shape[1])]
                     for attn in patterns])
        on_layer = lambda iv, layer: iv.kind == "clamp" and iv.target.split(".")[0] == str(layer)
        clamped.append([", ".join(iv.text() for iv in clamps.entries if on_layer(iv, layer) and iv.active(clamps.step))
                        for layer in range(len(patterns))])
    clamps.step = -1  # no clamp is active before step 0: the export check below sees the model alone
    attention = {"chars": [glyph(c) for c in ex["chars"]], "raw": ex["chars"], "in_context": ex["in_context"], "T": t,
                 "seq_length": ex["seq_length"],
                 "triggers": None if ex["triggers"] is None else [glyph(c) for c in ex["triggers"]],
                 "fixed": ex["fixed"], "box_label": ex["box_label"],
                 "boxes": [[q, s, int(tr)] for q, s, tr in repeat_boxes(ex["tokens"], ex["in_context"])],
                 "steps": [s for s, _ in ckpts], "maps": maps, "clamps": clamped}
    return {"attention": attention, "tl": tl_check(setup)}


def tl_check(setup, n_seqs: int = 32) -> dict:
    """The TransformerLens export of the latest weights in ``setup``: max |Δlogit| and max attention
    difference on the first ``n_seqs`` evaluation sequences, and per layer and head the head scores
    on the run's repeated-random-tokens batch, birth's (``birth.measures.predictions.head_scores``) beside
    TransformerLens' ``detect_head``."""
    try:
        bridge = to_transformer_lens(setup.model)
    except ConfigError as err:
        return {"error": str(err)}
    x = setup.eval_batches()["eval"].x[:n_seqs].cpu()
    with torch.no_grad():
        ours, patterns = setup.model(x, return_attn=True)
        theirs, cache = bridge.run_with_cache(x)
    attn_diff = max(float((cache[f"blocks.{i}.attn.hook_pattern"] - p).abs().max()) for i, p in enumerate(patterns))
    tokens = Evaluator(setup).heads_tokens[:, :setup.model.args.max_length - 1]  # detect_head needs T < n_ctx
    with torch.no_grad():
        native = head_scores(setup.model(tokens, return_attn=True)[1], tokens)
    tl = tl_head_scores(bridge, tokens)
    heads = {kind: {"birth": [[native[f"head_{kind}_l{layer}h{h}"] for h in range(len(row))]
                              for layer, row in enumerate(tl[kind])],
                    "transformer_lens": tl[kind]} for kind in HEAD_SCORES}
    return {"max_logit_diff": float((ours - theirs).abs().max()), "max_attention_diff": attn_diff,
            "n_seqs": len(x), "heads": heads, "head_tokens": list(tokens.shape)}

