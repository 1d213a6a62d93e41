"""`birth llc`: the local learning coefficient at each checkpoint of a tiny run (devinterp's SGLD)."""
import math
import shutil

import pytest
from conftest import TINY

from birth.analysis import llc_curve as llc
from birth.measures import llc as sampler_of
from birth.measures.llc import LLCError
from birth.cli import main

# the tiny config with checkpoints kept at steps 10 and 30 (and the final one, 60), none periodic
TINY_CKPTS = ([a for a in TINY if not a.startswith(("checkpoint_every=", "checkpoint_steps="))]
              + ["checkpoint_steps=10,30"])
SGLD = ["--chains", "2", "--draws", "10", "--burnin", "5", "--batch-size", "8"]


@pytest.fixture
def devinterp():
    return pytest.importorskip("devinterp.slt.sampler", reason="needs devinterp: pip install -e '.[all]'")


@pytest.fixture(scope="module")
def run(cli, tmp_path_factory):
    path = tmp_path_factory.mktemp("llc") / "run"
    proc = cli.run("train", *TINY_CKPTS, "--out", str(path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.mark.slow
def test_llc_writes_one_finite_row_per_checkpoint_the_same_on_a_second_call(run, devinterp, tmp_path):
    assert main(["llc", str(run), *SGLD]) == 0
    rows = llc.read_llc(run / "llc.csv")
    assert [r["step"] for r in rows] == [10, 30, 60]
    assert all(math.isfinite(v) for r in rows for v in r.values())
    # sampling away from the checkpoint raises the loss on average (w* is the chains' centre), and a
    # checkpoint further in training sits elsewhere: its estimate is its own
    assert all(r["llc_mean"] > 0 for r in rows)
    assert rows[0]["llc_mean"] != rows[-1]["llc_mean"]
    assert rows[0]["llc_chain_0"] != rows[0]["llc_chain_1"]  # each chain has its own noise
    header = (run / "llc.json").read_text()
    assert '"sampled_parameters": 3072' in header  # W_K1, W_K2, W_O2 (32 x 32 each): embeddings stay frozen
    assert (run / "figures" / "llc.png").stat().st_size > 0
    # the same command again: the same numbers (the first call left no state behind)
    assert main(["llc", str(run), *SGLD, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "llc.csv").read_text() == (run / "llc.csv").read_text()


@pytest.mark.slow
def test_llc_steps_selects_checkpoints_and_names_a_missing_one(run, devinterp, tmp_path, capsys):
    assert main(["llc", str(run), *SGLD, "--steps", "30", "--out", str(tmp_path)]) == 0
    assert [r["step"] for r in llc.read_llc(tmp_path / "llc.csv")] == [30]
    capsys.readouterr()
    assert main(["llc", str(run), "--steps", "10,20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "step 20" in err and "10, 30, 60" in err


@pytest.mark.slow
def test_llc_of_a_run_without_checkpoint_is_a_one_line_error(run, tmp_path, capsys):
    empty = tmp_path / "run"
    empty.mkdir()
    shutil.copy(run / "config.yaml", empty / "config.yaml")
    assert main(["llc", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no checkpoint" in err and str(empty) in err


@pytest.mark.slow
def test_llc_samples_only_the_parameters_the_run_trains(run, devinterp):
    import torch
    setup = llc.sampled_setup(run)
    trained = [name for name, p in setup.model.named_parameters() if p.requires_grad]
    assert trained == ["layers.0.attention.wk.weight", "layers.1.attention.wk.weight", "layers.1.attention.wo.weight"]
    before = {name: p.detach().clone() for name, p in setup.model.named_parameters()}
    optimizer = sampler_of.sampler()(setup.model.parameters(), lr=1e-3, localization=100.0, nbeta=4.0)
    batch = next(iter(llc.stream_loader(setup, 1, 8)))
    llc._objective(True)(setup.model, batch).backward()
    optimizer.step()
    moved = [name for name, p in setup.model.named_parameters() if not torch.equal(p, before[name])]
    assert moved == trained  # the embeddings and the random memories W_V1, W_O1, W_V2 stay put


@pytest.mark.slow
def test_llc_takes_a_freeze_schedule_in_its_final_state(run, tmp_path):
    import yaml
    for schedule, sampled in (("30:W_K1", True), ("100:W_K1", False)):  # the run ends at step 60
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["freeze_until"] = schedule
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        params = dict(llc.sampled_setup(tmp_path).model.named_parameters())
        assert params["layers.0.attention.wk.weight"].requires_grad is sampled
        assert params["layers.1.attention.wk.weight"].requires_grad


def test_llc_without_devinterp_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "devinterp.slt.sampler", None)  # import fails
    monkeypatch.setattr(sampler_of, "version_of", lambda name: (_ for _ in ()).throw(ImportError(name)))
    with pytest.raises(LLCError, match=r"pip install 'birth\[llc\]'"):
        sampler_of.require_devinterp()


def test_llc_settings_out_of_range_name_the_flag():
    with pytest.raises(LLCError, match="--chains"):
        sampler_of.LLCSettings(chains=0).check()
    with pytest.raises(LLCError, match="--lr"):
        sampler_of.LLCSettings(lr=-1.0).check()
    sampler_of.LLCSettings().check()
