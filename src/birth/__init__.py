"""birth: the bigram-with-triggers task of "Birth of a Transformer: A Memory Viewpoint", its models,
probes and experiments."""

__version__ = "0.1.0"


def load_run(path, device: str = "cpu"):
    """A saved run directory as a ``birth.api.Run``: config, models at saved steps, samplers, metrics."""
    from birth.api import load_run as _load_run
    return _load_run(path, device)
