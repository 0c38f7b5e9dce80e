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
    """Defaults and limits of one zoo architecture."""

    name: str
    default_input: tuple[int, ...]
    min_size: int
    summary: str


_INFO: dict[str, ZooInfo] = {}


def zoo_model(
    name: str, *, default_input: tuple[int, ...], min_size: int, summary: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder together with its default input shape and smallest spatial size."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _INFO[name] = ZooInfo(name, default_input, min_size, summary)
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

    Raises:
        InputError: unknown name, width at or below 0, fewer than 2 classes, or an input smaller
            than the architecture's strides allow (the message gives the minimum).
    """
    builder = get_model(name)
    info = _INFO[name]
    if not width > 0:
        raise InputError(f"zoo:{name}: width must be above 0, got {width}.")
    if classes < 2:
        raise InputError(f"zoo:{name}: classes must be at least 2, got {classes}.")
    shape = tuple(input_shape) if input_shape is not None else info.default_input
    if len(shape) != len(info.default_input):
        want = "x".join(str(d) for d in info.default_input)
        raise InputError(f"zoo:{name}: input must have {len(info.default_input)} dims like {want}.")
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
        return builder(**{k: v for k, v in params.items() if k in accepted})
