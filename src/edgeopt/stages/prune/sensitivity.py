"""Per-layer sensitivity to pruning, and the per-layer ratios chosen from it.

One layer is pruned at a time, at each ratio, without fine-tuning, and the validation accuracy
is recorded; :func:`choose_ratios` then prunes the insensitive layers harder (in the spirit of
Han et al. 2015, arXiv 1506.02626, section 4, and Li et al. 2017, "Pruning Filters for
Efficient ConvNets", arXiv 1608.08710, section 4.2).
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any

from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.models.layers import WeightLayer
from edgeopt.models.layers import weight_layers
from edgeopt.stages.prune.channel import IMPORTANCES
from edgeopt.stages.prune.channel import output_layer
from edgeopt.stages.prune.channel import prune_channels
from edgeopt.stages.prune.channel import taylor_gradients
from edgeopt.stages.prune.sparsity import SkippedLayer
from edgeopt.stages.prune.sparsity import apply_masks_
from edgeopt.stages.prune.sparsity import count_macs
from edgeopt.stages.prune.sparsity import layers_or_refuse
from edgeopt.stages.prune.sparsity import magnitude_masks
from edgeopt.stages.prune.sparsity import prepare_module
from edgeopt.training import evaluate
from edgeopt.training import seed_everything

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The ratios a sensitivity-guided unstructured pruning tries: weights only start to matter at
#: high sparsity (Han et al. 2015, Figure 6), so the grid is fine there.
HIGH_SPARSITY_RATIOS = (0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
#: A sensitivity-guided layer never loses more than this fraction, however insensitive it is.
MAX_LAYER_RATIO = 0.99
#: Batch size of the Taylor gradients when :func:`sensitivity` is called on its own.
BATCH_SIZE = 64


@dataclass(frozen=True)
class SensitivityTable:
    """Validation accuracy with one layer pruned at a time, per ratio, without fine-tuning.

    ``accuracy[i][j]`` is the accuracy with ``layers[i]`` pruned at ``ratios[j]`` (NaN where the
    layer cannot be pruned that far); ``sizes[i]`` its output channels (channel) or weights
    (unstructured); ``macs[i]`` the dense MACs that scale with what is pruned of it: its own
    (unstructured), or its own and those of the layers its output channels feed (channel,
    measured on the trial prunes).
    """

    granularity: str
    ratios: tuple[float, ...]
    baseline_accuracy: float
    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    accuracy: tuple[tuple[float, ...], ...]
    skipped: tuple[SkippedLayer, ...] = ()
    macs: tuple[int, ...] = ()

    def drops(self, layer: str) -> tuple[float, ...]:
        """Accuracy lost per ratio when ``layer`` alone is pruned."""
        row = self.accuracy[self.layers.index(layer)]
        return tuple(self.baseline_accuracy - value for value in row)

    def to_dict(self) -> dict[str, Any]:
        return {
            "granularity": self.granularity,
            "ratios": list(self.ratios),
            "baseline_accuracy": self.baseline_accuracy,
            "layers": [
                {
                    "name": name,
                    "size": size,
                    "macs": macs,
                    "accuracy": [None if math.isnan(v) else v for v in row],
                }
                for name, size, macs, row in zip(
                    self.layers,
                    self.sizes,
                    self.macs or (None,) * len(self.layers),
                    self.accuracy,
                    strict=True,
                )
            ],
            "skipped": [layer.to_dict() for layer in self.skipped],
        }


def measure_sensitivity(
    module: Any,
    dataset: Dataset,
    *,
    layers: list[WeightLayer],
    example: Any,
    granularity: str,
    ratios: tuple[float, ...],
    importance: str,
    generator: Any,
    batch_size: int,
    spec: str,
) -> SensitivityTable:
    """The table of :func:`sensitivity` for a module already loaded (it is restored after)."""
    x_val, y_val = dataset.arrays("val")
    baseline = evaluate(module, x_val, y_val)
    dense = count_macs(module, example)
    baseline_macs = sum(macs for macs, _ in dense.values())
    names: list[str] = []
    sizes: list[int] = []
    macs: list[int] = []
    rows: list[tuple[float, ...]] = []
    skipped: list[SkippedLayer] = []
    if granularity == "unstructured":
        for layer in layers:
            original = layer.weight.detach().clone()
            row = []
            for ratio in ratios:
                apply_masks_([layer], magnitude_masks([layer], ratio, scope="layer"))
                row.append(evaluate(module, x_val, y_val))
                layer.weight.data.copy_(original)
            names.append(layer.name)
            sizes.append(layer.weights)
            macs.append(dense[layer.name][0])
            rows.append(tuple(row))
        return SensitivityTable(
            granularity,
            tuple(ratios),
            baseline,
            tuple(names),
            tuple(sizes),
            tuple(rows),
            macs=tuple(macs),
        )
    output = output_layer(module, layers, example)
    skipped.append(SkippedLayer(output.name, "output layer: its outputs are the classes"))
    for layer in layers:
        if layer is output:
            continue
        row = []
        problem = None
        share = 0
        for ratio in ratios:
            clone = copy.deepcopy(module)
            clone_layers, _ = weight_layers(clone)
            gradients = None
            if importance == "taylor":
                gradients = functools.partial(
                    taylor_gradients, clone, dataset, batch_size, generator
                )
            left = prune_channels(
                clone,
                clone_layers,
                example,
                ratio=0.0,
                ratios={layer.name: ratio},
                scope="layer",
                importance=importance,
                spec=spec,
                gradients=gradients,
            )
            own = [s for s in left if s.name == layer.name]
            if own:
                row.append(float("nan"))
                problem = problem or own[0]
            else:
                try:
                    accuracy = evaluate(clone, x_val, y_val)
                except RuntimeError as exc:  # Torch-Pruning lost a dependency it cannot see
                    detail = " ".join(str(exc).split())[:120]
                    row.append(float("nan"))
                    why = f"pruning it leaves a model that no longer runs ({detail})"
                    problem = problem or SkippedLayer(layer.name, why)
                    continue
                row.append(accuracy)
                removed = baseline_macs - sum(m for m, _ in count_macs(clone, example).values())
                if ratio > 0:  # the largest ratio tried wins: the least channel rounding
                    share = int(round(removed / ratio))
        if all(math.isnan(v) for v in row) and problem is not None:
            skipped.append(problem)
            continue
        names.append(layer.name)
        sizes.append(int(layer.weight.shape[0]))
        macs.append(share)
        rows.append(tuple(row))
    return SensitivityTable(
        granularity,
        tuple(ratios),
        baseline,
        tuple(names),
        tuple(sizes),
        tuple(rows),
        tuple(skipped),
        tuple(macs),
    )


def sensitivity(
    model: str | ModelHandle,
    data: str | Dataset,
    *,
    granularity: str = "channel",
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    importance: str = "l1",
) -> SensitivityTable:
    """Validation accuracy with each layer pruned alone at each ratio, without fine-tuning.

    Args:
        model: a PyTorch model spec or handle; it is not changed.
        data: the validation split is scored.
        granularity: ``channel`` (output channels removed with Torch-Pruning) or
            ``unstructured`` (the layer's smallest weights zeroed).
        ratios: the fractions tried, each in [0, 1).
        importance: channel ranking (``l1``, ``l2`` or ``taylor``).

    Returns:
        The table; layers that cannot be pruned at all are in its ``skipped``.

    Raises:
        InputError: an ONNX-only model, a granularity other than the two, a ratio outside
            [0, 1).

    Example:
        >>> table = sensitivity("zoo:cnn-s", "digits", ratios=(0.25, 0.5))
        >>> len(table.layers), len(table.accuracy[0])
        (3, 2)
    """
    if granularity not in ("channel", "unstructured"):
        raise InputError(
            f"sensitivity: granularity must be channel or unstructured, got {granularity!r}."
        )
    if not ratios or any(not 0 <= r < 1 for r in ratios):
        raise InputError(f"sensitivity: every ratio must be in [0, 1), got {list(ratios)}.")
    if importance not in IMPORTANCES:
        raise InputError(
            f"sensitivity: importance must be one of {', '.join(IMPORTANCES)}, got {importance!r}."
        )
    dataset, handle, module, example = prepare_module(model, data, "sensitivity analysis")
    generator = seed_everything(0)
    layers, _ = layers_or_refuse(module, handle.spec)
    return measure_sensitivity(
        module,
        dataset,
        layers=layers,
        example=example,
        granularity=granularity,
        ratios=tuple(sorted(ratios)),
        importance=importance,
        generator=generator,
        batch_size=BATCH_SIZE,
        spec=handle.spec,
    )


def choose_ratios(table: SensitivityTable, *, ratio: float, of: str = "units") -> dict[str, float]:
    """Per-layer ratios from a sensitivity table that reach ``ratio`` overall at the least cost.

    For an accuracy-drop threshold t, every layer takes the largest ratio of the table up to
    which its drop stays at or under t. The smallest t whose size-weighted mean ratio (sizes
    are channels for channel pruning, weights for unstructured; with ``of="macs"`` the table's
    ``macs`` instead, so the mean estimates the fraction of MACs removed) reaches ``ratio``
    is chosen,
    and all layer ratios are scaled by one factor so the mean is exactly ``ratio``. Insensitive
    layers therefore lose more than sensitive ones; no layer loses more than
    ``MAX_LAYER_RATIO``. When even the largest tried ratios fall short, they are scaled up
    towards that cap.

    Example:
        >>> table = SensitivityTable("channel", (0.25, 0.5), 0.9, ("a", "b"), (10, 10),
        ...                          ((0.9, 0.9), (0.8, 0.5)))
        >>> choose_ratios(table, ratio=0.25)
        {'a': 0.5, 'b': 0.0}
    """
    if not table.layers:
        return {}
    if of not in ("units", "macs") or (of == "macs" and len(table.macs) != len(table.layers)):
        raise ValueError(f"cannot weight by {of!r}: the table has no such sizes")
    sizes = table.sizes if of == "units" else table.macs
    total = max(1, sum(sizes))

    def at(threshold: float) -> list[float]:
        chosen = []
        for name in table.layers:
            best = 0.0
            for r, drop in zip(table.ratios, table.drops(name), strict=True):
                if math.isnan(drop) or drop > threshold:
                    break
                best = r
            chosen.append(best)
        return chosen

    def mean(values: list[float]) -> float:
        return sum(v * s for v, s in zip(values, sizes, strict=True)) / total

    finite = [d for name in table.layers for d in table.drops(name) if not math.isnan(d)]
    chosen = at(math.inf)
    for threshold in sorted(set([0.0, *finite])):
        candidate = at(threshold)
        if mean(candidate) >= ratio:
            chosen = candidate
            break
    reached = mean(chosen)
    scale = ratio / reached if reached > 0 else 0.0
    return {
        name: min(MAX_LAYER_RATIO, value * scale)
        for name, value in zip(table.layers, chosen, strict=True)
    }
