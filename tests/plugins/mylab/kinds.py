"""An intervention kind of one's own: layer L's attention set to uniform, until step S (it reads the
training step from the hook's context); its window comes from the config (@START-END)."""
import torch


def uniform_until(args, shape):
    layer, until = int(args[0]), int(args[1])
    if layer >= shape.n_layers:
        raise ValueError(f"the model has {shape.n_layers} layers")

    def fn(pattern, context):
        if context.step is not None and context.step >= until:
            return pattern
        t = pattern.shape[-1]
        return (torch.ones(t, t).tril() / torch.arange(1, t + 1)[:, None]).expand_as(pattern)
    return f"blocks.{layer}.attn.hook_pattern", fn
