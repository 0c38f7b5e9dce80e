"""Channel (filter and neuron) pruning with Torch-Pruning's dependency graph.

Torch-Pruning (Fang et al. 2023, "DepGraph", arXiv 2301.12900) groups every layer whose
channels are coupled to a pruned output channel: the next layer's inputs, BatchNorm, depthwise
convolutions, residual adds and concatenations. A whole group is removed at once, so the model
stays consistent and the exported ONNX has smaller tensors. What Torch-Pruning cannot do safely
is reported, not attempted: a group that would lose every channel, or one whose channels index
a bare ``nn.Parameter`` (Torch-Pruning would guess which dimension to cut).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.models.layers import WeightLayer
from edgeopt.models.layers import weight_layers
from edgeopt.stages.prune.sparsity import SkippedLayer
from edgeopt.stages.prune.sparsity import count_macs

IMPORTANCES = ("l1", "l2", "taylor")
#: Batches of training data whose gradients Taylor importance sums.
TAYLOR_BATCHES = 8
#: Steps of the scan, then halvings, of the factor that brings channel pruning to a MAC ratio.
MAC_SCAN_STEPS = 10
MAC_BISECTION_STEPS = 12


def output_layer(module: Any, layers: list[WeightLayer], example: Any) -> WeightLayer:
    """The last Conv/Linear layer to run: the classifier, whose outputs are the classes."""
    import torch

    order: list[str] = []
    handles = [
        layer.module.register_forward_hook(lambda *_, name=layer.name: order.append(name))
        for layer in layers
    ]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for handle in handles:
            handle.remove()
    return next(layer for layer in layers if layer.name == order[-1])


def make_importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def taylor_gradients(module: Any, dataset: Dataset, batch_size: int, generator: Any) -> None:
    """Sum loss gradients over a few training batches (eval mode: BatchNorm stats untouched)."""
    import torch

    x_train, y_train = (torch.from_numpy(a) for a in dataset.arrays("train"))
    order = torch.randperm(len(x_train), generator=generator)[: TAYLOR_BATCHES * batch_size]
    module.eval()
    module.zero_grad(set_to_none=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    for begin in range(0, len(order), batch_size):
        index = order[begin : begin + batch_size]
        loss_fn(module(x_train[index]), y_train[index]).backward()


def rounded_ratio(channels: int, ratio: float, multiple: int) -> float:
    """The ratio that keeps the multiple of ``multiple`` channels nearest to what ``ratio`` keeps.

    At least one multiple is kept; a layer with fewer channels than ``multiple`` keeps its ratio.
    Torch-Pruning keeps ``int(channels * (1 - ratio))`` channels, so the returned ratio aims
    half a channel above the count to survive floating-point rounding.

    Example:
        >>> kept = [int(64 * (1 - rounded_ratio(64, r, 16))) for r in (0.1, 0.3, 0.5, 0.9)]
        >>> kept
        [64, 48, 32, 16]
    """
    if multiple <= 1 or channels < multiple or ratio <= 0:
        return ratio
    kept = max(multiple, int(round(channels * (1 - ratio) / multiple)) * multiple)
    if kept >= channels:
        return 0.0
    return 1.0 - (kept + 0.5) / channels


def group_problem(group: Any, dependency_graph: Any, param_names: dict[int, str]) -> str | None:
    """Why a Torch-Pruning group must not be pruned (None when it can be)."""
    import torch_pruning as tp

    for dep, idxs in group:
        target = dep.target
        if target.type == tp.ops.OPTYPE.PARAMETER:
            name = param_names.get(id(target.module), "a bare parameter")
            return (
                f"its channels also index {name}, a parameter outside any Conv/Linear/norm "
                "layer that Torch-Pruning cannot prune safely"
            )
        if dependency_graph.is_out_channel_pruning_fn(dep.handler):
            channels = dependency_graph.get_out_channels(target.module)
            if channels is not None and len(idxs) >= channels:
                return f"the global threshold would remove all {channels} of its output channels"
    return None


def broken_model(spec: str, exc: Exception) -> InputError:
    """The sentence for a pruned model that no longer runs: Torch-Pruning follows the module
    graph it traces, and a reshape of a flattened feature map, a grouped convolution whose
    groups must shrink together, or a recurrent layer's hidden size is a dependency it can miss."""
    detail = " ".join(str(exc).split())[:160]
    return InputError(
        f"{spec}: channel pruning left a model that no longer runs ({detail}): Torch-Pruning did "
        "not follow a reshape, a grouped convolution or a recurrent layer of it; prune with "
        "--kind unstructured instead."
    )


def prune_channels(
    module: Any,
    layers: list[WeightLayer],
    example: Any,
    *,
    ratio: float,
    ratios: dict[str, float] | None,
    scope: str,
    importance: str,
    spec: str,
    gradients: Any = None,
    multiple: int = 1,
) -> list[SkippedLayer]:
    """Remove output channels in place with Torch-Pruning; return the layers left alone.

    ``ratios`` (per layer name) replaces ``ratio`` and ``scope``; ``gradients()`` is called to
    fill ``.grad`` before Taylor importance is computed; ``multiple`` rounds every per-layer
    count kept to a multiple (:func:`rounded_ratio`; per-layer ratios or scope ``layer`` only).

    Raises:
        InputError: Torch-Pruning cannot trace or prune the model (``spec`` names it); the
            module is then half-pruned and must be thrown away.
    """
    if multiple > 1:
        if ratios is None and scope == "global":
            raise ValueError("rounding channel counts needs per-layer ratios")
        ratios = {
            layer.name: rounded_ratio(
                int(layer.weight.shape[0]),
                ratio if ratios is None else ratios.get(layer.name, 0.0),
                multiple,
            )
            for layer in layers
        }
    try:
        return _prune_channels(module, layers, example, ratio, ratios, scope, importance, gradients)
    except InputError:
        raise
    except Exception as exc:  # whatever Torch-Pruning raises on a graph it cannot follow
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise InputError(
            f"{spec}: Torch-Pruning cannot remove channels from this model ({detail}); prune it "
            "with granularity unstructured or 2:4 instead."
        ) from None


