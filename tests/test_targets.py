"""The simplified model's pass (``birth.model.simplified_pass``) computes what the official computation
computes (``birth.model.official``): the same logits, in-context loss and gradients, with
either attention computation and at the targets only or at every position, for every simplified
variant; and training at the targets only gives the metrics of training at every position."""
import pytest
import torch
import torch.nn.functional as F

from birth.model.official import OfficialSimplified
from birth.model import simplified_pass as targets
from birth.model.transformer import Transformer
from birth.training.config import ModelArgs, build_config
from birth.training.build import build_setup
from birth.training.runs import RunDir
from birth.training.evaluation import training_loss
from birth.training.loop import train

VARIANTS = {
    "readme": dict(freeze_embeddings=True, freeze_output=True),
    "trained-embeddings": dict(),
    "no-sqrtd": dict(no_sqrtd=True, freeze_embeddings=True),
    "sqrtd-embeddings": dict(sqrtd_embeddings=True, freeze_embeddings=True, freeze_output=True),
    "final-ffn-sincos": dict(final_ffn=True, linear_final_ffn=False, sin_cos=True),
    "tied-output": dict(tie_output=True),
    "rope-first-ffn": dict(use_rope=True, first_ffn=True, freeze_embeddings=True),
    "first-mlp": dict(first_ffn=True, linear_first_ffn=False, final_ffn=True),
}


def _model_and_batch(kw: dict, seed: int = 0):
    """A model with non-zero memories and a batch of the real task with in-context targets."""
    cfg = build_config("paper-readme", {"data_args.seq_length": 48, "model_args.max_length": 48, "model_args.dim": 32,
                                        "optim_args.batch_size": 12, "device": "cpu",
                                        "model_args.freeze_embeddings": False, "model_args.freeze_output": False,
                                        **{f"model_args.{k}": v for k, v in kw.items()}})
    setup = build_setup(cfg, torch.device("cpu"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in setup.model.parameters():  # W_K, W_O2 start at zero in some variants: make every path matter
            # (less without the 1/sqrt(d) of the scores, whose softmax is then nearly one-hot and
            # amplifies float rounding beyond any fixed tolerance)
            # and less with a first-layer MLP, whose outputs feed layer 2's scores squared)
            p.add_((0.05 if kw.get("no_sqrtd") else 0.1 if kw.get("first_ffn") else 0.3) * torch.randn_like(p))
    batch = setup.train_batch(0)
    assert (batch.outs >= 2).sum() > 10
    return cfg, setup.model, batch


def _in_context_loss(model, b, explicit=None) -> torch.Tensor:
    """The training step's loss of the simplified model: cross-entropy at the in-context targets."""
    m = b.masks["in_context"]
    return F.cross_entropy(model(b.x, targets=m, explicit=explicit), b.y[m])


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.detach().abs().max()))


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rearranged_pass_equals_the_official_computation(variant, explicit):
    cfg, model, b = _model_and_batch(VARIANTS[variant])
    mask = b.outs >= 2
    full, patterns = OfficialSimplified(model)(b.x, return_attn=True)
    _close(targets.forward(model, b.x, explicit=explicit), full)
    _close(targets.forward(model, b.x, mask, explicit=explicit), full[mask])
    ours, our_patterns = targets.forward(model, b.x, return_attn=True)
    _close(ours, full)
    for a, p in zip(our_patterns, patterns):  # a softmax of large scores: float rounding shows at 1e-4
        _close(a, p, 1e-3)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert len(trained) >= 3
    loss = _in_context_loss(model, b, explicit)
    reference = training_loss(cfg.loss_head_only, OfficialSimplified(model)(b.x), b)
    _close(loss, reference, 1e-5)
    for g, ref in zip(torch.autograd.grad(loss, trained), torch.autograd.grad(reference, trained)):
        assert ref.abs().max() > 0
        _close(g, ref)


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "fused"])
def test_rearranged_loss_and_gradients_equal_the_official_computation(explicit):
    cfg, model, b = _model_and_batch(VARIANTS["readme"])
    official = OfficialSimplified(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    ours = _in_context_loss(model, b, explicit)
    theirs = training_loss(cfg.loss_head_only, official(b.x), b)
    _close(ours, theirs, 1e-5)
    for g, ref in zip(torch.autograd.grad(ours, trained), torch.autograd.grad(theirs, trained)):
        _close(g, ref)


def test_the_attention_choice_follows_the_size_of_the_scores():
    assert 64 * 128 ** 2 <= targets.EXPLICIT_SCORES < 512 * 256 ** 2  # explicit at batch 64, T 128; fused at 512, 256


@pytest.mark.parametrize("kw", [dict(use_rope=True), dict(first_ffn=True), dict()], ids=["rope", "first-ffn", "readme"])
def test_every_simplified_variant_takes_this_pass_until_a_module_is_hooked(kw):
    model = Transformer(ModelArgs(dim=16, max_length=8, **kw), 65)
    assert not model.module_by_module()
    handle = model.layers[1].attention.wo.register_forward_hook(lambda m, a, out: None)
    assert model.module_by_module()
    handle.remove()
    assert not model.module_by_module()


def test_training_with_the_rearranged_pass_gives_the_metrics_of_the_module_by_module_pass(tmp_path, monkeypatch):
    overrides = {"max_iters": 50, "eval_delta": 10, "data_args.seq_length": 32, "model_args.max_length": 32,
                 "model_args.dim": 32, "optim_args.batch_size": 16, "eval_batch_size": 32, "device": "cpu",
                 "optim_args.learning_rate": 0.2, "freeze_until": "20:W_K1"}
    cfg = build_config("paper-readme", overrides)
    train(cfg, tmp_path / "rearranged", quiet=True)
    monkeypatch.setattr(Transformer, "module_by_module", lambda self: True)  # every module called
    train(cfg, tmp_path / "full", quiet=True)
    ours, full = (RunDir(tmp_path / name).read_metrics() for name in ("rearranged", "full"))
    assert [r["iter"] for r in ours] == [0, 10, 20, 30, 40, 49]
    assert ours[-1]["loss"] < ours[0]["loss"] - 0.1  # it learned something on the way
    for a, b in zip(ours, full):
        assert a.keys() == b.keys()
        for key in a.keys() - {"elapsed"}:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), (a["iter"], key)
            else:
                assert a[key] == b[key], (a["iter"], key)


