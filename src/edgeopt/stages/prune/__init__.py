"""``prune(model, PruneConfig(...), data=...)``: remove weights or channels, then fine-tune.

Three granularities, each on the PyTorch module (the training side):

- ``unstructured``: the smallest weights by magnitude, over all layers at one threshold
  (``scope="global"``) or per layer, at once or gradually on Zhu & Gupta's schedule interleaved
  with fine-tuning. The zeros stay in the dense tensors: the exported ONNX has the same size and
  MACs, and :mod:`edgeopt.export.compressed` is what stores only the nonzero weights.
- ``channel``: whole filters and neurons, removed for real by Torch-Pruning's dependency graph
  (Fang et al. 2023, arXiv 2301.12900), so coupled layers (residual adds, depthwise
  convolutions, concatenation) shrink together and the exported ONNX has smaller tensors and
  fewer MACs. The output layer keeps its outputs: they are the classes.
- ``2:4``: two of every four consecutive input weights (Mishra et al. 2021, arXiv 2104.08378).

Masks are held during fine-tuning by zeroing the pruned weights after every optimizer step, so
the weights are plain tensors at all times and nothing has to be made permanent before export.
Biases and normalization layers are never pruned.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import ClassVar

from edgeopt.config import Config
from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.registry import register_stage
from edgeopt.stages._stage import ChoiceContext
from edgeopt.stages._stage import StageContext
from edgeopt.stages.prune.channel import IMPORTANCES
from edgeopt.stages.prune.channel import broken_model
from edgeopt.stages.prune.channel import prune_channels
from edgeopt.stages.prune.channel import reach_macs
from edgeopt.stages.prune.channel import taylor_gradients
from edgeopt.stages.prune.sensitivity import DEFAULT_RATIOS
from edgeopt.stages.prune.sensitivity import HIGH_SPARSITY_RATIOS
from edgeopt.stages.prune.sensitivity import MAX_LAYER_RATIO
from edgeopt.stages.prune.sensitivity import SensitivityTable
from edgeopt.stages.prune.sensitivity import choose_ratios
from edgeopt.stages.prune.sensitivity import measure_sensitivity
from edgeopt.stages.prune.sensitivity import sensitivity
from edgeopt.stages.prune.sparsity import SkippedLayer
from edgeopt.stages.prune.sparsity import WeightLayer
from edgeopt.stages.prune.sparsity import apply_masks_
from edgeopt.stages.prune.sparsity import count_macs
from edgeopt.stages.prune.sparsity import gradual_schedule
from edgeopt.stages.prune.sparsity import layers_or_refuse
from edgeopt.stages.prune.sparsity import magnitude_masks
from edgeopt.stages.prune.sparsity import prepare_module
from edgeopt.stages.prune.sparsity import two_four_mask
from edgeopt.stages.prune.sparsity import two_four_reason
from edgeopt.stages.prune.sparsity import zero_fraction
from edgeopt.training import EpochRecord
from edgeopt.training import fit
from edgeopt.training import seed_everything

__all__ = [
    "LayerPruning",
    "PruneConfig",
    "PruneResult",
    "ScheduleEvent",
    "SensitivityTable",
    "SkippedLayer",
    "choose_ratios",
    "prune",
    "sensitivity",
]

GRANULARITIES = ("unstructured", "channel", "2:4")
SCHEDULES = ("oneshot", "gradual")
SCOPES = ("global", "layer")
RATIOS_OF = ("units", "macs")
#: The gradual schedule prunes over the first two thirds of the fine-tuning steps and leaves the
#: last third to recover at the decaying learning rate, in at most this many pruning events.
GRADUAL_END_FRACTION = 2 / 3
GRADUAL_EVENTS = 32


@dataclass(frozen=True)
class PruneConfig(Config):
    """What to prune, how much, and how to recover.

    Fields: ``granularity`` (``unstructured`` | ``channel`` | ``2:4``; the CLI's ``--kind``),
    ``ratio`` (the fraction of weights for unstructured, of output channels of every prunable
    layer for channel; 2:4 is 0.5 by definition), ``ratio_of`` (``units``: of those weights or
    channels; ``macs``, channel only: of the model's dense MACs, reached by scaling the layer
    ratios), ``channel_multiple`` (channel only: every pruned layer keeps a multiple of this
    many output channels, at least one multiple; 16 matches the AVX-512 blocks of ONNX
    Runtime's CPU convolutions, 8 the AVX2 ones), ``schedule`` (``oneshot`` | ``gradual``,
    unstructured only), ``finetune_epochs`` (after or, when gradual, during pruning),
    ``scope`` (``global``: one threshold over all layers; ``layer``: every layer at ``ratio``),
    ``importance`` (channel ranking: ``l1`` | ``l2`` group magnitude, or ``taylor``, first
    order from gradients), ``is_sensitivity_guided`` (per-layer ratios from
    :func:`sensitivity` over ``DEFAULT_RATIOS`` for channels or ``HIGH_SPARSITY_RATIOS`` for
    weights, chosen by :func:`choose_ratios` so that the channel- or weight-weighted mean is
    ``ratio``, or the MAC-weighted mean when ``ratio_of`` is ``macs``; ``scope`` is then not
    used), ``learning_rate`` and ``batch_size`` of
    fine-tuning, ``seed``.

    In global scope every layer, the first convolution and the classifier included, is held to
    the same magnitude threshold rather than protected by a rule: those two layers have the
    smallest fan-in, so their weights are the largest (initialization and training scale with
    1/sqrt(fan-in)) and one threshold prunes them least, as Han et al. 2015 found per layer
    (arXiv 1506.02626, Table 4: LeNet-5's conv1 keeps 66% against fc1's 8%).
    """

    kind: ClassVar[str] = "prune"
    granularity: str = "unstructured"
    ratio: float = 0.5
    schedule: str = "oneshot"
    finetune_epochs: int = 2
    scope: str = "global"
    importance: str = "l1"
    is_sensitivity_guided: bool = False
    ratio_of: str = "units"
    channel_multiple: int = 1
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def label(self) -> str:
        return f"prune({self.granularity} {self.ratio:g})"

    def __post_init__(self) -> None:  # noqa: C901  (one validation per field of the config, each naming the field)
        def one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                raise InputError(
                    f"prune: {name} must be one of {', '.join(allowed)}, got {value!r}."
                )

        one_of("granularity", self.granularity, GRANULARITIES)
        one_of("schedule", self.schedule, SCHEDULES)
        one_of("scope", self.scope, SCOPES)
        one_of("importance", self.importance, IMPORTANCES)
        one_of("ratio_of", self.ratio_of, RATIOS_OF)
        ratio = self.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
            raise InputError(f"prune: ratio must be in [0, 1), got {ratio!r}.")
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int):
            raise InputError(
                f"prune: finetune_epochs must be a whole number, got {self.finetune_epochs!r}."
            )
        if self.finetune_epochs < 0:
            raise InputError(
                f"prune: finetune_epochs must be 0 or more, got {self.finetune_epochs}."
            )
        if not isinstance(self.is_sensitivity_guided, bool):
            raise InputError("prune: is_sensitivity_guided must be true or false.")
        if not self.learning_rate > 0:
            raise InputError(f"prune: learning_rate must be above 0, got {self.learning_rate}.")
        batch = self.batch_size
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InputError(f"prune: batch_size must be at least 1, got {self.batch_size!r}.")
        if self.granularity == "2:4":
            if ratio != 0.5:
                raise InputError(
                    f"prune: 2:4 sparsity prunes exactly half the weights, so ratio must be 0.5, "
                    f"got {ratio}."
                )
            if self.is_sensitivity_guided:
                raise InputError(
                    "prune: 2:4 sparsity has a fixed pattern; it takes no per-layer ratios."
                )
        if self.schedule == "gradual":
            if self.granularity != "unstructured":
                raise InputError(
                    "prune: the gradual schedule applies to unstructured pruning, not "
                    f"{self.granularity}."
                )
            if self.finetune_epochs < 1:
                raise InputError("prune: the gradual schedule needs finetune_epochs of at least 1.")
        if self.importance == "taylor" and self.granularity != "channel":
            raise InputError(
                "prune: taylor importance ranks channels; use it with granularity channel."
            )
        if self.ratio_of == "macs" and self.granularity != "channel":
            raise InputError(
                f"prune: {self.granularity} pruning leaves the dense MACs unchanged, so ratio_of "
                "macs applies to granularity channel only."
            )
        multiple = self.channel_multiple
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise InputError(
                f"prune: channel_multiple must be a whole number of at least 1, got {multiple!r}."
            )
        if multiple > 1 and self.granularity != "channel":
            raise InputError("prune: channel_multiple rounds channel counts; use it with channel.")
        if multiple > 1 and self.scope == "global" and not self.is_sensitivity_guided:
            raise InputError(
                "prune: channel_multiple needs per-layer ratios (scope layer or sensitivity "
                "guidance); a global threshold decides each layer's count itself."
            )

    @property
    def finetune(self) -> TrainConfig:
        return TrainConfig(
            epochs=max(1, self.finetune_epochs),
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
        )


@dataclass(frozen=True)
class LayerPruning:
    """One Conv/Linear layer before and after: ``unit`` is ``weights`` or ``channels``."""

    name: str
    layer_type: str
    unit: str
    original: int
    remaining: int
    weights_before: int
    weights_after: int  # nonzero weights left

    @property
    def sparsity(self) -> float:
        """Fraction of the layer's ``unit`` that was pruned."""
        return 1.0 - self.remaining / max(1, self.original)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer_type": self.layer_type,
            "unit": self.unit,
            "original": self.original,
            "remaining": self.remaining,
            "sparsity": self.sparsity,
            "weights_before": self.weights_before,
            "weights_after": self.weights_after,
        }


