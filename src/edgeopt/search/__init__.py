"""Search compression recipes under a device budget: Optuna study, space, Pareto front, choice."""

from __future__ import annotations

from edgeopt.search.optimize import OptimizeConfig
from edgeopt.search.optimize import OptimizeResult
from edgeopt.search.optimize import optimize
from edgeopt.search.recipe import Recipe
from edgeopt.search.recipe import Step
from edgeopt.search.recipe import apply_recipe

__all__ = ["OptimizeConfig", "OptimizeResult", "Recipe", "Step", "apply_recipe", "optimize"]
