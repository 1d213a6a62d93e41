"""TransformerLens export of a ``birth`` model (optional extra ``birth[tl]``, TransformerLens 4.x).

Owns the mapping of our ``Transformer`` onto TransformerLens' TL-native model, the exported file
and TransformerLens' head-detector scores of the report:

- ``tl_config`` / ``tl_state_dict``: the config dict and the state dict in the TransformerLens
  *property format* (``embed.W_E``, ``blocks.0.attn.W_Q``, ``unembed.W_U``, ...), the format
  ``HookedTransformer.state_dict()`` used and that ``convert_tl_checkpoint`` reads in 4.x;
- ``to_transformer_lens(model)``: a ``TransformerBridge`` (``boot_native``) with those weights,
  loaded strictly, with no centring or folding, so its logits and ``blocks.{i}.attn.hook_pattern``
  equal ours;
- ``save_transformer_lens`` / ``load_transformer_lens``: one ``torch.save`` file holding
  ``{"format", "config", "state_dict", "vocab"}``, loadable with ``weights_only=True``;
- ``tl_head_scores``: TransformerLens' own ``detect_head`` scores (previous-token, induction,
  duplicate-token) per layer and head, the check of birth's native ``birth.measures.predictions.head_scores``.

The mapping: W_Q = identity (simplified) scaled so that TL's 1/sqrt(d_head) equals our score
scale, zero biases, positions as a fixed ``W_pos``, W_U scaled by our output scale. TL has no
identity activation, so a linear feed-forward W_F is an exact ReLU pair: W_in = [W_F; -W_F],
W_out = [I, -I] (relu(a) - relu(-a) = a), which keeps the residual stream and ``hook_mlp_out``
exact. Layers without a feed-forward get zero MLP weights. Not mappable (one-line error):
post-LayerNorm, the parallel full block and RoPE in the simplified model's first layer only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from birth.training.config import ConfigError
from birth.model.transformer import Transformer

FORMAT = "birth-transformer-lens-v1"
SUPPORTED = ">=4.3,<5"


def _require_tl():
    try:
        from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"transformer-lens{SUPPORTED} is needed for the export "
                          f"(pip install 'birth[tl]'): {err}") from None


def check_exportable(model: Transformer) -> None:
    """ConfigError naming the model_args key a TransformerLens model cannot reproduce."""
    a = model.args
    if a.arch == "simplified" and a.use_rope:
        raise ConfigError("model_args.use_rope: RoPE in the first layer only has no TransformerLens equivalent")
    if a.arch == "full" and not a.no_norm and not a.pre_norm:
        raise ConfigError("model_args.pre_norm=False: TransformerLens has no post-LayerNorm block")
    if a.arch == "full" and a.parallel_ffn:
        raise ConfigError("model_args.parallel_ffn: TransformerLens' native block is sequential")


def _ffn(layer) -> Optional[nn.Module]:
    return getattr(layer, "ff", None)


def _ffn_width(ff: Optional[nn.Module]) -> int:
    if ff is None:
        return 0
    return 2 * ff.out_features if isinstance(ff, nn.Linear) else ff.w1.out_features


def tl_config(model: Transformer) -> dict:
    """The TransformerBridgeConfig fields of ``model`` (a plain dict, saved in the export)."""
    check_exportable(model)
    a = model.args
    heads = 1 if a.arch == "simplified" else a.n_heads
    d_mlp = max(_ffn_width(_ffn(layer)) for layer in model.layers)
    normed = a.arch == "full" and not a.no_norm
    scale = model.layers[0].attention.scale
    return {"attn_scale": _tl_divisor(scale), "use_attn_scale": True,
            "d_model": a.dim, "d_head": a.dim // heads, "n_heads": heads, "n_layers": len(model.layers),
            "n_ctx": a.max_length, "d_vocab": model.vocab_size, "d_mlp": d_mlp or None,
            "attn_only": d_mlp == 0, "act_fn": "relu", "normalization_type": "LN" if normed else None,
            "eps": 1e-5, "positional_embedding_type": "standard", "architecture": "TransformerLensNative",
            "tokenizer_prepends_bos": False, "model_name": f"birth-{a.arch}"}


def _tl_divisor(scale: float) -> float:
    """TL divides the scores by ``attn_scale``; 1/scale reproduces our product bit for bit (torch
    divides by a scalar as a product with its reciprocal). TL refuses 1.0 (unscaled), so an
    unscaled model gets 2.0 and a W_Q doubled, both exact in floating point."""
    return 2.0 if scale == 1.0 else 1.0 / scale


def _matrix(module: nn.Module, d: int) -> torch.Tensor:
    """Weight (out, in) of a Linear, or the identity for an absent W_V / W_O / W_Q."""
    w = getattr(module, "weight", None)
    return w.detach().float() if w is not None else torch.eye(d)


def _mlp(ff: Optional[nn.Module], d: int, d_mlp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_in (d, d_mlp), W_out (d_mlp, d)) of a feed-forward, zero-padded to d_mlp."""
    w_in, w_out = torch.zeros(d, d_mlp), torch.zeros(d_mlp, d)
    if isinstance(ff, nn.Linear):  # relu(W x) - relu(-W x) = W x
        w = ff.weight.detach().float()                                                # (d, d)
        w_in[:, :2 * d] = torch.cat([w, -w]).t()
        w_out[:2 * d] = torch.cat([torch.eye(d), -torch.eye(d)])
    elif ff is not None:
        h = ff.w1.out_features
        w_in[:, :h] = ff.w1.weight.detach().float().t()
        w_out[:h] = ff.w2.weight.detach().float().t()
    return w_in, w_out


