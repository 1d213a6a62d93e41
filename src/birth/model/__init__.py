"""The model: both architectures and their modules (``transformer``), the simplified model's
rearranged pass (``simplified_pass``) and the pass of a stack of runs (``stacked_pass``), hook points
(``hooks``), positions (``positions``), and the official computation beside them as the oracle
tests and benchmarks compare with (``official``)."""
