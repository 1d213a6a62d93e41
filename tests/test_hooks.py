"""Hook points (``birth.model.hooks``): each point observes the same tensor in every pass of one
architecture (the simplified model at every position, at the training targets only, and in a stack;
the full model with fused or explicit attention); a hook that returns a tensor changes what follows;
a user's hooks and callbacks act during training, on the training pass."""
import pytest
import torch

from birth.model import simplified_pass as targets
from birth.model.hooks import Hooks
from birth.model.transformer import Transformer
from birth.launching import stacked
from birth.training.build import build_setup
from birth.training.config import ModelArgs, build_config

SMALL = {"data_args.seq_length": 24, "model_args.max_length": 24, "model_args.dim": 16, "optim_args.batch_size": 6,
         "device": "cpu", "data_args.k": 3}


def _setup(arch: str = "simplified", seed: int = 0, **model):
    preset = "full" if arch == "full" else "quick"
    cfg = build_config(preset, {**SMALL, "init_seed": seed, **{f"model_args.{k}": v for k, v in model.items()}})
    setup = build_setup(cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in setup.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return setup


def _record(model: Transformer, names=None) -> tuple[dict, list]:
    seen: dict[str, torch.Tensor] = {}
    handles = [hp.add_hook(lambda t, hook: seen.__setitem__(hook.name, t.detach().clone()))
               for name, hp in model.hook_points().items() if names is None or name in names]
    return seen, handles


@pytest.mark.parametrize("model", [dict(), dict(final_ffn=True), dict(use_rope=True, first_ffn=True)],
                         ids=["readme", "final-ffn", "rope-first-ffn"])
def test_every_point_sees_the_same_tensor_in_every_pass_of_the_simplified_model(model):
    setup = _setup(**model)
    b = setup.train_batch(0)
    seen, handles = _record(setup.model)  # every point: attn.hook_z makes the pass call every module
    assert setup.model.module_by_module()
    setup.model(b.x)
    by_module = dict(seen)
    assert set(by_module) == set(setup.model.hook_points())
    for h in handles:
        h.remove()
    seen, handles = _record(setup.model, targets.HONOURED)  # the points the rearranged pass honours
    assert not setup.model.module_by_module()
    setup.model(b.x)                                            # every position, fused attention
    full = dict(seen)
    seen.clear()
    setup.model(b.x, targets=b.masks["in_context"])  # the training pass
    assert set(seen) == set(full) == set(setup.model.hook_points()) & targets.HONOURED
    for name, t in full.items():
        torch.testing.assert_close(seen[name], t, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(by_module[name], t, rtol=1e-5, atol=1e-6, msg=name)
    for h in handles:
        h.remove()
    # a stack of this model and another: the same tensors in its slice
    other = _setup(seed=1, **model)
    stack = stacked._Stack([setup.model, other.model], setup.cfg)
    in_stack: dict[str, torch.Tensor] = {}

    def keep(name):
        def fn(t):
            in_stack[name] = t.detach().clone()
            return t
        return fn
    hooks = Hooks({name: keep(name) for name in full})
    tokens = torch.stack([b.x, b.x])
    targets.stacked_losses(stack.weights(), tokens, torch.stack([b.y, b.y]),
                           torch.stack([b.masks["in_context"]] * 2), hooks=hooks)
    assert set(in_stack) == set(full)
    for name, t in full.items():
        torch.testing.assert_close(in_stack[name][0], t, rtol=1e-5, atol=1e-6, msg=name)


def test_every_point_sees_the_same_tensor_with_fused_and_explicit_attention_in_the_full_model():
    setup = _setup("full", n_heads=2)
    b = setup.train_batch(0)
    seen, _ = _record(setup.model)
    setup.model(b.x, return_attn=True)
    explicit = dict(seen)
    seen.clear()
    setup.model(b.x)  # fused where no hook needs the pattern: here the recording hook does
    assert set(explicit) == set(setup.model.hook_points()) and "blocks.0.attn.hook_z" in explicit
    for name, t in explicit.items():
        torch.testing.assert_close(seen[name], t, rtol=1e-5, atol=1e-6, msg=name)


def _by_hand(model, x, pattern_fn):
    """The simplified model's logits computed from its equations with layer 1's pattern replaced."""
    t = x.shape[1]
    h = model.tok_embeddings(x) + model.pe[:t]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for i, layer in enumerate(model.layers):
        a = layer.attention
        scores = (h @ a.wk(h).transpose(1, 2)) * a.scale
        attn = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
        if i == 0:
            attn = pattern_fn(attn)
        h = h + a.wo(attn @ a.wv(h))
    return model.output(h)


@pytest.mark.parametrize("pattern", ["previous", "uniform", "self", "induction"])
def test_a_clamp_changes_the_logits_as_the_clamped_pattern_by_hand(pattern):
    from birth.training.intervention_kinds import clamp_pattern
    from birth.training.interventions import Interventions
    setup = _setup()
    x = setup.train_batch(0).x
    s = 0.7
    c, rows = clamp_pattern(pattern, x)
    expected = _by_hand(setup.model, x, lambda a: torch.where(rows[..., None], (1 - s) * a + s * c, a))
    unclamped = setup.model(x)
    Interventions(f"clamp:0:{pattern}:{s}", setup.model)
    ours = setup.model(x)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    assert (ours - unclamped).abs().max() > 1e-2  # the clamp did change them


def test_clamp_patterns_are_the_documented_ones():
    from birth.training.intervention_kinds import clamp_pattern
    x = torch.tensor([[5, 1, 2, 5, 1, 5]])
    prev, _ = clamp_pattern("previous", x)
    assert prev[0, 0, 0] == 1 and all(prev[0, t, t - 1] == 1 for t in range(1, 6))
    ind, rows = clamp_pattern("induction", x)
    # position 3 (x=5) follows 5 at 0: attends to 1; position 5 (x=5): to 1 and 4 (x_3 = 5) equally
    assert rows.tolist() == [[False, False, False, True, True, True]]
    assert ind[0, 3, 1] == 1 and torch.allclose(ind[0, 5, [1, 4]], torch.tensor([0.5, 0.5]))
    uni, _ = clamp_pattern("uniform", x)
    assert torch.allclose(uni[0].sum(-1), torch.ones(6)) and uni[0, 2, 0] == pytest.approx(1 / 3)
    assert torch.equal(clamp_pattern("self", x)[0][0], torch.eye(6))


def test_an_unknown_hook_point_is_named_in_one_line():
    model = Transformer(ModelArgs(dim=8, max_length=8), 10)
    with pytest.raises(ValueError,
                       match=r"hook point 'blocks.2.attn.hook_z': this simplified model has .*hook_pattern"):
        model.hook_point("blocks.2.attn.hook_z")


@pytest.mark.slow
def test_a_user_hook_and_a_callback_act_during_training(tmp_path):
    import birth
    calls = {"pattern": 0}

    def on_pattern(tensor, hook):
        calls["pattern"] += 1
        assert tensor.shape[-2:] == (24, 24) and hook.context.tokens.shape[-1] == 24

    def probe(ev):
        return {"my_probe": float(ev.model.layers[1].attention.wk.weight.detach().norm()), "my_step": ev.step}

    cfg = {**SMALL, "max_iters": 30, "eval_delta": 10, "eval_batch_size": 8}
    run = birth.train(cfg, tmp_path / "run", preset="quick", callbacks=[probe],
                      hooks={"blocks.0.attn.hook_pattern": on_pattern})
    lines = run.metrics
    assert [r["my_step"] for r in lines] == [0, 10, 20, 29]
    assert all(r["my_probe"] > 0 for r in lines) and lines[0]["my_probe"] != lines[-1]["my_probe"]
    # the training pass of all 30 steps called it, besides the evaluation passes
    assert calls["pattern"] >= 30
    assert "blocks.0.attn.hook_pattern" in run.summary["hook_points"]
    assert "explicit attention" in run.summary["training_pass"]