@dataclass(frozen=True)
class ScheduleEvent:
    """One event of the gradual schedule: optimizer step, target sparsity, sparsity reached."""

    step: int
    target_sparsity: float
    sparsity: float


@dataclass(frozen=True)
class PruneResult:
    """The pruned model and what pruning did (PyTorch-side counts; measure the export for more).

    ``weights_*`` count Conv/Linear weights (nonzero after pruning); ``macs_*`` their dense
    multiply-accumulates at batch 1 (what ONNX Runtime executes); ``nonzero_macs_after`` those
    with a nonzero weight (what a sparse kernel would execute).
    """

    model: ModelHandle
    config: PruneConfig
    layers: tuple[LayerPruning, ...]
    skipped: tuple[SkippedLayer, ...]
    weights_before: int
    weights_after: int
    macs_before: int
    macs_after: int
    nonzero_macs_after: int
    ratios: dict[str, float] = field(default_factory=dict)
    schedule: tuple[ScheduleEvent, ...] = ()
    history: tuple[EpochRecord, ...] = ()
    sensitivity: SensitivityTable | None = None
    notes: tuple[str, ...] = ()

    @property
    def sparsity(self) -> float:
        """Fraction of the Conv/Linear weights pruned (zeroed or removed)."""
        return 1.0 - self.weights_after / max(1, self.weights_before)

    @property
    def mac_reduction(self) -> float:
        """Fraction of the dense MACs removed (0 unless channels were removed)."""
        return 1.0 - self.macs_after / max(1, self.macs_before)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "sparsity": self.sparsity,
            "mac_reduction": self.mac_reduction,
            "weights_before": self.weights_before,
            "weights_after": self.weights_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "nonzero_macs_after": self.nonzero_macs_after,
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": [layer.to_dict() for layer in self.skipped],
            "ratios": dict(self.ratios),
            "schedule": [vars(event) for event in self.schedule],
            "history": [vars(record) for record in self.history],
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "notes": list(self.notes),
            "method": "counted on the PyTorch module; size and MACs of the export: profile it",
        }


