"""Core science: the corpus statistics, the task sampler, the two architectures and the probes."""
