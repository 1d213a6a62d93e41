"""One Transformer covering the simplified model of the paper (Sec. 4.2, ``ihead_basic_model``) and
the general one (``ihead_full_model``), chosen by ``ModelArgs.arch``.

Parameter names are the official ones, so freeze schedules and checkpoints map one to one:

    tok_embeddings.weight               W_E  (N, d) token embeddings
    pos_embeddings.weight               P    (max_length, d) learned positions (full arch only)
    pe (buffer)                              random or sin/cos positions (simplified, or sin_cos)
    layers.{i}.attention.{wq,wk,wv,wo}.weight   (d, d) each; wq is absent (identity) in the simplified model
    layers.{i}.attention_norm / ff_norm        LayerNorms (full arch, unless no_norm)
    layers.{i}.ff.weight or ff.w1/ff.w2.weight  linear or ReLU-MLP feed-forward
    norm                                 final LayerNorm (full arch, pre-norm)
    output.weight                   W_U  (N, d) unembedding

Paper aliases (``PARAM_ALIASES``): W_K1 = layers.0.attention.wk.weight, W_K2, W_O2, W_V1, ...
Attention returns its pattern only when asked (``return_attn=True``, the explicit float32 softmax);
otherwise it uses the fused ``scaled_dot_product_attention``. Training and evaluation of the
simplified model go through ``birth.model.simplified_pass``, the same function in fewer operations; this
forward is its reference, the full model's pass, and what analysis code calls.

Dropout (full architecture, ``ModelArgs.dropout`` = p, minGPT's placement): on the embeddings before
the first block, on the attention probabilities, and on each residual branch (attention output,
feed-forward output) before it joins the residual stream; only in train mode, and with p = 0 there
is no dropout module and no operation at all. Hook points see the values before dropout: the
pattern hook the softmax, ``hook_attn_out`` / ``hook_mlp_out`` the branch, and what a hook returns
is what dropout then acts on.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from birth.model.args import ModelArgs
from birth.model import simplified_pass
from birth.model.hooks import NO_HOOKS, HookPoint, Hooks, model_hooks
from birth.model.positions import apply_rope, rope_frequencies, sin_cos_positions

PARAM_ALIASES = {
    "W_E": "tok_embeddings.weight", "W_U": "output.weight", "P": "pos_embeddings.weight",
    **{f"W_{m.upper()}{i + 1}": f"layers.{i}.attention.w{m}.weight" for i in range(8) for m in "qkvo"},
    "W_F": "layers.1.ff",
}


def resolve_param_names(name: str, model: nn.Module) -> list[str]:
    """Parameter names meant by ``name``: an official name, a module prefix, or a paper alias."""
    name = PARAM_ALIASES.get(name, name)
    names = [n for n, _ in model.named_parameters()]
    if name in names:
        return [name]
    return [n for n in names if n.startswith(name + ".")]


def dropout_module(p: float) -> Optional[nn.Dropout]:
    """``nn.Dropout(p)``, or None for p = 0: no module, so the pass is the one without dropout, op for op."""
    return nn.Dropout(p) if p > 0 else None


def drop(module: Optional[nn.Dropout], x: torch.Tensor) -> torch.Tensor:
    return x if module is None else module(x)


class Attention(nn.Module):
    """Causal multi-head attention; W_Q is the identity when ``identity_query`` (simplified model);
    ``dropout`` on the attention probabilities in train mode (after the pattern hook)."""

    def __init__(self, dim: int, n_heads: int, *, identity_query: bool, scale: float,
                 use_rope: bool = False, no_wv: bool = False, no_wo: bool = False, dropout: float = 0.0):
        super().__init__()
        self.attn_dropout = dropout_module(dropout)
        self.n_heads, self.head_dim, self.scale, self.use_rope = n_heads, dim // n_heads, scale, use_rope
        self.wq = nn.Identity() if identity_query else nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Identity() if no_wv else nn.Linear(dim, dim, bias=False)
        self.wo = nn.Identity() if no_wo else nn.Linear(dim, dim, bias=False)
        self.hook_pattern = HookPoint("attn.hook_pattern")
        self.hook_z = HookPoint("attn.hook_z")

    def forward(self, x: torch.Tensor, freqs: Optional[torch.Tensor] = None, return_attn: bool = False,
                hooks: Hooks = NO_HOOKS, prefix: str = "") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        b, t, _ = x.shape
        split = lambda z: z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        q, k, v = split(self.wq(x)), split(self.wk(x)), split(self.wv(x))
        if self.use_rope:
            q, k = apply_rope(q, freqs[:t]), apply_rope(k, freqs[:t])
        if return_attn or hooks.wants(prefix + "attn.hook_pattern"):
            scores = (q @ k.transpose(-2, -1)) * self.scale                           # (B, H, T, T)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = simplified_pass.at_least_float32(scores).masked_fill(causal, float("-inf"))
            attn = F.softmax(scores, dim=-1).type_as(x)
            attn = hooks(prefix + "attn.hook_pattern", attn)
            out = drop(self.attn_dropout, attn) @ v                                   # (B, H, T, hd)
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                                 dropout_p=self._dropout_p())
        out = hooks(prefix + "attn.hook_z", out.transpose(1, 2))                      # (B, T, H, hd)
        return self.wo(out.reshape(b, t, -1)), attn

    def _dropout_p(self) -> float:
        """The fused kernel's dropout probability: the module's in train mode, else 0."""
        return self.attn_dropout.p if self.attn_dropout is not None and self.training else 0.0


class FeedForward(nn.Module):
    """ReLU MLP d -> hidden -> d without biases."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.relu(self.w1(x)))


