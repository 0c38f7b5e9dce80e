"""Search compression recipes under a device budget: Optuna study, space, Pareto front, choice."""

from __future__ import annotations

from edgeopt.pipeline import Recipe
from edgeopt.pipeline import Step
from edgeopt.pipeline import apply_recipe
from edgeopt.search.optimize import OptimizeConfig
from edgeopt.search.optimize import OptimizeResult
from edgeopt.search.optimize import optimize

__all__ = ["OptimizeConfig", "OptimizeResult", "Recipe", "Step", "apply_recipe", "optimize"]
