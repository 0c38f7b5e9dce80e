"""From measured candidates to a decision: budgets, the Pareto front, the pick, and why not.

A candidate here is the report's record of one trial (a dict with ``accuracy``,
``accuracy_drop_pp``, ``latency_ms``, ``energy_uj``, ``flash_bytes``, ``ram_bytes``, ...). The
rules follow Deb et al. 2002 ("A Fast and Elitist Multiobjective Genetic Algorithm: NSGA-II",
IEEE TEC 6(2), section VI, constrained domination): a feasible candidate beats an infeasible
one, infeasible ones are ranked by how far they break the budget, feasible ones by Pareto
dominance on the objectives.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DEFAULT_MAX_ACCURACY_DROP_PP",
    "DIRECTIONS",
    "LIMIT_KEYS",
    "choose",
    "closest",
    "constraint_values",
    "explain",
    "objective_names",
    "pareto_front",
    "violations",
]

#: The accuracy budget (percentage points below the baseline file) of a search given none.
#: Without one the pick was the most accurate candidate that fit the device, which could be a
#: model tens of points worse than the baseline, reported with exit code 0; a search with no
#: accuracy limit now asks for it (``max_accuracy_drop_pp=None``, ``--max-accuracy-drop none``).
DEFAULT_MAX_ACCURACY_DROP_PP = 1.0

#: Objective -> Optuna direction.
DIRECTIONS = {
    "accuracy": "maximize",
    "latency_ms": "minimize",
    "energy_uj": "minimize",
    "flash_bytes": "minimize",
    "ram_bytes": "minimize",
}
ALIASES = {
    "energy": "energy_uj",
    "latency": "latency_ms",
    "flash": "flash_bytes",
    "ram": "ram_bytes",
}
#: The budget keys, in the order Optuna receives them (the report's ``constraints`` adds max_).
LIMIT_KEYS = ("accuracy_drop_pp", "latency_ms", "energy_uj", "flash_bytes", "ram_bytes")
UNITS = {
    "accuracy_drop_pp": "pp",
    "latency_ms": "ms",
    "energy_uj": "uJ",
    "flash_bytes": "B",
    "ram_bytes": "B",
}
WORDS = {
    "accuracy_drop_pp": "accuracy drop",
    "latency_ms": "latency on the target",
    "energy_uj": "energy on the target",
    "flash_bytes": "flash (file size)",
    "ram_bytes": "RAM (peak activations)",
}


def objective_names(names: Sequence[str]) -> tuple[str, ...]:
    """Resolve short names (``energy``) to metric names (``energy_uj``); None for an unknown."""
    return tuple(ALIASES.get(name.strip(), name.strip()) for name in names)


def _scale(key: str, limit: float) -> float:
    # Excess relative to the limit, so budgets in bytes and in pp weigh alike; an accuracy drop
    # is scaled by at least one percentage point (a 0 pp limit would divide by zero).
    return max(abs(limit), 1.0) if key == "accuracy_drop_pp" else max(abs(limit), 1e-9)


def violations(candidate: Mapping[str, Any], limits: Mapping[str, float | None]) -> list[dict]:
    """The budgets a candidate breaks: ``constraint``, ``value``, ``limit``, ``excess``."""
    broken = []
    for key in LIMIT_KEYS:
        limit, value = limits.get(key), candidate.get(key)
        if limit is not None and value is not None and value > limit:
            broken.append(
                {"constraint": key, "value": value, "limit": limit, "excess": value - limit}
            )
    return broken


def constraint_values(
    candidate: Mapping[str, Any], limits: Mapping[str, float | None]
) -> list[float]:
    """Optuna's constraint vector: (value - limit) / scale per budget; above 0 is violated."""
    values = []
    for key in LIMIT_KEYS:
        limit, value = limits.get(key), candidate.get(key)
        if limit is None or value is None:
            values.append(0.0)
        else:
            values.append((float(value) - float(limit)) / _scale(key, float(limit)))
    return values


