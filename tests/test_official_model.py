"""The speed baseline computes what the official simplified model computes: the same logits and the
same gradients as birth's model, from the same weights, on both of birth's attention paths."""
import pytest
import torch

from birth.model.official import OfficialSimplified
from birth.model.transformer import Transformer
from birth.training.config import ModelArgs


@pytest.mark.parametrize("kw", [dict(), dict(no_sqrtd=True), dict(sqrtd_embeddings=True, freeze_embeddings=True,
                                                                   freeze_output=True),
                                dict(final_ffn=True, linear_final_ffn=False, sin_cos=True),
                                dict(use_rope=True, first_ffn=True), dict(tie_output=True, first_ffn=True,
                                                                          linear_first_ffn=False)],
                         ids=["readme", "no-sqrtd", "sqrtd", "final-mlp", "rope-first-ffn", "tied"])
def test_official_computation_equals_births_model(kw):
    torch.manual_seed(0)
    model = Transformer(ModelArgs(arch="simplified", dim=32, max_length=24, **kw), vocab_size=65)
    official = OfficialSimplified(model)
    x = torch.randint(0, 65, (4, 24))
    ours_fused, (ours_explicit, _) = model(x), model(x, return_attn=True)
    theirs = official(x)
    for ours in (ours_fused, ours_explicit):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.detach().abs().max()))
    trained = [p for p in model.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(model(x).logsumexp(-1).sum(), trained)
    g_theirs = torch.autograd.grad(official(x).logsumexp(-1).sum(), trained)
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_the_baseline_refuses_the_full_architecture():
    model = Transformer(ModelArgs(arch="full", dim=16, max_length=8), vocab_size=65)
    with pytest.raises(ValueError, match="simplified"):
        OfficialSimplified(model)
