"""The per-run figures: readable glyphs, a colorbar, a legend for the boxes, the triggers and the
positions shown in the title; curves labelled for what they are, chance lines, the untrained
global loss explained. Also the Python loader the figures and notebook read runs with."""
import dataclasses

import matplotlib
import pytest
import torch

import birth
from birth.training.config import ConfigError, TrainConfig
from birth.analysis.plots import attention_figure, glyph, plot_run, run_panels
from trained_runs import quick_run

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

TASK = {"num_tokens": 65, "fixed_triggers": [1, 2, 3], "floors": {"floor_loss_head": 0.0, "floor_loss_bigram": 2.2}}


def test_glyphs_make_whitespace_visible():
    assert [glyph(c) for c in "\n \ta"] == ["\u23ce", "\u2423", "\u21e5", "a"]


def test_attention_figure_of_a_trained_run():
    run = birth.load_run(quick_run())
    assert run.metrics[-1]["score2_acc"] > 0.8  # the run learned its induction head
    setup = run.setup
    setup.model.load_state_dict(run.model().state_dict())
    fig = attention_figure(setup)
    maps, colorbar = fig.axes[:2], fig.axes[2:]
    assert len(maps) == 2 and len(colorbar) == 1 and colorbar[0].get_ylabel() == "attention weight"
    ticks = [t.get_text() for t in maps[1].get_xticklabels()]
    assert len(ticks) == 64 and all(len(t) == 1 for t in ticks)     # one visible glyph per position
    assert "\u23ce" in ticks or "\u2423" in ticks
    title = fig._suptitle.get_text()
    assert "all 64 positions" in title and "triggers (fixed): t e \u2423" in title
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["trigger \u2192 output (outs \u2265 2)",
                                                                   "other repeated token"]
    matplotlib.pyplot.close(fig)


def test_plot_run_writes_the_four_figures(tmp_path):
    paths = plot_run(quick_run(), tmp_path)
    assert [p.name for p in paths] == ["probes.png", "losses.png", "positions.png", "attention.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 20_000 for p in paths)


def _panels(cfg, task=TASK, rows=()):
    return {p.name: p for p in run_panels(cfg, task, rows)}


def test_panels_name_what_is_plotted():
    cfg = TrainConfig()
    panels = _panels(cfg)
    acc, probes, losses = panels["accuracy"], panels["probes"], panels["losses"]
    # no distribution shift: the test batch is not called OOD
    assert not any("OOD" in label for _, label in acc.series)
    shifted = dataclasses.replace(cfg, data_args=dataclasses.replace(cfg.data_args, bigram_outs_test=True))
    assert any("OOD" in label for _, label in _panels(shifted)["accuracy"].series)
    # K-way chance line for wk1; wk0_64 is shown only when it differs from wk0
    assert any(abs(v - 1 / 3) < 1e-12 for v, _ in probes.lines)
    assert "wk0_64_acc" in [k for k, _ in probes.series]          # max_length 256 > 64
    short = dataclasses.replace(cfg, model_args=dataclasses.replace(cfg.model_args, max_length=64))
    short_probes = _panels(short)["probes"]
    assert "wk0_64_acc" not in [k for k, _ in short_probes.series] and "equals" in short_probes.note
    # the untrained global loss is said to be untrained
    assert "not trained" in dict(losses.series)["eval_loss_bigram"] and "loss_head_only" in losses.note
    trained_all = _panels(dataclasses.replace(cfg, loss_head_only=False))["losses"]
    assert "not trained" not in dict(trained_all.series)["eval_loss_bigram"] and not trained_all.note
    # another task: no memory probes when its metrics have none; its strategies drawn against the model
    markov = {"num_tokens": 3, "masks": {"in_context": {"loss": "loss_in_context", "acc": "acc_in_context"}},
              "reference_strategies": ["ngram", "unigram"],
              "strategies": {"ngram": {"in_context": {"loss": 0.5, "acc": 0.7}},
                             "unigram": {"in_context": {"loss": 0.9, "acc": 0.5}}}}
    other = _panels(cfg, markov, rows=[{"iter": 0, "eval_acc_in_context": 0.3, "eval_kl_ngram_in_context": 0.2}])
    assert "probes" not in other and ("eval_kl_ngram_in_context", "ngram") in other["kl"].series
    assert (0.5, "strategy ngram, in-context") in other["losses"].lines
    # windows of freezes and interventions are shaded
    frozen = dataclasses.replace(cfg, freeze_until="300:W_O2", interventions="clamp:0:previous@0-200", max_iters=1000)
    assert _panels(frozen)["accuracy"].windows == [(0, 300, "W_O2 frozen"), (0, 200, "clamp:0:previous")]


def test_load_run_gives_config_models_samplers_and_metrics():
    run = birth.load_run(quick_run())
    assert run.config.max_iters == 200 and run.steps == [40, 80, 120, 160, 200]
    rows = run.metrics
    iters, acc = run.column("eval_acc_end")
    assert iters == [r["iter"] for r in rows] and acc[-1] >= 0.9 > acc[0]
    batch = run.eval_batch()
    with torch.no_grad():
        early, late = run.model(40)(batch.x), run.model()(batch.x)
    hit = lambda logits: float((logits.argmax(-1) == batch.y)[batch.outs >= 2].float().mean())
    assert hit(late) == pytest.approx(acc[-1], abs=1e-6) and hit(early) < hit(late)
    text = run.decode(batch.x[0])
    assert len(text) == 64 and torch.equal(run.encode(text), batch.x[0].cpu())
    assert run.setup.triggers == run.task["fixed_triggers"]


def test_load_run_errors_name_the_path_or_step(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path)):
        birth.load_run(tmp_path)
    with pytest.raises(ConfigError, match="step 7"):
        birth.load_run(quick_run()).model(7)


def test_a_redrawn_figure_gives_the_same_pdf_bytes(tmp_path):
    """No creation date in the PDFs: rerunning `birth reproduce` leaves unchanged figures unchanged."""
    import time

    import matplotlib.pyplot as plt

    from birth.experiments.figures import save
    for folder in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [0.1, 0.5, 0.9])
        save(fig, tmp_path / folder, "curve")
        time.sleep(1.1)  # a creation date, if written, would differ by a second
    assert (tmp_path / "a" / "curve.pdf").read_bytes() == (tmp_path / "b" / "curve.pdf").read_bytes()
