"""``precision=bf16``: the training step under bfloat16 autocast where the hardware computes it,
the probes in float32, a clear error elsewhere; run names of float32 configs unchanged."""
import pytest
import torch

from birth.training import validation
from birth.training.build import bf16_cpu
from birth.training.config import ConfigError, build_config
from birth.training.naming import config_hash, legacy_hash
from birth.training.runs import RunDir
from birth.training.loop import train
from birth.training.validation import resolve_config

SMALL = {"max_iters": 120, "eval_delta": 20, "data_args.seq_length": 32, "model_args.max_length": 32,
         "model_args.dim": 64, "optim_args.batch_size": 32, "eval_batch_size": 64, "device": "cpu"}


def test_run_names_of_float32_configs_did_not_change():
    # computed before the key existed (commit 84dbefd): existing run directories are still found by it
    assert legacy_hash(resolve_config("quick")) == "e7a6cca1b6a9"
    # naming needs no bf16 kernel: built, not validated, so this holds on a CPU without bf16 too
    assert config_hash(build_config("quick", {"precision": "bf16"})) != config_hash(build_config("quick"))


def test_bf16_without_hardware_support_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(validation, "bf16_cpu", lambda: False)
    with pytest.raises(ConfigError, match=r"^precision: bf16 needs CUDA or a CPU with bf16"):
        resolve_config("quick", {"precision": "bf16", "device": "cpu"})
    resolve_config("quick", {"precision": "float32", "device": "cpu"})  # float32 is always fine


def test_birth_no_bf16_makes_any_cpu_answer_no(monkeypatch):
    # CI's CPU has bf16; this switch takes it down the path of one without (torch reads the CPU itself)
    monkeypatch.setenv("BIRTH_NO_BF16", "1")
    assert not bf16_cpu()
    with pytest.raises(ConfigError, match=r"^precision: bf16 needs CUDA or a CPU with bf16"):
        resolve_config("quick", {"precision": "bf16", "device": "cpu"})
    monkeypatch.setenv("BIRTH_NO_BF16", "0")  # "0" or empty: the CPU's own answer
    assert bf16_cpu() == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@pytest.mark.skipif(not bf16_cpu(),
                    reason="this CPU has no bf16 instructions (AVX512-BF16 or AMX), or BIRTH_NO_BF16 is set")
@pytest.mark.slow  # trains, or starts a subprocess
def test_bf16_training_learns_with_float32_probes(tmp_path):
    runs = {}
    for precision in ("float32", "bf16"):
        train(build_config("quick", {**SMALL, "precision": precision}), tmp_path / precision, quiet=True)
        runs[precision] = RunDir(tmp_path / precision).read_metrics()
    ours, reference = runs["bf16"], runs["float32"]
    assert ours[0]["loss"] != reference[0]["loss"]  # the step ran in bfloat16...
    assert ours[0]["loss"] == pytest.approx(reference[0]["loss"], rel=2e-2)  # ...on the same function
    assert ours[-1]["loss"] < ours[0]["loss"] - 0.5  # and it learned
    assert ours[-1]["wo1_acc"] >= 0.5
    # the training-batch probes of iteration 0 read the initial weights, in float32 in both runs
    for key in ("loss_head", "loss_bigram", "acc_tot"):
        assert ours[0][key] == pytest.approx(reference[0][key], rel=1e-5), key
