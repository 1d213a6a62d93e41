import math

import pytest
import torch

from birth.training.config import ModelArgs
from birth.model.transformer import PARAM_ALIASES, Transformer, resolve_param_names


def reference_simplified(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """SPEC §2.3 written out with explicit matrices, independent of the module structure."""
    d = model.dim
    WE, P, WU = model.tok_embeddings.weight, model.pe, model.output.weight
    l1, l2 = model.layers[0].attention, model.layers[1].attention
    T = tokens.shape[1]
    x = WE[tokens] + P[:T]                                                  # (B, T, d)
    mask = torch.ones(T, T, dtype=torch.bool).tril()

    def attend(h, WK):
        scores = h @ (h @ WK.T).transpose(1, 2) / math.sqrt(d)             # [t, s] = h_t^T W_K h_s
        a = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        return a @ h

    h1 = x + attend(x, l1.wk.weight) @ l1.wv.weight.T @ l1.wo.weight.T
    h2 = h1 + attend(h1, l2.wk.weight) @ l2.wv.weight.T @ l2.wo.weight.T
    return h2 @ WU.T


def test_simplified_model_matches_the_written_out_equations():
    torch.manual_seed(0)
    model = Transformer(ModelArgs(dim=32, max_length=16), 65)
    tokens = torch.randint(0, 65, (3, 16))
    torch.testing.assert_close(model(tokens), reference_simplified(model, tokens), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("args", [
    ModelArgs(dim=32, max_length=16),
    ModelArgs(dim=32, max_length=16, final_ffn=True, linear_final_ffn=False, sin_cos=True),
    ModelArgs(dim=32, max_length=16, use_rope=True, first_ffn=True, no_sqrtd=True),
    ModelArgs(arch="full", dim=32, n_heads=4, max_length=16),
    ModelArgs(arch="full", dim=32, n_heads=2, max_length=16, pre_norm=False),
    ModelArgs(arch="full", dim=32, n_heads=2, max_length=16, no_norm=True, parallel_ffn=True),
    ModelArgs(arch="full", dim=32, n_heads=1, n_layers=1, max_length=16, linear_ffn=True, sin_cos=True),
    ModelArgs(arch="full", dim=32, n_heads=2, n_layers=3, max_length=16, no_ffn=True, tie_output=True),
], ids=["simplified", "ffn-sincos", "rope", "full", "post-norm", "parallel", "1-layer", "3-layer-tied"])
def test_fused_and_explicit_attention_agree(args):
    torch.manual_seed(0)
    model = Transformer(args, 65)
    tokens = torch.randint(0, 65, (2, 16))
    logits, patterns = model(tokens, return_attn=True)
    torch.testing.assert_close(model(tokens), logits, atol=1e-5, rtol=1e-5)
    assert logits.shape == (2, 16, 65) and len(patterns) == len(model.layers)
    for a in patterns:
        assert a.shape == (2, args.n_heads if args.arch == "full" else 1, 16, 16)
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
        assert torch.all(a.triu(1) == 0)  # causal


def test_simplified_parameter_names_and_frozen_memories():
    model = Transformer(ModelArgs(dim=16, freeze_embeddings=True, freeze_output=True), 65)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["layers.0.attention.wk.weight", "layers.1.attention.wk.weight",
                         "layers.1.attention.wo.weight"]
    assert resolve_param_names("W_K1", model) == ["layers.0.attention.wk.weight"]
    assert resolve_param_names("W_O2", model) == ["layers.1.attention.wo.weight"]
    assert resolve_param_names("layers.1.attention", model)  # module prefixes expand
    assert PARAM_ALIASES["W_K2"] == "layers.1.attention.wk.weight"


def test_zero_init_and_embedding_scales():
    model = Transformer(ModelArgs(dim=256, zero_init=True, sqrtd_embeddings=True), 65)
    for name in ("W_K1", "W_K2", "W_O2"):
        assert resolve_param_names(name, model)
        assert not dict(model.named_parameters())[PARAM_ALIASES[name]].detach().any()
    # variance 1/d
    assert float(model.tok_embeddings.weight.detach().pow(2).sum(1).mean()) == pytest.approx(1.0, rel=0.1)
    code_default = Transformer(ModelArgs(dim=256), 65)
    assert float(code_default.pe.pow(2).sum(1).mean()) == pytest.approx(256, rel=0.1)  # N(0, 1) entries


def test_tied_output_shares_the_embedding():
    model = Transformer(ModelArgs(dim=16, tie_output=True), 65)
    assert model.output.weight is model.tok_embeddings.weight
    assert model.output_scale == pytest.approx(1 / 16)  # the official /sqrt(d) twice


def test_initial_weights_depend_only_on_the_seed():
    torch.manual_seed(1)
    a = Transformer(ModelArgs(dim=16), 65).state_dict()
    torch.manual_seed(1)
    b = Transformer(ModelArgs(dim=16), 65).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
