"""One trial of the search: its recipe built into its own folder, exported and measured.

What a worker needs travels in :class:`Search` (picklable: it crosses a process spawn). A trial
asks :mod:`edgeopt.search.space` for a plan and runs it as a recipe with
:func:`edgeopt.pipeline.run` into ``RUNDIR/trials/NNNN/`` (``model.onnx``, ``model.json`` with
the file measured before and after each step, ``recipe.yaml``, ``metrics.json``); the record it
keeps with the trial is the report's candidate, and the budget reaches the sampler as
constraint values (above 0: broken). A recipe drawn again (same steps, configs and seed) is not
built again: its trial is pruned as a duplicate (``duplicate_of``), so ``--trials N`` counts N
distinct candidates.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from edgeopt._io import write_json
from edgeopt.data import Dataset
from edgeopt.models import ModelHandle
from edgeopt.pipeline import Recipe
from edgeopt.pipeline import run
from edgeopt.search import select
from edgeopt.search.space import Plan
from edgeopt.search.space import suggest_plan
from edgeopt.target import Target

if TYPE_CHECKING:
    from edgeopt.search.optimize import OptimizeConfig

__all__ = [
    "has_set_constraint",
    "Search",
    "candidate_record",
    "find_twin",
    "measure",
    "plan_key",
    "run_trial",
]

#: ``progress(complete, total)``: completed trials so far and the number asked for.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Search:
    """Everything a worker process needs (picklable: it crosses a spawn)."""

    handle: ModelHandle
    data_spec: str
    target: Target
    config: OptimizeConfig
    rundir: Path
    url: str
    baseline_accuracy: float
    limits: dict[str, float | None]
    students: tuple[str, ...]
    progress: ProgressFn | None = field(default=None, compare=False)


def candidate_record(
    trial: int, recipe: Recipe, metrics: Any, baseline_accuracy: float, artifact: str
) -> dict[str, Any]:
    """The measured record of one artifact (feasibility and Pareto are added for the report)."""
    accuracy = float(metrics.accuracy)
    return {
        "trial": trial,
        "recipe": recipe.to_dict(),
        "accuracy": accuracy,
        "accuracy_drop_pp": round(100.0 * (baseline_accuracy - accuracy), 6),
        "latency_ms": float(metrics.estimate.latency_ms),
        "energy_uj": float(metrics.estimate.energy_uj),
        "flash_bytes": int(metrics.size_bytes),
        "ram_bytes": int(metrics.peak_ram_bytes),
        "size_bytes": int(metrics.size_bytes),
        "params": int(metrics.params),
        "macs": int(metrics.macs),
        "host_latency_ms": float(metrics.latency_ms.p50) if metrics.latency_ms else None,
        "artifact": artifact,
        "int8": metrics.int8.summary() if metrics.int8 is not None else None,
        # measured with the rest, so the report needs no second pass over the file
        "memory_schedule": {
            "names": list(metrics.memory_steps),
            "bytes": list(metrics.memory_schedule),
        },
    }


def measure(search: Search, dataset: Dataset, path: Path) -> Any:
    from edgeopt.measure import profile_onnx

    return profile_onnx(path, data=dataset, target=search.target, threads=search.config.threads)


def run_trial(search: Search, dataset: Dataset, trial: Any) -> tuple[float, ...]:
    """Build the trial's recipe into its own folder, export it, measure the file."""
    config = search.config
    plan = suggest_plan(
        trial,
        students=list(search.students),
        is_torch=search.handle.module is not None,
        seed=config.seed,
        distill_epochs=config.distill_epochs,
        finetune_epochs=config.finetune_epochs,
        methods=config.quantize_methods,
    )
    key = plan_key(plan, config.seed, trial.params)
    trial.set_user_attr("plan", key)
    twin = find_twin(trial, key)
    if twin is not None:
        import optuna

        # The sampler proposed a recipe already measured (or being measured by another
        # worker): the same seed would build the same file, so it is not built again. Pruned,
        # the trial counts neither as a candidate nor toward --trials, and the sampler
        # learns to propose something new.
        trial.set_user_attr("duplicate_of", twin.number)
        raise optuna.TrialPruned(f"the recipe of trial {twin.number}, measured already")
    folder = search.rundir / "trials" / f"{trial.number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    quantize = (plan.quantize,) if plan.quantize else ()
    result = run(
        search.handle,
        Recipe(seed=config.seed, steps=plan.before + quantize),
        data=dataset,
        output=folder / "model.onnx",
        target=search.target,
        threads=config.threads,
        deferred=plan.deferred,  # a config that needs the model first (mixed precision)
    )
    recipe, metrics = result.recipe, result.after
    trial.set_user_attr("recipe", recipe.describe())
    recipe.to_yaml(folder / "recipe.yaml")
    write_json(folder / "metrics.json", metrics.to_dict())
    artifact = result.path.relative_to(search.rundir).as_posix()
    record = candidate_record(trial.number, recipe, metrics, search.baseline_accuracy, artifact)
    trial.set_user_attr("candidate", record)
    set_constraints(trial, record, search.limits)
    return tuple(float(record[name]) for name in config.objectives)


def plan_key(plan: Plan, seed: int, params: dict[str, Any]) -> str:
    """What makes two trials the same candidate: the recipe's steps (configs included) and
    seed; for a config made once the model exists (mixed precision's budget), the trial's
    parameters it is made from. Two trials with one key would build the same file."""
    steps = plan.before + ((plan.quantize,) if plan.quantize else ())
    key: dict[str, Any] = {"recipe": Recipe(seed=seed, steps=steps).to_dict()}
    if plan.deferred is not None:
        key["deferred"] = params
    return json.dumps(key, sort_keys=True, default=str)


def find_twin(trial: Any, key: str) -> Any:
    """Another trial of the study with this plan key, completed or still running (on any
    worker), or None. A failed one is no twin: it may have failed with its worker."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.RUNNING)
    for other in trial.study.get_trials(deepcopy=False, states=states):
        if other.number == trial.number or other.user_attrs.get("plan") != key:
            continue
        if other.state == TrialState.RUNNING or "candidate" in other.user_attrs:
            return other
    return None


def set_constraints(trial: Any, record: dict[str, Any], limits: dict[str, float | None]) -> None:
    if has_set_constraint():
        values = select.constraint_values(record, limits)
        for key, value in zip(select.LIMIT_KEYS, values, strict=True):
            trial.set_constraint(key, value)


@functools.cache
def has_set_constraint() -> bool:
    """Optuna 5 takes constraint values from the trial (``set_constraint``); Optuna 4 asks the
    sampler's ``constraints_func`` after each trial. The values are the same either way.
    (Asked on first use: ``import edgeopt`` does not load Optuna.)"""
    try:
        from optuna.trial import Trial
    except ImportError:  # pragma: no cover  (optuna is a dependency)
        return False
    return hasattr(Trial, "set_constraint")
