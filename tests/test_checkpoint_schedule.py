"""``checkpoint_steps``: step numbers and ``log:N``, N log-spaced steps dense early (around the
transitions), kept for analysis and read by the report's slider."""
import pytest

from birth.training.build import checkpoint_steps, log_spaced
from birth.training.config import ConfigError
from birth.training.runs import RunDir
from birth.training.loop import train
from birth.training.validation import resolve_config


def test_log_spaced_steps_are_distinct_dense_early_and_end_at_the_last_step():
    steps = sorted(log_spaced(40, 1000))
    assert len(steps) == 40 and steps[0] == 1 and steps[-1] == 1000
    assert steps[19] <= 60  # half of them in the first 6%: dense where the first transitions happen
    ratios = [b / a for a, b in zip(steps[20:], steps[21:])]
    assert max(ratios) / min(ratios) < 1.1  # later, a constant ratio: evenly spaced in log
    assert log_spaced(500, 100) == set(range(1, 101))


def test_numbers_and_log_combine_and_bad_entries_are_named():
    assert checkpoint_steps("log:3,50", 100) == {1, 10, 100, 50}
    for bad in ("log:x", "log:0", "12a", "²"):
        with pytest.raises(ConfigError, match="checkpoint_steps"):
            checkpoint_steps(bad, 100)
    with pytest.raises(ConfigError, match="^checkpoint_steps: 'log:-1'"):
        resolve_config("quick", {"checkpoint_steps": "log:-1"})


@pytest.mark.slow
def test_a_run_keeps_its_log_spaced_checkpoints(tmp_path):
    cfg = resolve_config("quick", {"max_iters": 30, "eval_delta": 10, "optim_args.batch_size": 8, "eval_batch_size": 8,
                                   "data_args.seq_length": 32, "model_args.max_length": 32, "model_args.dim": 16,
                                   "checkpoint_steps": "log:6"})
    train(cfg, tmp_path / "run", quiet=True)
    saved = [s for s, _ in RunDir(tmp_path / "run").checkpoints()]
    assert saved == sorted(log_spaced(6, 30)) and saved[:3] == [1, 2, 4]
