"""The theory recipe end to end at tiny scale: the computations run once per seed into
OUT/theory/seed_<i>, their rules read each seed's CSVs, and a rerun computes nothing."""
from __future__ import annotations

import json

import pytest

from conftest import reproduce_tiny

from birth.experiments.recipes import theory as theory_recipe

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("theory")
    report = reproduce_tiny("theory", root, seeds=2, workers=2)  # the pieces shared out between two workers
    assert report.exit_code == 0 and report.trained == 0
    return root


def test_computations_write_their_csvs_and_figures(out):
    for seed in (0, 1):
        for name in theory_recipe.EXPERIMENTS:
            assert (out / "theory" / f"seed_{seed}" / f"{name}.csv").stat().st_size > 0
            assert (out / "theory" / f"seed_{seed}" / f"{name}.png").stat().st_size > 10_000
    assert "theory/seed_1/three-steps.png" in (out / "README.md").read_text()
    # the seeds draw differently: their capacity tables differ
    assert ((out / "theory" / "seed_0" / "capacity.csv").read_text()
            != (out / "theory" / "seed_1" / "capacity.csv").read_text())


def test_theory_claims_read_the_computed_numbers(out):
    rows = {r["id"]: r for r in json.loads((out / "claims" / "theory.json").read_text())["claims"]}
    assert set(rows) == {"6a", "12", "13", "13c", "14", "§3.1a"}
    # exact formulas in float64: Lemma 1 holds whatever the sizes; an implementation check, tabled apart
    assert rows["14"]["verdict"] == "PASS" and rows["14"]["per_seed"] == [True, True] and rows["14"]["role"] == "check"
    lemma = [line for line in (out / "theory" / "seed_0" / "summary.md").read_text().splitlines()
             if "Lemma 1 vs autograd" in line]
    assert lemma and rows["14"]["measured"].startswith("Lemma 1 error ")
    assert rows["6a"]["measured"].startswith("d ")


def test_a_rerun_computes_nothing(out):
    before = {p: p.stat().st_mtime_ns for p in (out / "theory").glob("*/*.csv")}
    assert reproduce_tiny("theory", out, seeds=2).exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "theory").glob("*/*.csv")} == before


def test_three_steps_in_pieces_on_two_workers_writes_what_one_pass_writes(out, tmp_path):
    """The pieces (one per width and model) are pure functions of the seed: shared out between two
    worker processes and put back together (the module's reproduction), they give the one-pass
    computation's CSV byte for byte."""
    from birth.experiments.theory.computations import run_experiment
    run_experiment("three-steps", tmp_path / "one", seed=1, quick=True, log=lambda s: None,
                   **theory_recipe.TINY["three-steps"])
    pieces = out / "theory" / "seed_1"
    assert (pieces / "three-steps.csv").read_text() == (tmp_path / "one" / "three-steps.csv").read_text()
    assert not list(pieces.glob("*.piece*.json"))  # the pieces are gone once put together
