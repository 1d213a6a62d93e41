"""The paper's task and its own pieces: the sampler (``task``), the corpus statistics (``corpus``),
the memory-recall and attention probes (``probes``), the ideal memories (``ideal``) and the
official per-token sampler kept as the benchmarks' baseline (``official_sampler``)."""
from birth.tasks.triggers.task import DataArgs, TriggerBatch, TriggersTask  # noqa: F401