def make_ffn(dim: int, linear: bool) -> nn.Module:
    return nn.Linear(dim, dim, bias=False) if linear else FeedForward(dim, 4 * dim)


class Block(nn.Module):
    """Attention then optional FFN, each added to the residual stream (through ``dropout``, in
    train mode, after its hook point).

    norm='pre': h = x + A(LN(x)); out = h + F(LN(h)) (or F(LN(x)) with ``parallel``, the official
    full block); norm='post': h = LN(x + A(x)); out = LN(h + F(h)); norm='none': pre without LN.
    """

    def __init__(self, attention: Attention, ff: Optional[nn.Module], dim: int, norm: str, parallel: bool,
                 dropout: float = 0.0):
        super().__init__()
        self.attention = attention
        self.resid_dropout = dropout_module(dropout)
        if ff is not None:
            self.ff = ff
        self.norm_mode, self.parallel = norm, parallel
        if norm != "none":
            self.attention_norm = nn.LayerNorm(dim, eps=1e-5)
            self.ff_norm = nn.LayerNorm(dim, eps=1e-5)
        for name in (("hook_resid_pre", "hook_attn_out", "hook_resid_post")
                     + (("hook_mlp_out",) if ff is not None else ())):
            setattr(self, name, HookPoint(name))

    def _ln(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)(x) if self.norm_mode != "none" else x

    def forward(self, x: torch.Tensor, freqs: Optional[torch.Tensor] = None, return_attn: bool = False,
                hooks: Hooks = NO_HOOKS, prefix: str = "") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The full architecture's block (the simplified model's pass is ``birth.model.simplified_pass``)."""
        ff = getattr(self, "ff", None)
        x = hooks(prefix + "hook_resid_pre", x)
        # each branch as it joins the residual stream: its hook point, then dropout
        branch = lambda name, z: drop(self.resid_dropout, hooks(prefix + name, z))
        mlp = lambda z: branch("hook_mlp_out", ff(z))
        if self.norm_mode == "post":
            a, attn = self.attention(x, freqs, return_attn, hooks, prefix)
            h = self.attention_norm(x + branch("hook_attn_out", a))
            out = self.ff_norm(h + mlp(h)) if ff is not None else h
            return hooks(prefix + "hook_resid_post", out), attn
        a, attn = self.attention(self._ln("attention_norm", x), freqs, return_attn, hooks, prefix)
        h = x + branch("hook_attn_out", a)                                            # (B, T, d)
        if ff is not None:
            h = h + mlp(self._ln("ff_norm", x if self.parallel else h))
        return hooks(prefix + "hook_resid_post", h), attn


class Transformer(nn.Module):
    """The simplified (``arch='simplified'``) or general (``arch='full'``) transformer."""

    def __init__(self, args: ModelArgs, vocab_size: int):
        super().__init__()
        self.args, self.vocab_size, self.dim = args, vocab_size, args.dim
        d, simplified = args.dim, args.arch == "simplified"
        self.tok_embeddings = nn.Embedding(vocab_size, d)                             # N(0, 1) init
        self.pos_embeddings = None
        if simplified:
            if args.sqrtd_embeddings:
                nn.init.normal_(self.tok_embeddings.weight, std=1.0 / math.sqrt(d))
            pe = sin_cos_positions(args.max_length, d) if args.sin_cos else torch.randn(args.max_length, d)
            self.register_buffer("pe", pe / math.sqrt(d) if args.sqrtd_embeddings else pe)
        elif args.sin_cos:
            self.register_buffer("pe", sin_cos_positions(args.max_length, d))
        else:
            self.pos_embeddings = nn.Embedding(args.max_length, d)
        self.use_rope = simplified and args.use_rope
        if self.use_rope:
            self.register_buffer("freqs", rope_frequencies(d, args.max_length), persistent=False)
        self.layers = nn.ModuleList(self._simplified_layers() if simplified else self._full_layers())
        self.emb_dropout = None if simplified else dropout_module(args.dropout)  # the simplified model has none
        self.norm = nn.LayerNorm(d, eps=1e-5) if (not simplified and args.pre_norm and not args.no_norm) else None
        self.output = nn.Linear(d, vocab_size, bias=False)
        # Tied output: the simplified code sets W_U = W_E / sqrt(d) and divides the logits by sqrt(d)
        # again, i.e. logits scaled by 1/d; the full code ties without scaling.
        self.output_scale = 1.0
        if args.tie_output:
            self.output.weight = self.tok_embeddings.weight
            self.output_scale = 1.0 / d if simplified else 1.0
        self.hook_logits = HookPoint("hook_logits")
        self.step: Optional[int] = None  # the training step whose passes run: hooks read it (hook.context.step)
        # the explicit softmax even where the fused kernel would run: a stack mapped with vmap
        # (birth.model.stacked_pass), since the fused CPU kernel has no batching rule
        self.explicit_attention = False
        # always the module-by-module pass, explicit attention (activation patching: one pass for all runs)
        self.every_module = False
        self._hook_points = self._collect_hook_points()
        self._freeze(simplified)
        if simplified and args.zero_init:
            for w in (self.layers[0].attention.wk, self.layers[1].attention.wk, self.layers[1].attention.wo):
                nn.init.zeros_(w.weight)

    def _simplified_layers(self) -> list[Block]:
        a = self.args
        scale = 1.0 if a.no_sqrtd else 1.0 / math.sqrt(a.dim)
        attn = lambda rope: Attention(a.dim, 1, identity_query=True, scale=scale, use_rope=rope)
        return [Block(attn(a.use_rope), make_ffn(a.dim, a.linear_first_ffn) if a.first_ffn else None,
                      a.dim, "none", parallel=False),
                Block(attn(False), make_ffn(a.dim, a.linear_final_ffn) if a.final_ffn else None,
                      a.dim, "none", parallel=False)]

    def _full_layers(self) -> list[Block]:
        a = self.args
        norm = "none" if a.no_norm else ("pre" if a.pre_norm else "post")
        blocks = []
        for i in range(a.n_layers):
            attn = Attention(a.dim, a.n_heads, identity_query=False, scale=1.0 / math.sqrt(a.dim // a.n_heads),
                             no_wv=a.no_wv, no_wo=a.no_wo, dropout=a.dropout)
            has_ff = not (a.no_ffn or (i == 0 and a.no_first_layer_ffn))
            blocks.append(Block(attn, make_ffn(a.dim, a.linear_ffn) if has_ff else None, a.dim, norm,
                                parallel=a.parallel_ffn, dropout=a.dropout))
        return blocks

    def _freeze(self, simplified: bool) -> None:
        a = self.args
        frozen = []
        if a.freeze_embeddings:
            frozen += [self.tok_embeddings.weight] + ([self.pos_embeddings.weight] if self.pos_embeddings else [])
        if a.freeze_output:
            frozen.append(self.output.weight)
        if simplified:  # the random "remapping" memories W_V1, W_O1, W_V2
            frozen += [self.layers[0].attention.wv.weight, self.layers[0].attention.wo.weight,
                       self.layers[1].attention.wv.weight]
        else:
            for layer in self.layers:
                frozen += [m.weight for m, on in ((layer.attention.wv, a.freeze_wv), (layer.attention.wo, a.freeze_wo))
                           if on and isinstance(m, nn.Linear)]
        for p in frozen:
            p.requires_grad_(False)

    def _collect_hook_points(self) -> dict[str, HookPoint]:
        """TransformerLens name -> HookPoint of every point this model's passes honour."""
        points = {"hook_logits": self.hook_logits}
        for i, layer in enumerate(self.layers):
            for name in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post"):
                if hasattr(layer, name):
                    points[f"blocks.{i}.{name}"] = getattr(layer, name)
            points[f"blocks.{i}.attn.hook_pattern"] = layer.attention.hook_pattern
            # the simplified model's rearranged pass never forms it (one table W_O W_V): a hook on
            # it makes the pass call every module (``module_by_module``)
            points[f"blocks.{i}.attn.hook_z"] = layer.attention.hook_z
        for name, hp in points.items():
            hp.name = name  # its TransformerLens name, as hooks see it
        return points

    def hook_points(self) -> dict[str, HookPoint]:
        """The named hook points this model honours in every pass (``birth.model.hooks``)."""
        return dict(self._hook_points)

    def hook_point(self, name: str) -> HookPoint:
        """The HookPoint ``name``; ValueError naming the points there are for any other name."""
        if name not in self._hook_points:
            raise ValueError(f"hook point {name!r}: this {self.args.arch} model has "
                             f"{', '.join(sorted(self._hook_points))}")
        return self._hook_points[name]

    @torch.no_grad()
    def run_with_cache(self, tokens: torch.Tensor, names: Optional[Sequence[str]] = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, cache): the logits (B, T, N) and the tensor each hook point saw, by name (every
        point of the model, or ``names``), in one pass of the model as it is (its interventions and a
        user's hooks acting). No hook stays behind: an unhooked model pays nothing for the method."""
        names = list(self._hook_points) if names is None else list(names)
        cache: dict[str, torch.Tensor] = {}
        handles = [self.hook_point(name).add_hook(lambda t, hook: cache.__setitem__(hook.name, t.detach()))
                   for name in names]
        try:
            logits = self(tokens)
        finally:
            for handle in handles:
                handle.remove()
        return logits, cache

    def add_hook(self, name: str, fn):
        """A TransformerLens-style hook ``fn(tensor, hook) -> tensor | None`` on the hook point
        ``name`` (``blocks.1.attn.hook_pattern``), or on the output of the module ``name``
        (``layers.1.attention.wo``; the simplified model then calls every module). Returns the
        handle (``.remove()``); ValueError (one line) for a name that is neither."""
        if name in self._hook_points:
            return self._hook_points[name].add_hook(fn)
        modules = dict(self.named_modules())
        if name not in modules or not name:
            raise ValueError(f"hook {name!r}: not a hook point ({', '.join(sorted(self._hook_points))}) "
                             f"nor a module (e.g. layers.1.attention.wo) of this {self.args.arch} model")
        return modules[name].register_forward_hook(lambda module, args, out: fn(out, module))

    def positions(self, length: Optional[int] = None) -> Optional[torch.Tensor]:
        """Absolute positional embeddings (T, d), or None with RoPE."""
        if self.use_rope:
            return None
        if self.pos_embeddings is not None:  # called as a module: a hook on it sees (and may replace) P
            at = torch.arange(length or self.args.max_length, device=self.pos_embeddings.weight.device)
            return self.pos_embeddings(at)
        return self.pe[:length]

    def module_by_module(self) -> bool:
        """Whether a pass must call every module: some module carries a forward or backward hook,
        or a replaced ``forward`` (nnsight's tracing, a monkeypatch), or a hook point carries a
        hook that the simplified model's rearranged pass does not honour (``attn.hook_z``).
        The full architecture's pass always calls every module."""
        if self.every_module or _global_module_hooks():
            return True
        for module in self.modules():
            if module is self:
                continue  # the root's own hooks fire from its __call__ whichever pass runs
            if isinstance(module, HookPoint):
                if module.active and module.name not in simplified_pass.HONOURED:
                    return True
            elif _hooked(module):
                return True
        return False

    def forward(self, tokens: torch.Tensor, return_attn: bool = False, targets: Optional[torch.Tensor] = None,
                explicit: Optional[bool] = None):
        """Logits (B, T, N) float32 for tokens (B, T), or ``logits[targets]`` (n, N) for a (B, T)
        mask; with ``return_attn`` also [attention (B, H, T, T)] per layer.

        The simplified model takes the rearranged pass (``birth.model.simplified_pass``: the same
        function, computed at the targets only where it can; ``explicit`` forces its attention
        computation), unless a module is hooked or traced (``module_by_module``): then, as the full
        architecture always does, the pass calls every module, so that a PyTorch hook on any of
        them fires and its replacement acts. The hook points' hooks act in both passes."""
        if self.explicit_attention:
            explicit = True
        if self.args.arch == "simplified" and not self.module_by_module():
            return simplified_pass.forward(self, tokens, targets, return_attn=return_attn, explicit=explicit)
        hooks = model_hooks(self._hook_points, tokens, self.step)
        h = self.tok_embeddings(tokens)                                               # (B, T, d)
        pos = self.positions(tokens.shape[1])
        if pos is not None:
            h = h + pos.unsqueeze(0)
        h = drop(self.emb_dropout, h)
        patterns = []
        for i, layer in enumerate(self.layers):
            explicit = return_attn or self.explicit_attention or self.every_module
            h, attn = layer(h, getattr(self, "freqs", None), explicit, hooks, f"blocks.{i}.")
            patterns.append(attn)
        if self.norm is not None:
            h = self.norm(h)
        logits = self.output(h) * self.output_scale if self.output_scale != 1.0 else self.output(h)
        logits = hooks("hook_logits", logits.float())                                 # (B, T, N)
        if targets is not None:
            logits = logits[targets]
        return (logits, patterns) if return_attn else logits


def _hooked(module: nn.Module) -> bool:
    """Whether PyTorch would run something of a user's around ``module``'s forward."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or "forward" in module.__dict__)


def _global_module_hooks() -> bool:
    """Whether hooks registered for every module (``register_module_forward_hook``) are set."""
    g = nn.modules.module
    return bool(g._global_forward_hooks or g._global_forward_pre_hooks or g._global_backward_hooks
                or g._global_backward_pre_hooks)
