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
   least the all-4-bit file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from edgeopt.search.recipe import Step
from edgeopt.spec import parse_spec
from edgeopt.stages.distill import DistillConfig
from edgeopt.stages.prune import PruneConfig
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import QATConfig

if TYPE_CHECKING:
    from edgeopt.models import ModelHandle

__all__ = ["Plan", "QUANTIZE_METHODS", "suggest_plan", "zoo_students"]

PRUNE_KINDS = ("none", "channel", "unstructured")
QUANTIZE_METHODS = ("none", "ptq8", "qat8", "ptq4", "mixed")
STATIC_METHODS = ("none", "ptq8", "ptq4", "mixed")


@dataclass(frozen=True)
class Plan:
    """The steps a trial chose; mixed precision's byte budget is resolved once the model exists.

    ``mixed_fraction`` is the flash budget of mixed precision as a fraction of the size of the
    model's all-8-bit PTQ file (a size in bytes only makes sense for a given model), raised to
    the all-4-bit file where that is larger (:func:`edgeopt.search._trial.mixed_budget`).
    """

    before: tuple[Step, ...]
    quantize: Step | None
    mixed_fraction: float | None = None


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
    if has_module:
        kind = trial.suggest_categorical("prune", list(PRUNE_KINDS))
        if kind == "channel":
            ratio = trial.suggest_float("channel_ratio", 0.2, 0.7, step=0.1)
            config = PruneConfig(
                granularity="channel",
                ratio=round(ratio, 2),
                ratio_of="macs",
                finetune_epochs=finetune_epochs,
                seed=seed,
            )
            before.append(Step(config))
        elif kind == "unstructured":
            ratio = trial.suggest_float("unstructured_ratio", 0.3, 0.9, step=0.1)
            config = PruneConfig(ratio=round(ratio, 2), finetune_epochs=finetune_epochs, seed=seed)
            before.append(Step(config))
        method = trial.suggest_categorical("quantize", list(methods))
    else:
        static = [m for m in methods if m in STATIC_METHODS] or ["none"]
        method = trial.suggest_categorical("quantize_onnx", static)
    quantize: Step | None = None
    fraction = None
    if method == "ptq8":
        quantize = Step(PTQConfig())
    elif method == "ptq4":
        quantize = Step(PTQConfig(bits=4))
    elif method == "qat8":
        quantize = Step(QATConfig(epochs=max(1, finetune_epochs), seed=seed))
    elif method == "mixed":
        fraction = round(trial.suggest_float("mixed_fraction", 0.65, 0.9, step=0.05), 2)
    return Plan(before=tuple(before), quantize=quantize, mixed_fraction=fraction)