def _prune_channels(
    module: Any,
    layers: list[WeightLayer],
    example: Any,
    ratio: float,
    ratios: dict[str, float] | None,
    scope: str,
    importance: str,
    gradients: Any,
) -> list[SkippedLayer]:
    import torch_pruning as tp

    output = output_layer(module, layers, example)
    skipped = [SkippedLayer(output.name, "output layer: its outputs are the classes")]
    ignored = [output.module]
    for layer in layers:
        if layer is output:
            continue
        target = ratios.get(layer.name, 0.0) if ratios is not None else ratio
        channels = int(layer.weight.shape[0])
        if target > 0 and int(channels * (1 - target)) < 1:
            skipped.append(
                SkippedLayer(
                    layer.name,
                    f"{channels} output channel(s) cannot lose {target:.0%} and keep one",
                )
            )
            ignored.append(layer.module)
    by_name = {layer.name: layer.module for layer in layers}
    names = {id(layer.module): layer.name for layer in layers}
    param_names = {id(param): name for name, param in module.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about what group_problem reports
        pruner = tp.pruner.BasePruner(
            module,
            example,
            importance=make_importance(importance),
            global_pruning=ratios is None and scope == "global",
            pruning_ratio=ratio if ratios is None else 0.0,
            pruning_ratio_dict=(
                {by_name[name]: value for name, value in ratios.items() if name in by_name}
                if ratios is not None
                else None
            ),
            ignored_layers=ignored,
        )
        if gradients is not None:
            gradients()
        for group in pruner.step(interactive=True):
            problem = group_problem(group, pruner.DG, param_names)
            if problem is not None:
                root = group[0].dep.target.module
                skipped.append(SkippedLayer(names.get(id(root), str(root)), problem))
                continue
            group.prune()
    module.zero_grad(set_to_none=True)
    return skipped


def reach_macs(
    module: Any,
    example: Any,
    *,
    target: float,
    ratios: dict[str, float],
    scope: str,
    importance: str,
    multiple: int,
    cap: float,
    spec: str,
    gradients_for: Callable[[Any], Any],
) -> tuple[float, dict[str, float], float, float]:
    """The channel ratio, or per-layer ratios, whose pruning removes ``target`` of the MACs.

    MACs are not linear in channel ratios: a convolution between two pruned layers keeps
    (1 - a)(1 - b) of its MACs, a global threshold picks each layer's share itself, and channel
    counts are whole (or multiples). So one factor scales the uniform ratio, or the per-layer
    ``ratios`` (each capped at ``cap``), and a scan then bisection on trial prunes of copies
    finds the smallest factor that removes at least ``target`` of the dense MACs; the module is
    not changed. ``gradients_for(copy)`` gives the ``gradients`` of :func:`prune_channels`.

    Returns:
        ``(ratio, per_layer, factor, reached)``: the uniform ratio (0 when per-layer), the
        per-layer ratios (empty when uniform), the factor, and the fraction of MACs removed
        (below ``target`` only when even the cap falls short).
    """
    before = sum(dense for dense, _ in count_macs(module, example).values())
    base = {name: value for name, value in ratios.items() if value > 0}

    def scaled(factor: float) -> tuple[float, dict[str, float]]:
        if not base:
            return min(cap, factor), {}
        return 0.0, {name: min(cap, value * factor) for name, value in base.items()}

    def removed(factor: float) -> float:
        clone = copy.deepcopy(module)
        ratio, per_layer = scaled(factor)
        prune_channels(
            clone,
            weight_layers(clone)[0],
            example,
            ratio=ratio,
            ratios=per_layer or None,
            scope=scope,
            importance=importance,
            spec=spec,
            gradients=gradients_for(clone),
            multiple=multiple,
        )
        try:
            after = sum(dense for dense, _ in count_macs(clone, example).values())
        except RuntimeError as exc:
            raise broken_model(spec, exc) from None
        return 1.0 - after / before

    # A coarse scan first: near the cap a layer that cannot keep one channel is skipped whole,
    # so the MACs removed are not monotonic in the factor there; bisection only below.
    top = cap / min(base.values()) if base else cap
    low, high, reached = 0.0, top, -1.0
    for step in range(1, MAC_SCAN_STEPS + 1):
        factor = top * step / MAC_SCAN_STEPS
        share = removed(factor)
        if share > reached:
            high, reached = factor, share
        if share >= target:
            low = top * (step - 1) / MAC_SCAN_STEPS
            break
    if reached >= target:
        for _ in range(MAC_BISECTION_STEPS):
            middle = (low + high) / 2
            share = removed(middle)
            if share >= target:
                high, reached = middle, share
            else:
                low = middle
    ratio, per_layer = scaled(high)
    return ratio, per_layer, high, reached
