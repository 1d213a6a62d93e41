"""TransformerLens export: trained quick and full runs give the same logits and attention in
TransformerLens, through the exported file too; the loader gives back what training saved."""
import pytest
import torch

import birth
from birth.cli import main
from birth.training.config import ConfigError, ModelArgs
from birth.model.transformer import Transformer
from trained_runs import full_run, quick_run

tl = pytest.importorskip("transformer_lens",
                         reason="the TransformerLens extra is not installed: pip install -e '.[all]'")
from birth.analysis.transformer_lens import load_transformer_lens, tl_head_scores, to_transformer_lens  # noqa: E402

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def compare(model, bridge, x):
    """(max |Δlogit|, max |Δattention|, max |logit|) of our model and the TL bridge on tokens x."""
    with torch.no_grad():
        ours, patterns = model(x, return_attn=True)
        theirs, cache = bridge.run_with_cache(x)
    attn = max(float((cache[f"blocks.{i}.attn.hook_pattern"] - p).abs().max()) for i, p in enumerate(patterns))
    return float((ours - theirs).abs().max()), attn, float(ours.abs().max())


@pytest.mark.parametrize("which", ["quick", "full"])
def test_export_matches_logits_and_attention(which, capsys):
    run = birth.load_run(quick_run() if which == "quick" else full_run())
    rows = run.metrics
    if which == "quick":
        assert rows[-1]["eval_acc_end"] >= 0.9                   # an induction head was learned
    else:
        assert rows[-1]["eval_loss"] < rows[0]["eval_loss"] - 0.5  # the full model learned
    model, x = run.model(), run.eval_batch().x
    # float64 on both sides: the mapping itself (the softmax too runs in float64)
    d_logit, d_attn, _ = compare(model.double(), to_transformer_lens(model).double(), x)
    assert d_logit <= 1e-5 and d_attn <= 1e-5
    # float32, as users run it: rounding of ~1 ulp of the largest logit
    model = run.model()
    d32, a32, top = compare(model, to_transformer_lens(model), x)
    assert d32 <= 1e-5 * max(1.0, top) and a32 <= 1e-5
    with capsys.disabled():
        print(f"\n{which}: max|Δlogit| float64 {d_logit:.2e}, float32 {d32:.2e} (|logit| <= {top:.1f}); "
              f"max|Δattention| float64 {d_attn:.2e}, float32 {a32:.2e}")


def test_export_command_writes_a_file_transformer_lens_loads(tmp_path):
    path = quick_run()
    out = tmp_path / "quick.tl.pt"
    assert main(["export", "transformer-lens", str(path), "--out", str(out), "--step", "80"]) == 0
    bridge, vocab = load_transformer_lens(out)
    run = birth.load_run(path)
    assert vocab == run.vocab
    d_logit, d_attn, top = compare(run.model(80), bridge, run.eval_batch().x[:32])
    assert d_logit <= 1e-5 * max(1.0, top) and d_attn <= 1e-5


@pytest.mark.parametrize("which", ["quick", "full"])
def test_births_head_scores_equal_transformer_lens_detect_head(which):
    """birth's native head scores (the head_* metrics) against TransformerLens' detect_head on the
    exported model, every layer and head, on the run's repeated-random-tokens batch."""
    from birth.measures.heads import HEAD_SCORES, head_scores
    from birth.training.evaluation import Evaluator
    run = birth.load_run(quick_run() if which == "quick" else full_run())
    setup = run.setup
    setup.model.load_state_dict(run.model().state_dict())
    tokens = Evaluator(setup).heads_tokens[:, :run.config.model_args.max_length - 1]
    with torch.no_grad():
        ours = head_scores(setup.model(tokens, return_attn=True)[1], tokens)
    theirs = tl_head_scores(to_transformer_lens(setup.model), tokens)
    for kind in HEAD_SCORES:
        for layer, row in enumerate(theirs[kind]):
            for h, v in enumerate(row):
                assert ours[f"head_{kind}_l{layer}h{h}"] == pytest.approx(v, abs=1e-5), (kind, layer, h)
    if which == "quick":  # layer 1 became a previous-token head (its induction head fires after the
        # fixed triggers only, not on random repeated tokens: claim 5 of the paper)
        assert ours["head_previous_l0h0"] > 0.4 > ours["head_previous_l1h0"]


@pytest.mark.parametrize("kw,key", [({"use_rope": True}, "use_rope"),
                                    ({"arch": "full", "pre_norm": False}, "pre_norm"),
                                    ({"arch": "full", "parallel_ffn": True}, "parallel_ffn")])
def test_unmappable_options_are_one_line_errors(kw, key):
    model = Transformer(ModelArgs(dim=16, max_length=16, **kw), 65)
    with pytest.raises(ConfigError, match=key) as err:
        to_transformer_lens(model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kw", [{"final_ffn": True, "first_ffn": True, "linear_first_ffn": False},
                                {"no_sqrtd": True, "tie_output": True, "sin_cos": True},
                                {"arch": "full", "n_heads": 4, "no_norm": True, "linear_ffn": True},
                                {"arch": "full", "n_heads": 2, "no_wv": True, "no_wo": True,
                                 "no_first_layer_ffn": True, "tie_output": True, "sin_cos": True}])
def test_model_options_map_exactly(kw):
    torch.manual_seed(0)
    model = Transformer(ModelArgs(dim=32, max_length=32, **kw), 65).double().eval()
    d_logit, d_attn, _ = compare(model, to_transformer_lens(model).double(), torch.randint(0, 65, (4, 32)))
    assert d_logit <= 1e-5 and d_attn <= 1e-5


def test_bad_export_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ConfigError, match="bad.pt"):
        load_transformer_lens(bad)
    text = tmp_path / "text.pt"
    text.write_text("not a model")
    with pytest.raises(ConfigError, match="text.pt: not a readable export file") as err:
        load_transformer_lens(text)
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
