"""Experiments: one recipe per paper figure, and the theory (runs or computations, figure, rules).

``recipes()`` maps a recipe name to its ``Recipe`` (``birth.analysis.experiments.recipe``); ``birth
reproduce NAME|all`` runs them (``birth.analysis.experiments.reproduce``); rules are in
``birth.analysis.experiments.rules``, the verdicts and tables in ``birth.analysis.experiments.claims``.
"""
from __future__ import annotations


def recipes() -> dict:
    """Name -> Recipe, in the order of the paper."""
    from birth.analysis.experiments import (fig2, fig3, fig4, interventions, layers, markov, optim, repeat,
                                            theory_recipe)
    return {m.NAME: m.RECIPE for m in (fig2, fig3, fig4, layers, optim, theory_recipe, interventions, markov, repeat)}