def _masked_finetune(
    module: Any,
    layers: list[WeightLayer],
    masks: dict[str, Any],
    dataset: Dataset,
    config: PruneConfig,
    generator: Any,
) -> tuple[EpochRecord, ...]:
    apply_masks_(layers, masks)
    if config.finetune_epochs == 0:
        return ()
    return fit(
        module,
        dataset,
        config.finetune,
        generator=generator,
        after_step=lambda _: apply_masks_(layers, masks),
    )


def _gradual(
    module: Any,
    layers: list[WeightLayer],
    target: float | dict[str, float],
    scope: str,
    dataset: Dataset,
    config: PruneConfig,
    generator: Any,
) -> tuple[tuple[EpochRecord, ...], tuple[ScheduleEvent, ...]]:
    """Prune on Zhu & Gupta's schedule while fine-tuning (arXiv 1710.01878, section 3)."""
    steps = config.finetune_epochs * math.ceil(len(dataset.labels["train"]) / config.batch_size)
    end = max(1, int(steps * GRADUAL_END_FRACTION))
    count = min(GRADUAL_EVENTS, end)
    fractions = gradual_schedule(1.0, count)
    at_step = {(k + 1) * end // count: k for k in range(count)}  # distinct: end >= count
    masks: dict[str, Any] = {}
    events: list[ScheduleEvent] = []
    total = sum(layer.weights for layer in layers)

    def after_step(step: int) -> None:
        k = at_step.get(step)
        if k is not None:
            now: float | dict[str, float]
            if isinstance(target, dict):
                per_layer = {n: r * fractions[k] for n, r in target.items()}
                overall = sum(per_layer.get(x.name, 0.0) * x.weights for x in layers) / total
                now = per_layer
            else:
                now = overall = target * fractions[k]
            masks.update(magnitude_masks(layers, now, scope=scope))
            apply_masks_(layers, masks)
            events.append(ScheduleEvent(step, overall, zero_fraction(layers)))
        else:
            apply_masks_(layers, masks)

    history = fit(module, dataset, config.finetune, generator=generator, after_step=after_step)
    return history, tuple(events)


def prune(
    model: str | ModelHandle,
    config: PruneConfig | None = None,
    *,
    data: str | Dataset,
) -> PruneResult:
    """Prune a PyTorch model and fine-tune it; the input model is never changed.

    Args:
        model: a PyTorch model spec or handle (``zoo:NAME``, ``module:factory`` with weights,
            ``.pt2``).
        config: what to prune and how; defaults to ``PruneConfig()``.
        data: fine-tuning uses its train split, sensitivity and the logged accuracy its
            validation split.

    Returns:
        The new handle, the per-layer table, the skipped layers with their reasons, the
        sparsity and MAC counts, the gradual schedule and the fine-tuning history.

    Raises:
        InputError: an ONNX-only model, a model that does not fit the data, a model without
            Conv or Linear layers, or a model Torch-Pruning cannot trace (channel).

    Example:
        >>> result = prune("zoo:cnn-s", PruneConfig(ratio=0.5, finetune_epochs=0), data="digits")
        >>> round(result.sparsity, 3)
        0.5
    """
    config = config or PruneConfig()
    dataset, handle, module, example = prepare_module(model, data, "pruning")
    generator = seed_everything(config.seed)
    layers, skipped = layers_or_refuse(module, handle.spec)
    before = count_macs(module, example)
    shapes = {layer.name: (int(layer.weight.shape[0]), layer.weights) for layer in layers}
    table = None
    ratios: dict[str, float] = {}
    if config.is_sensitivity_guided:
        table = measure_sensitivity(
            module,
            dataset,
            layers=layers,
            example=example,
            granularity=config.granularity,
            ratios=DEFAULT_RATIOS if config.granularity == "channel" else HIGH_SPARSITY_RATIOS,
            importance=config.importance,
            generator=generator,
            batch_size=config.batch_size,
            spec=handle.spec,
        )
        ratios = choose_ratios(table, ratio=config.ratio, of=config.ratio_of)
    schedule: tuple[ScheduleEvent, ...] = ()
    notes = list(_notes(config.granularity))
    if config.granularity == "channel":
        ratio = config.ratio
        if config.ratio_of == "macs":
            ratio, ratios, note = _reach_macs(
                module, layers, example, ratios, dataset, config, handle.spec
            )
            notes.append(note)
        left, history = _remove_channels(
            module, layers, example, ratio, ratios, dataset, config, generator, handle.spec
        )
        skipped += left
    elif config.granularity == "2:4":
        masks = {}
        for layer in layers:
            reason = two_four_reason(layer)
            if reason is None:
                masks[layer.name] = two_four_mask(layer.weight)
            else:
                skipped.append(SkippedLayer(layer.name, reason))
        history = _masked_finetune(module, layers, masks, dataset, config, generator)
    else:
        target: float | dict[str, float] = ratios or config.ratio
        scope = "layer" if ratios else config.scope
        if config.schedule == "gradual":
            history, schedule = _gradual(module, layers, target, scope, dataset, config, generator)
        else:
            masks = magnitude_masks(layers, target, scope=scope)
            history = _masked_finetune(module, layers, masks, dataset, config, generator)
    module.eval()
    after = count_macs(module, example)
    rows = _rows(layers, shapes, "channels" if config.granularity == "channel" else "weights")
    step = (
        f"prune(granularity={config.granularity}, ratio={config.ratio}, "
        f"schedule={config.schedule}, finetune_epochs={config.finetune_epochs}, seed={config.seed})"
    )
    if config.ratio_of != "units" or config.channel_multiple != 1:
        step = (
            f"{step[:-1]}, ratio_of={config.ratio_of}, channel_multiple={config.channel_multiple})"
        )
    return PruneResult(
        model=handle.with_module(module, step, normalization=dataset.normalization.to_dict()),
        config=config,
        layers=rows,
        skipped=tuple(skipped),
        weights_before=sum(w for _, w in shapes.values()),
        weights_after=sum(row.weights_after for row in rows),
        macs_before=sum(dense for dense, _ in before.values()),
        macs_after=sum(dense for dense, _ in after.values()),
        nonzero_macs_after=sum(nonzero for _, nonzero in after.values()),
        ratios=ratios,
        schedule=schedule,
        history=history,
        sensitivity=table,
        notes=tuple(notes),
    )


def _gradients(module: Any, dataset: Dataset, config: PruneConfig) -> Any:
    """Taylor importance's gradients for one pruning of ``module`` (None for magnitude).

    A generator of its own, seeded from the config, so the trial prunes of a MAC ratio and the
    final one rank channels alike.
    """
    if config.importance != "taylor":
        return None
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    return functools.partial(taylor_gradients, module, dataset, config.batch_size, generator)


def _reach_macs(
    module: Any,
    layers: list[WeightLayer],
    example: Any,
    ratios: dict[str, float],
    dataset: Dataset,
    config: PruneConfig,
    spec: str,
) -> tuple[float, dict[str, float], str]:
    """The channel ratio, or per-layer ratios, that remove ``config.ratio`` of the dense MACs."""
    ratio, per_layer, factor, reached = reach_macs(
        module,
        example,
        target=config.ratio,
        ratios=ratios,
        scope=config.scope,
        importance=config.importance,
        multiple=config.channel_multiple,
        cap=MAX_LAYER_RATIO,
        spec=spec,
        gradients_for=lambda clone: _gradients(clone, dataset, config),
    )
    how = f"per-layer ratios scaled by {factor:.4g}" if per_layer else f"channel ratio {ratio:.4g}"
    verdict = "removes" if reached >= config.ratio else "removes at most"
    note = f"ratio of MACs {config.ratio}: {how} {verdict} {reached:.1%} of the dense MACs"
    return ratio, per_layer, note


def _remove_channels(
    module: Any,
    layers: list[WeightLayer],
    example: Any,
    ratio: float,
    ratios: dict[str, float],
    dataset: Dataset,
    config: PruneConfig,
    generator: Any,
    spec: str,
) -> tuple[list[SkippedLayer], tuple[EpochRecord, ...]]:
    """Channel pruning with Torch-Pruning, then fine-tuning; the layers left alone."""
    import torch

    with torch.no_grad():
        out_shape = module(example).shape
    channels = {layer.name: int(layer.weight.shape[0]) for layer in layers}
    skipped = prune_channels(
        module,
        layers,
        example,
        ratio=ratio,
        ratios=ratios or None,
        scope=config.scope,
        importance=config.importance,
        spec=spec,
        gradients=_gradients(module, dataset, config),
        multiple=config.channel_multiple,
    )
    with torch.no_grad():
        try:
            shape = module(example).shape
        except RuntimeError as exc:  # Torch-Pruning lost track of a dependency it cannot see
            raise broken_model(spec, exc) from None
        if shape != out_shape:
            raise RuntimeError("channel pruning changed the output shape")  # a bug, not input
    if all(int(layer.weight.shape[0]) == channels[layer.name] for layer in layers):
        why = "; ".join(f"{item.name}: {item.reason}" for item in skipped[:4]) or "none skipped"
        raise InputError(
            f"{spec}: channel pruning at ratio {ratio:.3g} removes no channel (layers left alone: "
            f"{why}); raise --ratio, or zero weights instead with --kind unstructured."
        )
    if config.finetune_epochs == 0:
        return skipped, ()
    return skipped, fit(module, dataset, config.finetune, generator=generator)


def _rows(
    layers: list[WeightLayer], shapes: dict[str, tuple[int, int]], unit: str
) -> tuple[LayerPruning, ...]:
    """The per-layer table: output channels or nonzero weights before and after."""
    rows = []
    for layer in layers:
        channels, weights = shapes[layer.name]
        nonzero = int((layer.weight.detach() != 0).sum())
        original, remaining = (
            (channels, int(layer.weight.shape[0])) if unit == "channels" else (weights, nonzero)
        )
        rows.append(
            LayerPruning(layer.name, layer.layer_type, unit, original, remaining, weights, nonzero)
        )
    return tuple(rows)


def _notes(granularity: str) -> tuple[str, ...]:
    if granularity == "channel":
        return (
            "channels are removed: the exported ONNX has smaller tensors, fewer parameters and "
            "fewer MACs",
        )
    notes = [
        "the pruned weights are zeros stored densely: the exported ONNX keeps its size_bytes "
        "and MACs, and ONNX Runtime's CPU provider has no sparse kernels to skip them; "
        "edgeopt.export.compressed stores only the nonzero weights",
    ]
    if granularity == "2:4":
        notes.append(
            "2:4 sparsity runs faster only on sparse tensor cores (NVIDIA Ampere and later, "
            "through TensorRT or cuSPARSELt); ONNX Runtime's CPU provider has no 2:4 kernels"
        )
    return tuple(notes)


def _channel_choice(choice: ChoiceContext) -> PruneConfig:
    """The search's ``channel`` choice: a fraction of the MACs removed, 0.2 to 0.7."""
    ratio = choice.trial.suggest_float("channel_ratio", 0.2, 0.7, step=0.1)
    return PruneConfig(
        granularity="channel",
        ratio=round(ratio, 2),
        ratio_of="macs",
        finetune_epochs=choice.finetune_epochs,
        seed=choice.seed,
    )


def _unstructured_choice(choice: ChoiceContext) -> PruneConfig:
    """The search's ``unstructured`` choice: a fraction of the weights zeroed, 0.3 to 0.9."""
    ratio = choice.trial.suggest_float("unstructured_ratio", 0.3, 0.9, step=0.1)
    return PruneConfig(
        ratio=round(ratio, 2), finetune_epochs=choice.finetune_epochs, seed=choice.seed
    )


@register_stage(
    PruneConfig,
    choices={"channel": _channel_choice, "unstructured": _unstructured_choice},
    is_torch_only=True,
    noun="pruning",
)
def apply_prune(ctx: StageContext, config: PruneConfig) -> PruneResult:
    """Prune and fine-tune the context's PyTorch model (:func:`prune`)."""
    assert ctx.dataset is not None
    return prune(ctx.handle, config, data=ctx.dataset)