def _layer_norm(sd: dict, key: str, ln: Optional[nn.LayerNorm]) -> None:
    if ln is not None:
        sd[key + ".w"], sd[key + ".b"] = ln.weight.detach().float(), ln.bias.detach().float()


def tl_state_dict(model: Transformer, cfg: Optional[dict] = None) -> dict[str, torch.Tensor]:
    """``model``'s weights in the TransformerLens property format (per-head shapes, no folding)."""
    cfg = cfg or tl_config(model)
    d, nh, hd, d_mlp = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"]
    sd = {"embed.W_E": model.tok_embeddings.weight.detach().float(),
          "pos_embed.W_pos": model.positions().detach().float(),
          "unembed.W_U": model.output.weight.detach().float().t() * model.output_scale,
          "unembed.b_U": torch.zeros(cfg["d_vocab"])}
    for i, layer in enumerate(model.layers):
        att, p = layer.attention, f"blocks.{i}."
        q_gain = att.scale * cfg["attn_scale"]  # 1, or 2 for an unscaled model (see _tl_divisor)
        per_head_in = lambda w: w.view(nh, hd, d).transpose(1, 2).contiguous()        # (H, d, hd)
        sd[p + "attn.W_Q"] = per_head_in(_matrix(att.wq, d) * q_gain)
        sd[p + "attn.W_K"] = per_head_in(_matrix(att.wk, d))
        sd[p + "attn.W_V"] = per_head_in(_matrix(att.wv, d))
        sd[p + "attn.W_O"] = _matrix(att.wo, d).t().reshape(nh, hd, d).contiguous()    # (H, hd, d)
        for b in ("b_Q", "b_K", "b_V"):
            sd[p + "attn." + b] = torch.zeros(nh, hd)
        sd[p + "attn.b_O"] = torch.zeros(d)
        if cfg["normalization_type"]:
            _layer_norm(sd, p + "ln1", layer.attention_norm)
        if not cfg["attn_only"]:
            sd[p + "mlp.W_in"], sd[p + "mlp.W_out"] = _mlp(_ffn(layer), d, d_mlp)
            sd[p + "mlp.b_in"], sd[p + "mlp.b_out"] = torch.zeros(d_mlp), torch.zeros(d)
            if cfg["normalization_type"]:
                _layer_norm(sd, p + "ln2", layer.ff_norm)
    if cfg["normalization_type"]:
        _layer_norm(sd, "ln_final", model.norm)
    return sd


def bridge_from(config: dict, state_dict: dict[str, torch.Tensor]):
    """A TransformerBridge (``boot_native``) holding a property-format state dict, loaded strictly."""
    _require_tl()
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
    cfg = TransformerBridgeConfig(**config)
    bridge = TransformerBridge.boot_native(cfg)
    converted = convert_tl_checkpoint(state_dict, cfg)
    own = bridge.state_dict()
    missing = [k for k in own if k not in converted]
    # the native unembedding and MLP may carry biases the property format leaves out: zero them
    for k in missing:
        if not k.endswith("bias"):
            raise ConfigError(f"TransformerLens export: no value for {k!r}")
        converted[k] = torch.zeros_like(own[k])
    bridge.load_state_dict(converted, strict=True)
    bridge.eval()
    return bridge


def to_transformer_lens(model: Transformer):
    """A TransformerLens ``TransformerBridge`` computing the same logits and attention as ``model``."""
    cfg = tl_config(model)
    return bridge_from(cfg, tl_state_dict(model, cfg))


def save_transformer_lens(model: Transformer, path: str | Path, vocab: Sequence[str] = ()) -> Path:
    """Writes the export file (config + property-format state dict + vocabulary)."""
    cfg = tl_config(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "config": cfg, "state_dict": tl_state_dict(model, cfg),
                "vocab": list(vocab)}, path)
    return path


def load_transformer_lens(path: str | Path):
    """(TransformerBridge, vocab) from an export file; ConfigError naming the file if it is not one."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged or foreign file
        why = ("not a torch file, or it holds objects that weights-only loading refuses" if "Weights only" in str(err)
               else (str(err).splitlines() or [type(err).__name__])[0])
        raise ConfigError(f"{path}: not a readable export file ({why})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a birth TransformerLens export (format {FORMAT!r} expected)")
    return bridge_from(blob["config"], blob["state_dict"]), blob.get("vocab", [])


TL_HEADS = {"previous": "previous_token_head", "induction": "induction_head", "duplicate": "duplicate_token_head"}


def tl_head_scores(bridge, tokens: torch.Tensor) -> dict[str, list[list[float]]]:
    """TransformerLens' own ``detect_head`` scores per [layer][head] (error_measure 'mul', no
    exclusions), averaged over the sequences of ``tokens`` (B, T) as detect_head averages a list.

    ``detect_head`` tokenizes its input first and a native bridge has no tokenizer, so its
    ``to_tokens`` is shadowed by the identity for the call (the token ids are ours already)."""
    _require_tl()
    from transformer_lens.head_detector import detect_head
    object.__setattr__(bridge, "to_tokens", lambda seq, *a, **k: torch.cat(seq) if isinstance(seq, list) else seq)
    try:
        rows = [tokens[b:b + 1].cpu() for b in range(len(tokens))]
        with torch.no_grad():
            return {kind: detect_head(bridge, rows, name).tolist() for kind, name in TL_HEADS.items()}
    finally:
        del bridge.__dict__["to_tokens"]
