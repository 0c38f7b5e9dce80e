"""Channel (filter and neuron) pruning with Torch-Pruning's dependency graph.

Torch-Pruning (Fang et al. 2023, "DepGraph", arXiv 2301.12900) groups every layer whose
channels are coupled to a pruned output channel: the next layer's inputs, BatchNorm, depthwise
convolutions, residual adds and concatenations. A whole group is removed at once, so the model
stays consistent and the exported ONNX has smaller tensors. What Torch-Pruning cannot do safely
is reported, not attempted: a group that would lose every channel, or one whose channels index
a bare ``nn.Parameter`` (Torch-Pruning would guess which dimension to cut).
"""

from __future__ import annotations

import warnings
from typing import Any

from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.stages.sparsity import SkippedLayer
from edgeopt.stages.sparsity import WeightLayer

IMPORTANCES = ("l1", "l2", "taylor")
#: Batches of training data whose gradients Taylor importance sums.
TAYLOR_BATCHES = 8


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
) -> list[SkippedLayer]:
    """Remove output channels in place with Torch-Pruning; return the layers left alone.

    ``ratios`` (per layer name) replaces ``ratio`` and ``scope``; ``gradients()`` is called to
    fill ``.grad`` before Taylor importance is computed.

    Raises:
        InputError: Torch-Pruning cannot trace or prune the model (``spec`` names it); the
            module is then half-pruned and must be thrown away.
    """
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
