"""Analysis: per-run plots, the paper's experiments (recipes, rules, claims), the theory, the HTML report and the
TransformerLens export."""
