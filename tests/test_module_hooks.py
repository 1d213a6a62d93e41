"""No silent no-ops: a plain PyTorch forward hook on any module of either architecture fires with the
tensor that module computes, and replacing that tensor changes the logits exactly as computing them
by hand with the replacement does (the simplified model then calls every module; unhooked, it keeps
its rearranged pass)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from birth.model.args import ModelArgs
from birth.model.positions import apply_rope
from birth.model.transformer import Transformer

N, T = 11, 7
VARIANTS = {
    "simplified-ffns": ModelArgs(dim=8, max_length=T, first_ffn=True, final_ffn=True, linear_final_ffn=False),
    "simplified-rope": ModelArgs(dim=8, max_length=T, use_rope=True),
    "simplified-tied": ModelArgs(dim=8, max_length=T, tie_output=True),
    "full-pre-norm": ModelArgs(arch="full", dim=8, max_length=T, n_heads=2),
    "full-post-norm": ModelArgs(arch="full", dim=8, max_length=T, n_heads=2, pre_norm=False, linear_ffn=True),
    "full-parallel": ModelArgs(arch="full", dim=8, max_length=T, n_heads=2, parallel_ffn=True),
    "full-no-norm-sin-cos": ModelArgs(arch="full", dim=8, max_length=T, n_heads=1, no_norm=True, sin_cos=True,
                                      no_first_layer_ffn=True),
}


def _model(args: ModelArgs) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(args, N)
    with torch.no_grad():
        for p in model.parameters():  # away from init, so that every module matters
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _attend(model, layer, x, tap, prefix, freqs):
    """One attention module by hand: its pattern, per-head mix and output (tap: replacements)."""
    a = layer.attention
    b, t, d = x.shape
    heads = lambda z: z.view(b, t, a.n_heads, a.head_dim).transpose(1, 2)
    q = tap(prefix + "attention.wq", x if isinstance(a.wq, nn.Identity) else F.linear(x, a.wq.weight))
    k = tap(prefix + "attention.wk", F.linear(x, a.wk.weight))
    v = tap(prefix + "attention.wv", x if isinstance(a.wv, nn.Identity) else F.linear(x, a.wv.weight))
    q, k, v = heads(q), heads(k), heads(v)
    if freqs is not None:
        q, k = apply_rope(q, freqs[:t]), apply_rope(k, freqs[:t])
    scores = (q @ k.transpose(-1, -2)) * a.scale
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    pattern = tap(prefix + "attention.hook_pattern", torch.softmax(scores.masked_fill(~causal, float("-inf")), -1))
    z = tap(prefix + "attention.hook_z", (pattern @ v).transpose(1, 2))                 # (B, T, H, hd)
    mixed = z.reshape(b, t, d)
    out = tap(prefix + "attention.wo", mixed if isinstance(a.wo, nn.Identity) else F.linear(mixed, a.wo.weight))
    return tap(prefix + "attention", out)


def _norm(module, x, tap, name):
    return tap(name, F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps))


def _ffn(ff, x, tap, name):
    if isinstance(ff, nn.Linear):
        return tap(name, F.linear(x, ff.weight))
    hidden = tap(name + ".w1", F.linear(x, ff.w1.weight))
    return tap(name, tap(name + ".w2", F.linear(F.relu(hidden), ff.w2.weight)))


def by_hand(model: Transformer, x: torch.Tensor, tap) -> torch.Tensor:
    """The logits from the model's equations (SPEC §2.2, §2.3), with every module's output passed
    through ``tap(module name, tensor)``, which may replace it."""
    t = x.shape[1]
    h = tap("tok_embeddings", model.tok_embeddings.weight[x])
    if model.pos_embeddings is not None:
        h = h + tap("pos_embeddings", model.pos_embeddings.weight[:t])
    elif not model.use_rope:
        h = h + model.pe[:t]
    for i, layer in enumerate(model.layers):
        p = f"layers.{i}."
        h = tap(p + "hook_resid_pre", h)
        ff = getattr(layer, "ff", None)
        freqs = model.freqs if model.use_rope and i == 0 else None
        if layer.norm_mode == "post":
            a = tap(p + "hook_attn_out", _attend(model, layer, h, tap, p, freqs))
            mid = _norm(layer.attention_norm, h + a, tap, p + "attention_norm")
            out = _norm(layer.ff_norm, mid + tap(p + "hook_mlp_out", _ffn(ff, mid, tap, p + "ff")), tap, p + "ff_norm")
        else:
            pre = lambda name, z: _norm(getattr(layer, name), z, tap, p + name) if layer.norm_mode == "pre" else z
            out = h + tap(p + "hook_attn_out", _attend(model, layer, pre("attention_norm", h), tap, p, freqs))
            if ff is not None:
                ff_in = pre("ff_norm", h if layer.parallel else out)
                out = out + tap(p + "hook_mlp_out", _ffn(ff, ff_in, tap, p + "ff"))
        h = tap(p.rstrip("."), tap(p + "hook_resid_post", out))
    if model.norm is not None:
        h = _norm(model.norm, h, tap, "norm")
    logits = tap("output", F.linear(h, model.output.weight)) * model.output_scale
    return tap("hook_logits", logits)


def _modules(model: Transformer) -> list[str]:
    """Every submodule but the containers (the ModuleList of layers) and the model itself."""
    return [name for name, m in model.named_modules() if name and not isinstance(m, nn.ModuleList)]


def _change(value: torch.Tensor) -> torch.Tensor:
    """A replacement that differs from ``value`` along its last dimension unevenly."""
    ramp = torch.linspace(0.2, 1.5, value.shape[-1])
    return value * ramp + ramp.flip(0) * 0.3


def _main(output):
    return output[0] if isinstance(output, tuple) else output  # Attention returns (output, pattern)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_forward_hook_on_every_module_fires_with_the_tensor_it_computes(variant):
    model = _model(VARIANTS[variant])
    x = torch.randint(N, (3, T), generator=torch.Generator().manual_seed(1))
    expected: dict[str, torch.Tensor] = {}

    def record(name: str, value: torch.Tensor) -> torch.Tensor:
        expected[name] = value
        return value
    by_hand(model, x, record)
    names = _modules(model)
    assert set(names) <= set(expected), set(names) - set(expected)  # the reference computes every module
    for name in names:
        seen = []
        handle = model.get_submodule(name).register_forward_hook(lambda m, args, out: seen.append(_main(out)))
        model(x)
        handle.remove()
        assert len(seen) == 1, f"{name}: fired {len(seen)} times"
        torch.testing.assert_close(seen[0], expected[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_replacing_a_modules_output_changes_the_logits_as_by_hand(variant):
    model = _model(VARIANTS[variant])
    x = torch.randint(N, (3, T), generator=torch.Generator().manual_seed(2))
    plain = model(x)
    for name in _modules(model):
        change = _change  # not a uniform affine map: the LayerNorms would cancel it
        expected = by_hand(model, x, lambda at, value: change(value) if at == name else value)

        def replace(module, args, out):
            return (change(out[0]), *out[1:]) if isinstance(out, tuple) else change(out)
        handle = model.get_submodule(name).register_forward_hook(replace)
        ours = model(x)
        handle.remove()
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4, msg=name)
        assert (ours - plain).abs().max() > 1e-3, f"{name}: replacing its output changed nothing"
    torch.testing.assert_close(model(x), plain)  # every hook is gone: the model is as before


def test_zeroing_w_o2_through_a_plain_hook_removes_layer_2s_contribution():
    """The case of the issue: a forward hook zeroing W_O2's output changes the simplified model's logits."""
    model = _model(ModelArgs(dim=8, max_length=T))
    x = torch.randint(N, (3, T), generator=torch.Generator().manual_seed(3))
    plain = model(x)
    handle = model.layers[1].attention.wo.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    zeroed = model(x)
    handle.remove()
    expected = by_hand(model, x, lambda at, v: torch.zeros_like(v) if at == "layers.1.attention.wo" else v)
    torch.testing.assert_close(zeroed, expected, rtol=1e-4, atol=1e-4)
    assert (zeroed - plain).abs().max() > 1e-2


def test_a_pre_hook_and_a_replaced_forward_also_make_every_module_run():
    model = _model(ModelArgs(dim=8, max_length=T))
    x = torch.randint(N, (2, T), generator=torch.Generator().manual_seed(4))
    calls = []
    handle = model.layers[0].attention.wk.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    model(x)
    handle.remove()
    wo = model.layers[1].attention.wo
    wo.forward = lambda z: calls.append("forward") or torch.zeros(*z.shape[:-1], wo.out_features)
    torch.testing.assert_close(model(x), by_hand(model, x, lambda at, v: torch.zeros_like(v)
                                                  if at == "layers.1.attention.wo" else v), rtol=1e-4, atol=1e-4)
    del wo.forward
    assert calls == ["pre", "forward"]
    assert not model.module_by_module()
