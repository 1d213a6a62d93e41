"""The built-in recipes, one module each: the paper's figures (``fig2``, ``fig3``, ``fig4``), one vs
two layers (``layers``), optimiser and width (``optim``), the theory (``theory``), and beyond the
paper: interventions (``causal``), in-context Markov chains (``markov_chains``) and repeated
random tokens (``repeated_tokens``). Each registers itself in ``birth.experiments.RECIPES``."""
