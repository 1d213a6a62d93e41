"""The interpretability toolbox, round two: nnsight traces both architectures; ``run_with_cache`` (one
model and a stack); activation patching (``birth.patch``, ``birth patch RUN``, the ``patching``
metric) with each task's natural corruption; checkpoints in the Hugging Face convention (``birth
export hf``, ``birth.from_pretrained``) that the ``safetensors`` library loads alone."""
import json
import subprocess
import sys

import pytest
import torch

import birth
from birth.model.args import ModelArgs
from birth.model.stacked_pass import stacked_run_with_cache
from birth.model.transformer import Transformer
from birth.training.interventions import Interventions
from trained_runs import quick_demo

N, T = 13, 10
ARCHS = {"simplified": ModelArgs(dim=16, max_length=T),
         "full": ModelArgs(arch="full", dim=16, max_length=T, n_heads=2)}


def _model(args: ModelArgs, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(args, N)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_nnsight_reads_and_sets_what_births_own_hooks_do(arch):
    nnsight = pytest.importorskip("nnsight")
    x = torch.randint(N, (3, T), generator=torch.Generator().manual_seed(1))
    model = _model(ARCHS[arch])
    logits, cache = model.run_with_cache(x)
    traced = nnsight.NNsight(model)
    with traced.trace(x):
        pattern = traced.layers[1].attention.hook_pattern.output.save()
        attn_out = traced.layers[1].attention.output[0].save()    # a module's output: (out, pattern)
        out = traced.output.save()
    torch.testing.assert_close(pattern, cache["blocks.1.attn.hook_pattern"], rtol=0, atol=1e-6)
    torch.testing.assert_close(attn_out, cache["blocks.1.hook_attn_out"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out, logits, rtol=0, atol=1e-6)
    # layer 1's pattern (blocks.0) set to previous-token, as the clamp intervention sets it
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    heads = model.layers[0].attention.n_heads
    with traced.trace(x):
        traced.layers[0].attention.hook_pattern.output = previous.expand(3, heads, T, T).clone()
        set_by_nnsight = traced.output.save()
    clamped = _model(ARCHS[arch])
    Interventions("clamp:0:previous", clamped)
    traced_clamp = nnsight.NNsight(clamped)  # the same pass, module by module: the same rounding
    with traced_clamp.trace(x):
        expected = traced_clamp.output.save()
    torch.testing.assert_close(set_by_nnsight, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(expected, clamped(x), rtol=1e-5, atol=1e-4)  # as the fast pass computes it
    assert (set_by_nnsight - logits).abs().max() > 1e-2  # it did change them


@pytest.mark.parametrize("arch", list(ARCHS))
def test_run_with_cache_of_a_stack_is_each_runs_with_a_leading_dimension(arch):
    models = [_model(ARCHS[arch], seed) for seed in range(3)]
    x = torch.randint(N, (3, 2, T), generator=torch.Generator().manual_seed(2))
    for names in (None, ["blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post", "hook_logits"]):
        logits, cache = stacked_run_with_cache(models, x, names)
        for r, model in enumerate(models):
            alone, own = model.run_with_cache(x[r], names)
            torch.testing.assert_close(logits[r], alone, rtol=1e-5, atol=1e-6)
            assert set(cache) == set(own)
            for name, tensor in own.items():
                torch.testing.assert_close(cache[name][r], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert not any(hp.active for m in models for hp in m.hook_points().values())  # nothing left behind


def _last_token_metric(y: torch.Tensor, t: int):
    def metric(logits):
        copies = logits.shape[0] // y.shape[0]
        return torch.log_softmax(logits[:, t], -1).gather(-1, y.repeat(copies, 1)[:, t:t + 1])[:, 0]
    return metric


@pytest.mark.parametrize("arch", list(ARCHS))
def test_patching_the_last_residual_stream_moves_the_metric_fully_and_nothing_moves_it_by_zero(arch):
    model = _model(ARCHS[arch])
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(N, (4, T), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2] = (corrupted[:, 2] + 1) % N
    y = torch.randint(N, (4, T), generator=gen)
    t = T - 1
    metric = _last_token_metric(y, t)
    whole = birth.patch(model, clean, corrupted, metric, points=["blocks.1.hook_resid_post"], positions=[t])
    assert whole["fraction"].tolist() == pytest.approx([1.0], abs=1e-5)
    assert whole.attrs["corrupted_metric"] != whole.attrs["clean_metric"]
    same = birth.patch(model, clean, clean.clone(), metric)
    assert (same["change"] == 0).all() and len(same) > T
    before = birth.patch(model, clean, corrupted, metric, positions=[0, 1])  # causally before the corruption
    assert (before["change"].abs() < 1e-6).all()


@pytest.fixture(scope="module")
def quick():
    """The quick preset (the README demo), with log-spaced checkpoints and the patching metric."""
    return quick_demo()


@pytest.mark.slow  # trains, or starts a subprocess
def test_on_a_trained_quick_run_layer_2s_pattern_at_the_second_occurrence_carries_the_answer(quick):
    run = birth.load_run(quick)
    model = run.model()
    example = run.setup.task.patch_example(run.eval_batch(), torch.Generator().manual_seed(0))
    from birth.measures.patching import informative
    chosen = informative(model, example, 3)
    assert len(chosen) == 3
    for i in chosen:
        one = example.select([i])
        s, t = one.marks[0]["first occurrence"], one.marks[0]["second occurrence"]
        table = birth.patch(model, one.clean, one.corrupted, one.metric)
        patterns = table[table["point"].str.endswith("attn.hook_pattern")]
        top = patterns.loc[patterns["fraction"].idxmax()]
        assert (top["point"], top["position"]) == ("blocks.1.attn.hook_pattern", t) and top["fraction"] > 0.5
        assert patterns[patterns["layer"] == 0]["fraction"].abs().max() < 0.1   # layer 1 looks by position
        carried = table[table["fraction"] > 0.5]   # the path of the answer through the residual stream
        assert set(carried["position"]) <= {s, s + 1, t}, carried[["point", "position", "fraction"]]


@pytest.mark.slow  # trains, or starts a subprocess
def test_patching_over_training_lands_in_the_metrics(quick):
    lines = [json.loads(line) for line in (quick / "metrics.jsonl").read_text().splitlines()]
    key = "patch_blocks.1.attn.hook_pattern"
    patched = {r["iter"]: r[key] for r in lines if key in r}
    assert sorted(patched) == [0, 200, 399]
    assert patched[399] > 0.5 and all("patch_blocks.0.attn.hook_pattern" in r for r in lines if r["iter"] in patched)


@pytest.mark.slow  # trains, or starts a subprocess
def test_birth_patch_writes_the_table_and_a_heatmap_per_layer(quick, tmp_path, cli):
    done = cli.run("patch", str(quick), "--steps", "all", "--out", str(tmp_path / "p"))
    assert done.returncode == 0, done.stderr
    import pandas as pd
    table = pd.read_csv(tmp_path / "p" / "patching.csv")
    assert sorted(table["step"].unique()) == [s for s in birth.load_run(quick).steps]
    for name in ("layer0.png", "layer1.png", "over_training.png"):
        assert (tmp_path / "p" / name).stat().st_size > 0
    bad = cli.run("patch", str(quick), "--points", "blocks.9.hook_z", "--out", str(tmp_path / "q"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--points" in bad.stderr


@pytest.mark.slow  # trains, or starts a subprocess
def test_every_checkpoint_round_trips_through_hugging_face_folders(quick, tmp_path, cli):
    done = cli.run("export", "hf", str(quick), "--out", str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    run, exported = birth.load_run(quick), birth.load_run(tmp_path / "hf")
    assert exported.steps == run.steps and len(run.steps) >= 5
    x = run.eval_batch().x[:8]
    for step in run.steps:
        ours = run.model(step)(x)
        assert torch.equal(birth.from_pretrained(tmp_path / "hf", step=step)(x), ours)
        assert torch.equal(exported.model(step)(x), ours)
    config = json.loads((tmp_path / "hf" / f"step-{run.steps[-1]}" / "config.json").read_text())
    assert config["model_type"] == "birth" and config["hidden_size"] == 128 and config["step"] == run.steps[-1]


@pytest.mark.slow  # trains, or starts a subprocess
def test_a_step_loads_with_the_safetensors_library_alone(quick, tmp_path, cli):
    assert cli.run("export", "hf", str(quick), "--out", str(tmp_path / "hf"), "--steps", "400").returncode == 0
    code = ("from safetensors.torch import load_file; import sys; "
            "w = load_file(sys.argv[1]); print(sorted(w)[0], tuple(w['output.weight'].shape))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "hf" / "step-400" / "model.safetensors")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["layers.0.attention.wk.weight", "(65,", "128)"]
    from safetensors.torch import load_file
    weights = load_file(tmp_path / "hf" / "step-400" / "model.safetensors")
    own = birth.load_run(quick).model(400).state_dict()
    assert set(weights) == set(own) and all(torch.equal(weights[k], own[k]) for k in own)
