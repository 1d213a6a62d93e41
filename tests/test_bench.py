"""`birth bench induction` watches a real `birth train` and stops it at the first line over the threshold."""
import pytest

from birth.bench import INDUCTION, time_to_induction

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def test_induction_timer_stops_at_the_first_line_over_the_threshold():
    r = time_to_induction(threshold=0.0, timeout=300, threads=1)  # every line qualifies: the first one wins
    assert r["iter"] == 0 and r["acc_end_test"] >= 0.0 and 0 < r["seconds"] < 300
    assert r["command"] == "birth train " + " ".join(INDUCTION)


def test_induction_timer_reports_a_run_that_cannot_reach_it():
    with pytest.raises(RuntimeError, match="did not reach 2.0 within"):
        time_to_induction(threshold=2.0, timeout=8, threads=1)   # accuracy never exceeds 1
