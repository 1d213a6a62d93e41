"""`birth theory ...`: the subcommand writes its data, figure and summary section."""
import pytest

from birth.cli import parse
from birth.commands import _three_step_overrides
from birth.experiments.theory.computations import update_summary

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def _parse(*argv):
    return parse(["theory", *argv])


def test_lemma_subcommand_writes_csv_figures_and_summary(tmp_path):
    args = _parse("lemma", "--quick", "--out", str(tmp_path), "--seed", "3")
    assert args.func(args) == 0
    for name in ("lemma.csv", "lemma.png", "lemma.pdf", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = (tmp_path / "summary.md").read_text()
    assert "## lemma (seed 3)" in summary
    # the measured Lemma 1 error is written down, and it is at float64 precision
    error = float(summary.split("max relative error ")[1].split()[0])
    assert error < 1e-10


def test_summary_sections_are_replaced_not_duplicated(tmp_path):
    update_summary(tmp_path, "noisy", "## noisy\nfirst")
    update_summary(tmp_path, "capacity", "## capacity\nkept")
    update_summary(tmp_path, "noisy", "## noisy\nsecond")
    text = (tmp_path / "summary.md").read_text()
    assert text.count("## noisy") == 1 and "second" in text and "first" not in text and "kept" in text


def test_three_steps_options_reach_the_config():
    args = _parse("three-steps", "--k", "5", "--random-triggers", "--allow-repeat", "--step-norms", "30,auto,1e4")
    over = _three_step_overrides(args)
    assert over == {"k": 5, "fixed_triggers": False, "no_repeat": False, "step_norms": (30.0, None, 1e4)}
    assert _three_step_overrides(_parse("three-steps", "--criterion", "acc")) == {"criterion": "acc"}


def test_three_steps_precision_reaches_the_model_through_the_command_line(tmp_path):
    args = _parse("three-steps", "--quick", "--dims", "16", "--n-seqs", "64", "--precision", "float64",
                  "--out", str(tmp_path), "--seed", "1")
    assert _three_step_overrides(args) == {"n_seqs": 64, "precision": "float64"}
    assert args.func(args) == 0
    assert "float64. Step size" in (tmp_path / "summary.md").read_text()
    with pytest.raises(SystemExit):
        _parse("three-steps", "--precision", "float16")


def test_same_seed_gives_identical_data_and_another_seed_differs(tmp_path):
    runs = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        args = _parse("noisy", "--quick", "--dims", "16,32", "--out", str(tmp_path / name), "--seed", seed)
        assert args.func(args) == 0
        runs[name] = (tmp_path / name / "noisy.csv").read_text()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
