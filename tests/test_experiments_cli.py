"""The `birth reproduce` command: argument errors are one line with exit code 2; dry runs train nothing."""
from __future__ import annotations

from birth.cli import main


def test_unknown_recipe_is_a_usage_error(capsys, tmp_path):
    assert main(["reproduce", "fig9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'fig9'" in err and len(err.strip().splitlines()) == 1


def test_bad_seeds_and_jobs_are_usage_errors(capsys, tmp_path):
    assert main(["reproduce", "fig3", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "fig3", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_dry_run_lists_runs_and_trains_nothing(capsys, tmp_path):
    assert main(["reproduce", "all", "--scale", "quick", "--dry-run", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "69 runs (0 already complete, 69 to train)" in err
    assert err.count("todo") == 69
    assert not (tmp_path / "runs").exists()
