"""Experiments: one recipe per paper figure, and the theory (runs or computations, figure, rules).

``recipes()`` maps a recipe name to its ``Recipe`` (``birth.experiments.recipe``); ``birth
reproduce NAME|all`` runs them (``birth.experiments.reproduce``); rules are in
``birth.experiments.rules``, the verdicts and tables in ``birth.experiments.claims``.
"""
from __future__ import annotations


def recipes() -> dict:
    """Name -> Recipe, in the order of the paper."""
    from birth.experiments import fig2, fig3, fig4, layers, optim, theory_recipe
    return {m.NAME: m.RECIPE for m in (fig2, fig3, fig4, layers, optim, theory_recipe)}
