"""What every zoo builder shares: knob checks, the input-size floor, channel rounding."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeopt.errors import InputError
from edgeopt.registry import get_model
from edgeopt.registry import register_model


@dataclass(frozen=True)
class ZooInfo:
    """Defaults and limits of one zoo architecture.

    ``min_size`` is the smallest spatial size (every dimension after the channels) the strides
    allow: the size at which every layer that downsamples still receives at least 2 pixels, and
    at least its kernel (padding included), in each dimension, so no stride acts on padding
    alone. ``has_classes`` is False for a model whose output is not class scores (the
    anomaly-detection autoencoder reconstructs its input); ``classes`` means nothing for it.
    """

    name: str
    default_input: tuple[int, ...]
    min_size: int
    summary: str
    has_classes: bool = True


_INFO: dict[str, ZooInfo] = {}


def zoo_model(
    name: str,
    *,
    default_input: tuple[int, ...],
    min_size: int,
    summary: str,
    has_classes: bool = True,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder together with its default input shape and smallest spatial size."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _INFO[name] = ZooInfo(name, default_input, min_size, summary, has_classes)
        return register_model(name)(fn)

    return decorator


def zoo_info(name: str) -> ZooInfo:
    """Defaults and limits of a registered architecture (InputError when unknown)."""
    get_model(name)
    return _INFO[name]


def scaled(channels: int, width: float, divisor: int = 1) -> int:
    """Channels after the width multiplier, at least 1, rounded to ``divisor``.

    Rounding as in MobileNetV2's ``_make_divisible`` (Sandler et al. 2018): never drop more than
    10% below the scaled value.
    """
    value = channels * width
    if divisor <= 1:
        return max(1, int(round(value)))
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn(
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | None = None,
    groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Convolution without bias (the BatchNorm's shift replaces it), BatchNorm, activation.

    ``padding`` defaults to half the kernel, which keeps the size at stride 1 and gives
    ``ceil(size / stride)`` at stride 2 for odd kernels, like TensorFlow's ``same``. Export folds
    the BatchNorm into the convolution, so the ONNX file holds one convolution with a bias
    (unless that bias is all zero, as a fresh BatchNorm's is: the ONNX optimizer drops it).

    Example:
        >>> block = conv_bn(16, 16, 3, stride=2, groups=16)  # depthwise, 3x3, stride 2
        >>> [type(layer).__name__ for layer in block]
        ['Conv2d', 'BatchNorm2d', 'ReLU']
    """
    kernel_hw = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad = (kernel_hw[0] // 2, kernel_hw[1] // 2) if padding is None else padding
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_hw, stride=stride, padding=pad, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


def build_zoo_model(
    name: str,
    *,
    width: float = 1.0,
    classes: int = 10,
    input_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build a zoo architecture, checking the knobs before any layer is made.

    The initial weights come from ``seed`` alone (not from the global random state), so the
    same spec always starts from the same weights and a recipe replays exactly.

    ``classes`` is ignored by a model without classes (``ZooInfo.has_classes`` False).

    Raises:
        InputError: unknown name, width at or below 0, fewer than 2 classes, or an input smaller
            than the architecture's strides allow (the message gives the minimum).
    """
    builder = get_model(name)
    info = _INFO[name]
    if not width > 0:
        raise InputError(f"zoo:{name}: width must be above 0, got {width}.")
    if info.has_classes and classes < 2:
        raise InputError(f"zoo:{name}: classes must be at least 2, got {classes}.")
    shape = tuple(input_shape) if input_shape is not None else info.default_input
    if len(shape) != len(info.default_input):
        want = "x".join(str(d) for d in info.default_input)
        got = "x".join(str(d) for d in shape)
        raise InputError(
            f"zoo:{name}: input must have {len(info.default_input)} dims like {want}, got {got} "
            "(data arrays keep their shape: save images as N x C x H x W)."
        )
    spatial = shape[1:]
    if any(dim < info.min_size for dim in spatial):
        got = "x".join(str(d) for d in shape)
        raise InputError(
            f"zoo:{name}: input {got} is too small for its strides; "
            f"the minimum is {info.min_size} per spatial dimension."
        )
    params: dict[str, Any] = {"width": width, "classes": classes, "input_shape": shape}
    accepted = inspect.signature(builder).parameters
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module: nn.Module = builder(**{k: v for k, v in params.items() if k in accepted})
    return module
