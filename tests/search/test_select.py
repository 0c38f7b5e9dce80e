"""Budgets, the Pareto front, the pick and the explanation, on hand-made candidate records."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edgeopt.search import select

LIMITS: dict[str, float | None] = {
    "accuracy_drop_pp": 2.0,
    "latency_ms": None,
    "energy_uj": 100.0,
    "flash_bytes": 20_000,
    "ram_bytes": 4_096,
}


def record(trial: int, accuracy: float, energy: float, flash: int, **extra: Any) -> dict:
    c = {
        "trial": trial,
        "recipe": {"seed": 0, "steps": [{"step": "prune", "ratio": trial}]},
        "accuracy": accuracy,
        "accuracy_drop_pp": 100 * (0.99 - accuracy),
        "latency_ms": energy / 40,
        "energy_uj": energy,
        "flash_bytes": flash,
        "ram_bytes": 1_024,
        **extra,
    }
    c["violations"] = select.violations(c, LIMITS)
    c["is_feasible"] = not c["violations"]
    return c


def test_violations_name_the_budget_value_limit_and_excess() -> None:
    c = record(0, 0.95, 150.0, 30_000)
    assert [(v["constraint"], v["excess"]) for v in c["violations"]] == [
        ("accuracy_drop_pp", 100 * (0.99 - 0.95) - 2.0),
        ("energy_uj", 50.0),
        ("flash_bytes", 10_000),
    ]
    values = select.constraint_values(c, LIMITS)
    assert values[1] == 0.0  # latency: no budget
    assert values[2] == 0.5 and values[3] == 0.5  # relative excess: 50 of 100 uJ, 10k of 20k B


def test_pick_is_most_accurate_feasible_with_ties_to_lowest_energy() -> None:
    candidates = [
        record(0, 0.985, 90.0, 15_000),
        record(1, 0.985, 60.0, 18_000),
        record(2, 0.99, 200.0, 15_000),  # more accurate, over the energy budget
        record(3, 0.975, 30.0, 9_000),
    ]
    assert select.choose(candidates) == 1
    front = select.pareto_front(candidates, ("accuracy", "energy_uj"))
    assert front == [1, 3]  # 0 is dominated by 1; 2 is infeasible


def test_pareto_lists_a_repeated_recipe_once() -> None:
    first = record(0, 0.98, 50.0, 10_000)
    again = {**first, "trial": 1}
    assert select.pareto_front([first, again], ("accuracy", "energy_uj")) == [0]


def test_infeasible_search_explains_each_budget_nobody_met() -> None:
    candidates = [record(0, 0.985, 150.0, 12_000), record(1, 0.96, 120.0, 11_000)]
    assert select.choose(candidates) is None
    assert select.closest(candidates, LIMITS) == [0, 1]  # 0.5 relative excess before 0.2 + 0.5
    text = select.explain(candidates, LIMITS)
    assert "energy_uj" in text and "the best of 2 is 120 uJ, over by 20 uJ" in text
    assert "flash_bytes" not in text


def test_budgets_met_apart_but_never_together_name_the_closest() -> None:
    candidates = [record(0, 0.985, 150.0, 12_000), record(1, 0.95, 50.0, 11_000)]
    text = select.explain(candidates, LIMITS)
    assert text.startswith("every budget is met by some candidate but none meets all at once")
    assert "trial 0" in text and "energy on the target 150 uJ > 100 uJ" in text


@given(
    st.lists(
        st.tuples(st.floats(0.5, 1.0), st.floats(1.0, 300.0), st.integers(1_000, 40_000)),
        min_size=1,
        max_size=12,
    )
)
def test_pick_never_breaks_a_budget(rows: list[tuple[float, float, int]]) -> None:
    candidates = [record(i, a, e, f) for i, (a, e, f) in enumerate(rows)]
    chosen = select.choose(candidates)
    feasible = [c for c in candidates if c["is_feasible"]]
    if chosen is None:
        assert not feasible
    else:
        pick = candidates[chosen]
        assert pick["is_feasible"]
        assert pick["accuracy"] == max(c["accuracy"] for c in feasible)
        assert chosen in select.pareto_front(candidates, ("accuracy", "energy_uj", "flash_bytes"))
