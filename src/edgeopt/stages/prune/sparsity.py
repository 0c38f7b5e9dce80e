"""What every pruning granularity shares: the layers, their masks, the schedule, the counts.

Magnitude masks (unstructured), 2:4 masks, Zhu & Gupta's gradual schedule and MAC counts, on a
PyTorch module's Conv and Linear weights; nothing here changes a module unless its name says so
(``apply_masks_``). Masks are boolean tensors shaped like the weights (True = kept). Also the
loading every pruning entry point starts with: a private copy of the module, checked against the
data. The layers themselves (:class:`WeightLayer`, :func:`weight_layers`) are
:mod:`edgeopt.models.layers`'s, which loading a channel-pruned state dict uses too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.models.layers import WeightLayer
from edgeopt.models.layers import weight_layers
from edgeopt.training import check_classes


@dataclass(frozen=True)
class SkippedLayer:
    """A layer left as it was, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def pruned_count(weights: int, sparsity: float) -> int:
    """How many of ``weights`` a sparsity prunes: rounded half up, at most all but one."""
    if weights <= 1:
        return 0
    return min(weights - 1, int(math.floor(sparsity * weights + 0.5)))


def _smallest(magnitudes: Any, count: int) -> Any:
    """Boolean mask (True = kept) that drops exactly the ``count`` smallest magnitudes.

    A stable sort breaks ties by position, so the count is exact even with equal magnitudes
    (zeros from an earlier pruning step sort first and stay pruned).
    """
    import torch

    flat = magnitudes.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if count > 0:
        order = torch.sort(flat, stable=True).indices
        keep[order[:count]] = False
    return keep.reshape(magnitudes.shape)


def magnitude_masks(
    layers: list[WeightLayer],
    sparsity: float | Mapping[str, float],
    *,
    scope: str,
) -> dict[str, Any]:
    """Masks that prune the smallest weights by magnitude (Han et al. 2015, arXiv 1506.02626).

    Args:
        layers: the layers to prune.
        sparsity: one fraction for all layers, or one per layer name (per-layer scope only).
        scope: ``global`` ranks every weight of every layer against one threshold, so the
            layers with larger weights (small fan-in: the first convolution, the classifier)
            keep more of theirs; ``layer`` prunes each layer to the fraction.

    Returns:
        A mask per layer name; exactly ``pruned_count(n, sparsity)`` weights are dropped over
        ``n`` (all layers together in global scope, per layer otherwise).
    """
    import torch

    if scope == "global":
        if not isinstance(sparsity, float | int):
            raise ValueError("global scope takes one sparsity")
        magnitudes = torch.cat([layer.weight.detach().abs().reshape(-1) for layer in layers])
        keep = _smallest(magnitudes, pruned_count(magnitudes.numel(), float(sparsity)))
        masks = {}
        begin = 0
        for layer in layers:
            masks[layer.name] = keep[begin : begin + layer.weights].reshape(layer.weight.shape)
            begin += layer.weights
        return masks
    masks = {}
    for layer in layers:
        target = sparsity if isinstance(sparsity, float | int) else sparsity.get(layer.name, 0.0)
        magnitudes = layer.weight.detach().abs()
        masks[layer.name] = _smallest(magnitudes, pruned_count(layer.weights, float(target)))
    return masks


def two_four_reason(layer: WeightLayer) -> str | None:
    """Why a layer cannot take 2:4 sparsity (None when it can)."""
    weight = layer.weight
    inputs = weight.shape[1]
    if inputs % 4 != 0:
        return f"{inputs} input channels per group is not a multiple of 4, which 2:4 needs"
    return None


def two_four_mask(weight: Any) -> Any:
    """Keep the 2 largest magnitudes of every 4 consecutive inputs (Mishra et al. 2021).

    "Accelerating Sparse Deep Neural Networks", arXiv 2104.08378: the groups run along the input
    dimension of the matrix product. For a convolution that is the input channel at each kernel
    position, as in NVIDIA's ASP (weights viewed as out x kh x kw x in), so the pattern is the
    one sparse tensor cores read.
    """
    import torch

    magnitudes = weight.detach().abs()
    if magnitudes.ndim > 2:  # (out, in, *kernel) -> (out, *kernel, in)
        magnitudes = magnitudes.movedim(1, -1)
    shape = magnitudes.shape
    groups = magnitudes.reshape(-1, 4)
    top = torch.topk(groups, 2, dim=1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, top, True)
    keep = keep.reshape(shape)
    if keep.ndim > 2:
        keep = keep.movedim(-1, 1)
    return keep.contiguous()


