"""The search space: an Optuna trial's choices, turned into the steps of a recipe.

The space is defined while it runs (Optuna's define-by-run API): a step's parameters are only
asked for when the step is chosen, and steps that need a PyTorch model (pruning, QAT) are only
offered when there is one (the baseline is PyTorch, or a student was distilled). A parameter
keeps the same name and choices in every trial, as Optuna's samplers require; the ONNX-only
quantization choice therefore has a name of its own.

1. ``student``: ``none`` or a smaller student distilled from the model (Hinton et al. 2015).
2. ``prune``: ``none``, ``channel`` (a fraction of the MACs removed with Torch-Pruning) or
   ``unstructured`` (a fraction of the weights zeroed).
3. ``quantize``: ``none``, ``ptq8``, ``qat8``, ``ptq4`` (4-bit weights) or ``mixed`` (per-layer
   4/8-bit weights under a flash budget that is a fraction of the all-8-bit file, and at
   least the all-4-bit file). Without a PyTorch model (``quantize_onnx``: no QAT, no pruning)
   a PTQ choice also draws its calibrator, per-channel or per-tensor scales, CLE and bias
   correction (``ptq_*`` parameters), so an ONNX file has more than a few recipes to try.

The choices of steps 2 and 3 are those the stages registered (``register_stage(...,
choices=...)``): a new technique that registers a choice is searched without a change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from edgeopt.pipeline import Step
from edgeopt.pipeline import finish_recipe
from edgeopt.registry import get_stage
from edgeopt.registry import list_stages
from edgeopt.spec import parse_spec
from edgeopt.stages._stage import ChoiceContext
from edgeopt.stages._stage import Deferred
from edgeopt.stages.distill import DistillConfig
from edgeopt.stages.quantize import PTQConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeopt.data import Dataset
    from edgeopt.models import ModelHandle

__all__ = ["Plan", "QUANTIZE_METHODS", "ptq_bytes", "step_choices", "suggest_plan", "zoo_students"]

#: The order studies have always drawn these in (Optuna's categorical choices must not change
#: order within a study); choices registered later follow, in registry order.
_FIRST = ("ptq8", "qat8", "ptq4", "mixed")


def step_choices(step: str, *, is_torch: bool = True) -> dict[str, Callable[..., Any]]:
    """The search's choices for a recipe step (``prune``, ``quantize``), from the registry:
    name -> the function that builds its config; torch-only stages left out without a
    PyTorch model."""
    found: dict[str, Callable[..., Any]] = {}
    for kind in list_stages():
        stage = get_stage(kind)
        if stage.step == step and (is_torch or not stage.is_torch_only):
            found.update(stage.choices)
    order = sorted(found, key=lambda name: _FIRST.index(name) if name in _FIRST else len(_FIRST))
    return {name: found[name] for name in order}


QUANTIZE_METHODS = ("none", *step_choices("quantize"))
STATIC_METHODS = ("none", *step_choices("quantize", is_torch=False))


@dataclass(frozen=True)
class Plan:
    """The steps a trial chose; a quantize config that needs the model first (mixed
    precision's byte budget is a fraction of the model's own int8 file) is ``deferred``
    until it exists."""

    before: tuple[Step, ...]
    quantize: Step | None
    deferred: Deferred | None = None


def ptq_bytes(handle: ModelHandle, dataset: Dataset, bits: int, scratch: Path) -> int:
    """The size of the model's PTQ file with ``bits``-bit weights, written as a candidate is
    (:func:`edgeopt.pipeline.finish_recipe`) to ``scratch/int{bits}.onnx``: what the search
    gives its choices as ``ChoiceContext.ptq_bytes`` (mixed precision sizes its budget by it)."""
    probe = scratch / f"int{bits}.onnx"
    finish_recipe(handle, dataset, Step(PTQConfig(bits=bits)), probe, scratch)
    return probe.stat().st_size


def zoo_students(handle: ModelHandle, widths: tuple[float, ...]) -> list[str]:
    """Students of the model's own zoo architecture at smaller widths (``zoo:NAME?width=W``).

    An ONNX file written by ``edgeopt train`` names its architecture in its metadata
    (``model_spec``), so it gets students too; any other model gets none.

    Example:
        >>> from edgeopt.models import load_model
        >>> zoo_students(load_model("zoo:cnn-s"), (0.5, 0.25))
        ['zoo:cnn-s?width=0.5', 'zoo:cnn-s?width=0.25']
    """
    spec = handle.spec if handle.spec.startswith("zoo:") else handle.metadata.get("model_spec", "")
    if not spec.startswith("zoo:"):
        return []
    parsed = parse_spec(spec)
    base = parsed.pop_float("width", 1.0)
    return [f"zoo:{parsed.body}?width={base * width:g}" for width in widths]


def suggest_plan(
    trial: Any,
    *,
    students: list[str],
    is_torch: bool,
    seed: int,
    distill_epochs: int,
    finetune_epochs: int,
    methods: tuple[str, ...] = QUANTIZE_METHODS,
) -> Plan:
    """Ask the trial for one recipe (define-by-run; see the module's docstring).

    ``methods`` narrows the quantization choices (an int8-only runtime takes ``ptq8, qat8``);
    an ONNX-only model is offered the static ones among them.
    """
    before: list[Step] = []
    student = trial.suggest_categorical("student", ["none", *students]) if students else "none"
    if student != "none":
        before.append(Step(DistillConfig(epochs=distill_epochs, seed=seed), student=student))
    has_module = is_torch or student != "none"
    choice = ChoiceContext(
        trial=trial,
        seed=seed,
        finetune_epochs=finetune_epochs,
        ptq_bytes=ptq_bytes,
        is_torch=has_module,
    )
    quantize_choices = step_choices("quantize", is_torch=has_module)
    if has_module:
        prune_choices = step_choices("prune")
        kind = trial.suggest_categorical("prune", ["none", *prune_choices])
        if kind != "none":
            before.append(Step(prune_choices[kind](choice)))
        method = trial.suggest_categorical("quantize", list(methods))
    else:
        static = [m for m in methods if m in STATIC_METHODS] or ["none"]
        method = trial.suggest_categorical("quantize_onnx", static)
    if method == "none":
        return Plan(before=tuple(before), quantize=None)
    made = quantize_choices[method](choice)
    if isinstance(made, Deferred):
        return Plan(before=tuple(before), quantize=None, deferred=made)
    return Plan(before=tuple(before), quantize=Step(made))
