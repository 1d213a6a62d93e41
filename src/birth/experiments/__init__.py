"""Experiments: one recipe per paper figure (runs to make, plot, claims to check).

``RECIPES`` maps a recipe name to its ``Recipe``; ``birth reproduce NAME|all`` runs them
(``birth.experiments.reproduce``).
"""
from __future__ import annotations


def recipes() -> dict:
    """Name -> Recipe, in the order of the paper."""
    from birth.experiments import fig2, fig3, fig4, layers, optim
    return {m.NAME: m.RECIPE for m in (fig2, fig3, fig4, layers, optim)}
