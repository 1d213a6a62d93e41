"""Experiments: recipes (a sweep of runs, a figure and the rules that judge the paper's claims), the
claims table, and the theory's computations.

Recipes are plug-ins (``birth.plugins``): the built-in ones register themselves from the modules
of ``birth.experiments.recipes``; a recipe of your own is a ``Recipe`` named ``MODULE:ATTR``
(``birth reproduce mylab.recipes:parity``) or registered with ``RECIPES.register(name, recipe)``.
"""
from __future__ import annotations

from birth.plugins import Registry

# in the order of the paper, then the recipes beyond it
ORDER = ("fig2", "fig3", "fig4", "layers", "optim", "theory", "interventions", "markov", "repeat")


def _is_recipe(item) -> None:
    if not all(hasattr(item, a) for a in ("name", "conditions", "plot", "rules")):
        raise TypeError("not a birth.experiments.recipe.Recipe")


RECIPES = Registry("recipe", builtins="birth.experiments.recipes", check=_is_recipe, first=ORDER)


def all_recipes() -> dict:
    """Name -> Recipe of every registered recipe, the paper's first, in its order."""
    return {name: RECIPES.get(name) for name in RECIPES.names()}
