"""Baselines: the official computations, kept verbatim in algorithm, that benchmarks time against and tests use as
oracles."""
