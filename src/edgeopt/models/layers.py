"""The Conv and Linear layers of a PyTorch module, and loading a channel-pruned state dict.

Pruning prunes these layers (:mod:`edgeopt.stages.prune`); loading a model's weights
(:func:`edgeopt.models.load_model` with ``weights=``) shrinks a fresh module to the channel
counts a channel-pruned state dict stores. Both live here, below the stages, so that loading a
model never imports a compression stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "NORMALIZATION_TYPES",
    "PRUNABLE_TYPES",
    "WeightLayer",
    "match_channels",
    "weight_layers",
]

#: Layer types whose weights are pruned. Normalization layers and biases never are.
PRUNABLE_TYPES = ("Conv1d", "Conv2d", "Conv3d", "Linear")
NORMALIZATION_TYPES = (
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
)


@dataclass(frozen=True)
class WeightLayer:
    """A Conv or Linear layer of a module, by its qualified name."""

    name: str
    module: Any  # torch.nn.Conv*d | torch.nn.Linear

    @property
    def layer_type(self) -> str:
        return type(self.module).__name__

    @property
    def weight(self) -> Any:
        return self.module.weight

    @property
    def weights(self) -> int:
        return int(self.module.weight.numel())


def weight_layers(module: Any) -> tuple[list[WeightLayer], list[tuple[str, str]]]:
    """The module's Conv/Linear layers in definition order, and the layers it cannot prune.

    Returns:
        ``(layers, unsupported)``: ``unsupported`` lists ``(name, reason)`` for every other module
        that holds weights of its own (an embedding, a recurrent layer, a custom parameter);
        normalization layers are left out of both lists (they are never pruned, by design).
    """
    layers: list[WeightLayer] = []
    unsupported: list[tuple[str, str]] = []
    for name, child in module.named_modules():
        type_name = type(child).__name__
        own = [p for p in child.parameters(recurse=False)]
        if type_name in PRUNABLE_TYPES and getattr(child, "weight", None) is not None:
            layers.append(WeightLayer(name, child))
        elif own and type_name not in NORMALIZATION_TYPES:
            unsupported.append(
                (
                    name or "(root)",
                    f"{type_name} is not a Conv or Linear layer; its weights are kept",
                )
            )
    return layers, unsupported


def match_channels(module: Any, state: Any, example: Any) -> bool:
    """Remove output channels in place so every Conv/Linear has the count ``state`` stores.

    A channel-pruned model's state dict holds fewer output channels than its architecture
    builds. Which channels go does not matter (the stored weights are loaded next), so the last
    ones do, through Torch-Pruning's dependency graph, which shrinks the coupled layers (inputs
    of the next layers, BatchNorm, residual adds, depthwise groups) with them.

    Returns:
        Whether any channel was removed.
    """
    import torch_pruning as tp
    from torch import nn

    wanted = []
    for layer in weight_layers(module)[0]:
        stored = state.get(f"{layer.name}.weight")
        if getattr(stored, "ndim", None) == layer.weight.ndim:
            if int(stored.shape[0]) < int(layer.weight.shape[0]):
                wanted.append((layer, int(stored.shape[0])))
    if not wanted:
        return False
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    for layer, kept in wanted:
        channels = int(layer.weight.shape[0])
        if channels > kept:  # not already shrunk together with a coupled layer
            removal = (
                tp.prune_linear_out_channels
                if isinstance(layer.module, nn.Linear)
                else tp.prune_conv_out_channels
            )
            graph.get_pruning_group(layer.module, removal, idxs=list(range(kept, channels))).prune()
    return True