def normalised_excess(candidate: Mapping[str, Any], limits: Mapping[str, float | None]) -> float:
    """How far a candidate is from the budget: the sum of its relative excesses."""
    return sum(max(0.0, value) for value in constraint_values(candidate, limits))


def _dominates(a: Mapping[str, Any], b: Mapping[str, Any], objectives: Sequence[str]) -> bool:
    better = False
    for name in objectives:
        x, y = float(a[name]), float(b[name])
        if DIRECTIONS[name] == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def pareto_front(candidates: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[int]:
    """Trial numbers of the non-dominated candidates, feasible ones only when there are any
    (constrained domination). A recipe the sampler proposed again appears once (its first
    trial)."""
    feasible = [c for c in candidates if c["is_feasible"]]
    pool = feasible or list(candidates)
    front, recipes = [], []
    for c in pool:
        if any(_dominates(other, c, objectives) for other in pool if other is not c):
            continue
        if c["recipe"] not in recipes:
            recipes.append(c["recipe"])
            front.append(c["trial"])
    return front


def choose(candidates: Sequence[Mapping[str, Any]]) -> int | None:
    """The most accurate feasible candidate, ties to the lowest energy; None when none fits.

    Remaining ties go to the smaller file, then the smaller RAM peak, then the lower latency,
    then the earlier trial, so the pick is never dominated by an equally accurate candidate.
    """
    feasible = [c for c in candidates if c["is_feasible"]]
    if not feasible:
        return None
    keys = ("energy_uj", "flash_bytes", "ram_bytes", "latency_ms", "trial")
    best = min(feasible, key=lambda c: (-c["accuracy"], *(c[key] for key in keys)))
    return int(best["trial"])


def closest(
    candidates: Sequence[Mapping[str, Any]], limits: Mapping[str, float | None], k: int = 3
) -> list[int]:
    """Up to ``k`` infeasible candidates, the smallest normalised excess first."""
    ranked = sorted(
        (c for c in candidates if not c["is_feasible"]),
        key=lambda c: (normalised_excess(c, limits), -c["accuracy"], c["trial"]),
    )
    return [int(c["trial"]) for c in ranked[:k]]


def _amount(key: str, value: float) -> str:
    unit = UNITS[key]
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:,.4g} {unit}"


def explain(candidates: Sequence[Mapping[str, Any]], limits: Mapping[str, float | None]) -> str:
    """Say in words which budget failed and by how much, for a search with no feasible result.

    A budget no candidate met is named with the best value any candidate reached; when every
    budget was met by some candidate but never all at once, the closest candidate's breaches
    are named instead.
    """
    if not candidates:
        return "no candidate was measured, so no constraint could be checked."
    parts = []
    for key in LIMIT_KEYS:
        limit = limits.get(key)
        if limit is None:
            continue
        best = min(float(c[key]) for c in candidates)
        if best > limit:
            times = f" ({best / limit:.3g}x the limit)" if limit > 0 else ""
            parts.append(
                f"{WORDS[key]} ({key}): no candidate is within {_amount(key, limit)}; the best "
                f"of {len(candidates)} is {_amount(key, best)}, over by "
                f"{_amount(key, best - limit)}{times}"
            )
    if parts:
        return "no candidate meets the budget: " + "; ".join(parts) + "."
    first = closest(candidates, limits, k=1)[0]
    record = next(c for c in candidates if c["trial"] == first)
    breaches = ", ".join(
        f"{WORDS[v['constraint']]} {_amount(v['constraint'], v['value'])} > "
        f"{_amount(v['constraint'], v['limit'])} (over by {_amount(v['constraint'], v['excess'])})"
        for v in violations(record, limits)
    )
    return (
        "every budget is met by some candidate but none meets all at once; the closest, trial "
        f"{first}, breaks {breaches}."
    )
