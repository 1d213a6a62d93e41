"""A command line that forgives: overrides anywhere, suggestions through aliases, --print-config,
a clean Ctrl-C, a labelled progress bar, and --resume --plot on a finished run."""
import re
import signal
import time

import pytest
import yaml

from birth.cli import main, parse
from birth.training.config import ConfigError, parse_overrides


def test_overrides_may_come_before_and_after_flags():
    args = parse(["train", "--preset", "quick", "max_iters=5", "--out", "Z", "model.dim=64", "--quiet"])
    assert args.overrides == ["max_iters=5", "model.dim=64"] and args.out == "Z" and args.quiet


def test_a_stray_argument_points_to_the_subcommand_help(capsys):
    with pytest.raises(SystemExit) as stop:
        parse(["train", "--preset", "quick", "--out", "Z", "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "birth: error: unrecognized arguments: --bogus; see birth train --help"


@pytest.mark.parametrize("typed, hint", [
    ("optim.lrr=0.1", "did you mean optim_args.lr (optim_args.learning_rate)?"),
    ("optim_args.learning_rat=0.1", "did you mean optim_args.learning_rate?"),
    ("step=5", "did you mean steps (max_iters)?"),
    ("model.dimm=5", "did you mean model_args.dim?"),
])
def test_misspellings_suggest_the_right_key_aliases_included(typed, hint):
    with pytest.raises(ConfigError) as err:
        parse_overrides([typed])
    assert str(err.value) == f"{typed.split('=')[0]}: unknown key; {hint}"


def test_print_config_prints_the_resolved_config_and_trains_nothing(tmp_path, capsys):
    code = main(["train", "--preset", "quick", "--print-config", "max_iters=7", "--out", str(tmp_path / "run")])
    assert code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["max_iters"] == 7                                  # the override
    assert cfg["model_args"]["dim"] == 128 and cfg["optim_args"]["batch_size"] == 128  # the preset
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ctrl_c_leaves_the_resume_hint_as_the_last_line_and_the_bar_is_labelled(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli.start("train", *cli.tiny, "max_iters=100000", "--out", str(run))  # not --quiet: the bar shows
    deadline = time.monotonic() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size > 2000):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert "train_loss=" in err and "eval_acc_end=" in err          # the bar names what it shows
    screen = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert screen[-1] == f"resume with: birth train --resume {run}", screen[-3:]


@pytest.mark.slow
def test_resume_plot_on_a_finished_run_draws_the_plots(cli, reference_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    done = cli.run("train", "--resume", str(run), "--plot")
    assert done.returncode == 0, done.stderr
    written = [line.split("wrote ", 1)[1] for line in done.stdout.splitlines() if "wrote " in line]
    assert written and all(p.endswith(".png") for p in written)
    assert all((run / "figures").joinpath(p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in written)
    assert "already complete" in done.stderr