def apply_masks_(layers: list[WeightLayer], masks: Mapping[str, Any]) -> None:
    """Zero the pruned weights in place (the weights stay plain tensors: nothing to undo)."""
    import torch

    with torch.no_grad():
        for layer in layers:
            mask = masks.get(layer.name)
            if mask is not None:
                layer.weight.masked_fill_(~mask, 0.0)  # +0.0, where multiplying gives -0.0


def zero_fraction(layers: list[WeightLayer]) -> float:
    """Fraction of the layers' weights that are exactly zero."""
    total = sum(layer.weights for layer in layers)
    zeros = sum(int((layer.weight.detach() == 0).sum()) for layer in layers)
    return zeros / max(1, total)


def gradual_schedule(sparsity: float, events: int, *, initial: float = 0.0) -> tuple[float, ...]:
    """Sparsity after each pruning event of Zhu & Gupta's polynomial schedule.

    "To prune, or not to prune", arXiv 1710.01878, eq. (1): ``s_t = s_f + (s_i - s_f) *
    (1 - t / T)^3`` for events ``t = 1 .. T``: fast pruning while many redundant weights remain,
    slower as fewer are left, reaching ``s_f`` at the last event.

    Example:
        >>> [round(s, 4) for s in gradual_schedule(0.9, 3)]
        [0.6333, 0.8667, 0.9]
    """
    return tuple(
        sparsity + (initial - sparsity) * (1.0 - step / events) ** 3
        for step in range(1, events + 1)
    )


def count_macs(module: Any, example: Any) -> dict[str, tuple[int, int]]:
    """Dense and nonzero-weight multiply-accumulates of every Conv/Linear layer, batch 1.

    Dense MACs are what ONNX Runtime executes; nonzero MACs are what a sparse kernel would
    (each weight's MACs counted once per output position it is applied at).
    """
    import torch

    layers, _ = weight_layers(module)
    found: dict[str, tuple[int, int]] = {}
    handles = []

    def hook(name: str, layer: Any) -> Any:
        def record(_: Any, inputs: Any, output: Any) -> None:
            weight = layer.weight.detach()
            if type(layer).__name__ == "Linear":
                positions = output[0].numel() // weight.shape[0]
            else:
                positions = output[0][0].numel()  # spatial size of one output channel
            dense = weight.numel() * positions
            nonzero = int((weight != 0).sum()) * positions
            found[name] = (dense, nonzero)

        return record

    for layer in layers:
        handles.append(layer.module.register_forward_hook(hook(layer.name, layer.module)))
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            module(example[:1])
        module.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return found


def prepare_module(
    model: str | ModelHandle, data: str | Dataset, step: str
) -> tuple[Dataset, ModelHandle, Any, Any]:
    """Dataset, handle, a private copy of the module (eval mode) and one real input sample.

    Raises:
        InputError: an ONNX-only model (``step`` needs PyTorch), or one that does not fit the
            data's input shape or class count.
    """
    import torch

    dataset = load_data(data)
    handle = load_model(model, data=dataset)
    source = handle.require_torch(step)
    if handle.input_shape is not None and tuple(handle.input_shape) != dataset.input_shape:
        raise InputError(
            f"{handle.spec}: the model takes input {handle.input_shape} but {dataset.spec} "
            f"gives {dataset.input_shape}."
        )
    module = copy.deepcopy(source).eval()
    try:
        check_classes(handle, module, dataset)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:160]
        raise InputError(f"{handle.spec}: cannot run on {dataset.spec} input ({detail}).") from None
    example = torch.from_numpy(dataset.arrays("val")[0][:1])
    return dataset, handle, module, example


def layers_or_refuse(module: Any, spec: str) -> tuple[list[WeightLayer], list[SkippedLayer]]:
    """The Conv/Linear layers and the unsupported ones (as skipped); InputError when none."""
    import torch

    layers, unsupported = weight_layers(module)
    if not layers and isinstance(module, torch.fx.GraphModule):
        raise InputError(
            f"{spec}: a saved torch.export program holds an operator graph without Conv or "
            "Linear modules, so it cannot be pruned; give zoo:NAME or module:factory with "
            "--weights."
        )
    if not layers:
        raise InputError(f"{spec}: the model has no Conv or Linear layer to prune.")
    return layers, [SkippedLayer(name, reason) for name, reason in unsupported]
