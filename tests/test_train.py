"""Short real trainings: the induction head forms, and the official command line runs unchanged."""
import json
import subprocess
import sys

import pytest
import torch

from birth.training.runs import RunDir
from birth.training.loop import train
from birth.training.validation import resolve_config
from trained_runs import quick_demo

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

OFFICIAL_KEYS = ["iter", "loss", "loss_bigram", "loss_head", "acc_tot", "acc_start", "acc_end", "acc_end_test",
                 "score_acc", "score_start_acc", "score2_acc", "score_cond_acc", "pred_attended_acc",
                 "repeat_frac", "wk0_acc", "wk0_64_acc", "wk1_acc", "wo1_acc", "ff1_loss"]

README_COMMAND = ("max_iters=1000 log_probes=True eval_delta=5 loss_head_only=True data_args.k=5 "
                  "data_args.fixed_special_toks=True optim_args.use_sgd=True optim_args.learning_rate=0.03 "
                  "optim_args.weight_decay=1e-4 optim_args.batch_size=512 model_args.final_ffn=False "
                  "model_args.freeze_embeddings=True model_args.freeze_output=True model_args.dim=256").split()


@pytest.fixture(scope="module")
def quick_run():
    """The quick preset whole, trained by `birth train` (its checkpoints and patching metric change no
    step), shared with the interop tests."""
    path = quick_demo()
    return path, json.loads((path / "summary.json").read_text())


def test_quick_preset_forms_an_induction_head(quick_run):
    path, summary = quick_run
    assert summary["status"] == "completed"
    final = summary["final_metrics"]
    chance = summary["floors"]["chance_acc"]
    assert final["eval_acc_end"] >= 0.9 > 20 * chance   # in-context accuracy on the evaluation batch
    assert final["score2_acc"] >= 0.8                    # layer 2 attends after the earlier occurrence
    assert final["wo1_acc"] >= 0.9 and final["wk1_acc"] >= 0.9
    first = RunDir(path).read_metrics()[0]
    assert first["eval_acc_end"] < 0.2 and first["wo1_acc"] < 0.3  # it was learned, not given


def test_run_directory_layout(quick_run):
    path, summary = quick_run
    run = RunDir(path)
    rows = run.read_metrics()
    assert [r["iter"] for r in rows] == list(range(0, 400, 20)) + [399]
    assert set(OFFICIAL_KEYS) <= set(rows[-1])
    assert run.read_config().optim_args.batch_size == 128
    floors = run.read_task()["floors"]
    assert 2.0 < floors["floor_loss_bigram"] < 2.4 and floors["floor_loss_head"] == 0.0
    assert (run.latest_checkpoint() is not None
            and json.loads((path / "summary.json").read_text())["status"] == "completed")


def test_official_readme_command_runs_unchanged(tmp_path):
    out = tmp_path / "readme"
    cmd = [sys.executable, "-m", "birth", "train", *README_COMMAND, "max_iters=2", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = RunDir(out).read_metrics()
    assert len(rows) == 2  # iterations 0 and 1 (the last step is always evaluated)
    for row in rows:
        missing = [k for k in OFFICIAL_KEYS if k not in row]
        assert not missing, missing
    cfg = RunDir(out).read_config()
    assert (cfg.model_args.dim, cfg.optim_args.learning_rate, cfg.data_args.k) == (256, 0.03, 5)


def test_without_the_fixed_evaluation_batch_a_run_trains_the_same(tmp_path):
    """eval_fixed_batch=false drops the eval_* metrics (the official script has none) and changes
    nothing else: the evaluation is read-only, so every other metric stays equal."""
    small = ["max_iters=12", "eval_delta=4", "eval_batch_size=32", "model_args.dim=32", "data_args.seq_length=32",
             "model_args.max_length=32", "optim_args.batch_size=16"]
    rows = {}
    for flag in ("true", "false"):
        train(resolve_config("quick", [*small, f"eval_fixed_batch={flag}"]), tmp_path / flag, quiet=True)
        rows[flag] = RunDir(tmp_path / flag).read_metrics()
    assert [r["iter"] for r in rows["false"]] == [0, 4, 8, 11]
    for full, lean in zip(rows["true"], rows["false"]):
        assert "eval_acc_end" in full and not [k for k in lean if k.startswith("eval_")]
        assert {k: v for k, v in full.items() if not k.startswith("eval_") and k != "elapsed"} == \
               {k: v for k, v in lean.items() if k != "elapsed"}


@pytest.mark.parametrize("arch", ["simplified", "full"])
@pytest.mark.parametrize("scores", [1 << 22, 100 * 32 * 32], ids=["explicit", "fused-at-128"])
def test_evaluation_chunks_change_no_bit_of_a_metric(monkeypatch, arch, scores):
    """The evaluation batches pass through the model in chunks of EVAL_TOKENS tokens: chunks of tens of
    sequences give the bits of one pass (here 5 chunks of 40 against 1 of 200; chunks of a few sequences
    can take other matrix kernels), and the OOD pass keeps the attention computation of 128-sequence chunks.
    The simplified model's OOD pass runs layer 2 at the targets in groups of a chunk's sequences sorted by
    their count of targets: other chunks make other groups, other kernels, and logits within rounding."""
    from birth.model import simplified_pass as targets
    from birth.training import evaluation as E
    from birth.training.build import build_setup
    monkeypatch.setattr(targets, "EXPLICIT_SCORES", scores)
    cfg = resolve_config("full" if arch == "full" else "quick",
                         ["model_args.dim=32", "data_args.seq_length=32", "model_args.max_length=32",
                          "eval_batch_size=200", "data_args.output_split=true"])
    setup = build_setup(cfg)
    evaluator = E.Evaluator(setup)
    results, logits = [], []
    for tokens in (10 ** 9, 40 * 32):
        monkeypatch.setattr(E, "EVAL_TOKENS", tokens)
        ev = E.Evaluation(0, evaluator, stepped=None)
        results.append({**E.out_of_distribution(ev), **E.evaluation_batch(ev)})
        mask = setup.task.ood_accuracy_mask(arch)
        logits.append(torch.cat(E.ood_logits(setup, evaluator.batches["test"], mask)))
    assert {"acc_end_test", "acc_end_split_test", "eval_loss", "eval_score2_acc"} <= set(results[0])
    if arch == "full":
        assert results[0] == results[1] and torch.equal(*logits)
    else:
        assert results[0] == pytest.approx(results[1], rel=1e-5)
        torch.testing.assert_close(*logits, rtol=1e-5, atol=1e-5)
