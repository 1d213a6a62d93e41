"""Run-directory files without training: the directory lock, temporaries, damaged metrics lines."""
import json

import pytest

from birth.training.lock import DirectoryBusy, clear_directory, directory_lock
from birth.training.runs import RunDir


def test_a_held_directory_refuses_a_second_holder_with_the_pid(tmp_path):
    import os
    with directory_lock(tmp_path / "run"):
        with pytest.raises(DirectoryBusy, match=rf"--out: .*run is in use by pid {os.getpid()} "):
            with directory_lock(tmp_path / "run"):
                pass
    with directory_lock(tmp_path / "run"):  # released on exit
        pass


def test_clearing_a_directory_keeps_its_lock(tmp_path):
    with directory_lock(tmp_path) as where:
        (where / "sub").mkdir()
        (where / "sub" / "f").write_text("x")
        (where / "config.yaml").write_text("x")
        clear_directory(where)
        assert [p.name for p in where.iterdir()] == [".lock"]


def test_a_damaged_metrics_line_before_the_last_is_reported_and_the_rest_kept(tmp_path, capsys):
    run = RunDir(tmp_path)
    lines = [json.dumps({"iter": i}) for i in range(5)]
    lines[2] = '{"iter": 2, "lo'                       # damaged in the middle
    run.metrics_path.write_text("\n".join(lines) + '\n{"iter": 5, "los')  # and torn at the end
    rows = run.read_metrics()
    assert [r["iter"] for r in rows] == [0, 1, 3, 4]
    err = capsys.readouterr().err.strip()
    assert err == f"birth: warning: {run.metrics_path}: line 3 damaged and skipped; 4 lines read"


def test_a_torn_last_line_alone_is_dropped_silently(tmp_path, capsys):
    run = RunDir(tmp_path)
    run.metrics_path.write_text('{"iter": 0}\n{"iter": 1, "lo')
    assert [r["iter"] for r in run.read_metrics()] == [0]
    assert capsys.readouterr().err == ""


def test_temporaries_of_interrupted_writes_are_removed(tmp_path):
    run = RunDir(tmp_path)
    run.ckpt_dir.mkdir()
    stale = [tmp_path / ".summary.json.123.abcd.tmp", run.ckpt_dir / ".step_00000007.pt.99.ef01.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    (run.ckpt_dir / "step_00000007.pt").write_bytes(b"kept")
    run.remove_temporaries()
    assert not any(p.exists() for p in stale) and (run.ckpt_dir / "step_00000007.pt").exists()