def test_tables_of_frozen_weights_follow_changes_made_in_place():
    """Layer 1's tables of frozen weights are kept between passes: a change in place (an intervention,
    a loaded checkpoint) must still reach the next pass, with and without autograd."""
    _, model, b = _model_and_batch(VARIANTS["readme"])
    frozen = model.layers[0].attention.wv.weight
    assert not frozen.requires_grad
    targets.forward(model, b.x)                                      # the tables are made and kept
    with torch.no_grad():
        frozen.mul_(-2.0)
        model.tok_embeddings.weight.add_(0.5)
    _close(targets.forward(model, b.x), OfficialSimplified(model)(b.x))
    with torch.no_grad():
        _close(targets.forward(model, b.x), OfficialSimplified(model)(b.x))
        frozen.copy_(torch.randn_like(frozen))
        _close(targets.forward(model, b.x), OfficialSimplified(model)(b.x))


def test_targets_of_uneven_counts_keep_their_order():
    """Sequences are sorted by their number of targets and padded per group: the logits still come
    back in the mask's row-major order, for a mask where one sequence has every target and one none."""
    _, model, b = _model_and_batch(VARIANTS["trained-embeddings"])
    mask = torch.rand(b.x.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    mask[0] = True
    mask[1] = False
    _close(targets.forward(model, b.x, mask), OfficialSimplified(model)(b.x)[mask])
