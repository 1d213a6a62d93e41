"""A metric of one's own: how far layer 1's attention (blocks.1) is from uniform on the evaluation batch."""
import torch


def from_uniform(ev) -> dict:
    _, patterns = ev.outputs("eval")                     # (B, H, T, T) per layer, computed once per step
    pattern = patterns[1]
    t = pattern.shape[-1]
    uniform = torch.ones(t, t).tril() / torch.arange(1, t + 1)[:, None]
    return {"layer1_from_uniform": float((pattern - uniform).abs().max())}
