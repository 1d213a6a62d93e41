"""birth: the bigram-with-triggers task of "Birth of a Transformer: A Memory Viewpoint", its models,
probes and experiments."""

__version__ = "0.1.0"
