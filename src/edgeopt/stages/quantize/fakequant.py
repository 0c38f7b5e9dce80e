"""Fake quantization for quantization-aware training, with ONNX Runtime's QDQ arithmetic.

Every quantizer here computes what the QDQ file will compute, so that the PyTorch model trained
with them and the exported file agree:

- weights: signed, symmetric, zero point 0, per output channel (or per tensor), with the scale
  of :func:`edgeopt.stages.quantize.qdq.weight_scale` (``2 * max|w| / 254`` for int8, ``/ 15``
  with the range -8..7 for int4) computed the same way (float64, stored as float32), divided
  in float32 and rounded half to even, as ONNX Runtime's ``quantize_nparray`` does;
- activations: uint8, asymmetric, with ONNX Runtime's ``compute_scale_zp`` (the range widened to
  hold 0, ``(hi - lo) / 255`` in float64 stored as float32, the zero point rounded from the
  float64 scale) and ``QuantizeLinear``'s round-half-to-even and saturation.

Rounding has no gradient; the straight-through estimator passes the gradient through the
rounding unchanged and stops it where the value was clipped (Bengio et al. 2013, "Estimating or
Propagating Gradients Through Stochastic Neurons", arXiv 1308.3432). With learned ranges the
scales are trained with LSQ's gradient and its gradient scale ``1 / sqrt(n * Qp)`` (Esser et al.
2020, "Learned Step Size Quantization", ICLR, https://arxiv.org/abs/1902.08153); the activation
zero point stays where calibration put it (a ReLU output keeps 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional

__all__ = [
    "ACTIVATION_LEVELS",
    "ActivationQuantizer",
    "QuantLayer",
    "activation_qparams",
    "channel_axis",
    "fake_quantize",
    "weight_range",
    "weight_scale",
]

ACTIVATION_LEVELS = 255  # uint8: 0..255
RANGE_MODES = ("observed", "learned")
#: EMA weight of a new batch in the observed (moving-average min/max) activation ranges, as in
#: PyTorch's ``MovingAverageMinMaxObserver`` and Jacob et al. 2018, section 3.1.
OBSERVER_MOMENTUM = 0.01
_TINY = float(torch.finfo(torch.float32).tiny)


def weight_range(bits: int) -> tuple[int, int]:
    """Integer range of a signed symmetric weight: -127..127 (int8) or -8..7 (int4)."""
    return (-127, 127) if bits == 8 else (-8, 7)


def weight_scale(
    weight: torch.Tensor, *, bits: int, per_channel: bool, axis: int = 0
) -> torch.Tensor:
    """The max-abs scale ONNX Runtime writes (:func:`edgeopt.stages.quantize.qdq.weight_scale`),
    per output channel along ``axis`` (1 for a transposed convolution's ``(C_in, C_out, k)``)."""
    span = 254.0 if bits == 8 else 15.0
    w = weight.detach()
    if per_channel:
        absmax = w.abs().movedim(axis, 0).reshape(w.shape[axis], -1).amax(dim=1)
    else:
        absmax = w.abs().amax()
    scale = absmax.double() * 2.0 / span
    return torch.where(scale < _TINY, torch.ones_like(scale), scale).float()


def activation_qparams(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point ONNX Runtime derives from a uint8 activation range ``(lo, hi)``."""
    low = torch.clamp(lo.detach().double(), max=0.0)
    high = torch.clamp(hi.detach().double(), min=0.0)
    scale = (high - low) / ACTIVATION_LEVELS
    if float(scale) < _TINY:
        return torch.ones((), dtype=torch.float32), torch.zeros((), dtype=torch.float32)
    zero_point = torch.clamp(torch.round(-low / scale), 0, ACTIVATION_LEVELS)
    return scale.float(), zero_point.float()


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward, identity backward (straight-through)."""
    return x + (torch.round(x) - x).detach()


def _scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` forward; its gradient multiplied by ``factor`` backward (LSQ's gradient scale)."""
    return (x - x * factor).detach() + x * factor


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int
) -> torch.Tensor:
    """``(clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale``, straight-through."""
    q = torch.clamp(_round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


class ActivationQuantizer(nn.Module):
    """Fake-quantizes one activation tensor to uint8, as its QuantizeLinear will.

    ``observed``: the range is an exponential moving average of each training batch's min and
    max (Jacob et al. 2018, section 3.1), started at the calibrated range. ``learned``: the step
    size is a parameter trained with LSQ's gradient, started at the calibrated range's scale; the
    zero point stays the calibrated one. :meth:`freeze` turns either into a fixed range, from
    which scale and zero point are derived exactly as ONNX Runtime derives them from the range
    it is given at export. ``upper`` caps the range where the tensor is a clipped activation's
    output (ReLU6): ONNX Runtime drops the Clip and lets the quantizer saturate instead.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, lo: float, hi: float, *, mode: str, upper: float | None = None) -> None:
        super().__init__()
        self.mode = mode
        self.upper = upper
        self.is_frozen = False
        self.register_buffer("lo", torch.tensor(min(lo, 0.0), dtype=torch.float32))
        self.register_buffer("hi", torch.tensor(max(hi, 0.0), dtype=torch.float32))
        scale, zero_point = activation_qparams(self.lo, self.hi)
        self.register_buffer("zero_point", zero_point)
        self.scale = nn.Parameter(scale.clone(), requires_grad=mode == "learned")

    def _bounded_scale(self) -> torch.Tensor:
        scale = self.scale.abs() + 1e-12
        if self.upper is not None:
            levels = ACTIVATION_LEVELS - float(self.zero_point)
            scale = torch.clamp(scale, max=self.upper / max(levels, 1.0))
        return scale

    def _learned_scale(self, x: torch.Tensor) -> torch.Tensor:
        per_sample = x[0].numel() if x.ndim > 1 else x.numel()
        factor = 1.0 / math.sqrt(per_sample * ACTIVATION_LEVELS)
        return _scale_gradient(self._bounded_scale(), factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_frozen or self.mode == "observed":
            if self.training and not self.is_frozen:
                with torch.no_grad():
                    low, high = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
                    self.lo.mul_(1 - OBSERVER_MOMENTUM).add_(OBSERVER_MOMENTUM * low)
                    self.hi.mul_(1 - OBSERVER_MOMENTUM).add_(OBSERVER_MOMENTUM * high)
            scale, zero_point = activation_qparams(self.lo, self.hi)
            return fake_quantize(x, scale, zero_point, 0, ACTIVATION_LEVELS)
        return fake_quantize(x, self._learned_scale(x), self.zero_point, 0, ACTIVATION_LEVELS)

    def range(self) -> tuple[float, float]:
        """The ``(lo, hi)`` range handed to the QDQ writer."""
        if self.mode == "learned" and not self.is_frozen:
            with torch.no_grad():
                scale = float(self._bounded_scale())
            zero_point = float(self.zero_point)
            return -zero_point * scale, (ACTIVATION_LEVELS - zero_point) * scale
        return float(self.lo), float(self.hi)

    def freeze(self) -> None:
        """Fix the range: from now on scale and zero point follow ONNX Runtime's formula."""
        lo, hi = self.range()
        if self.upper is not None:
            hi = min(hi, self.upper)
        self.lo.fill_(lo)
        self.hi.fill_(hi)
        self.is_frozen = True


def channel_axis(layer: nn.Module) -> int:
    """The output-channel axis of a layer's weight: 1 for ConvTranspose, else 0."""
    return 1 if isinstance(layer, nn.ConvTranspose1d | nn.ConvTranspose2d) else 0


class QuantLayer(nn.Module):
    """A Conv1d / Conv2d / ConvTranspose / Linear (with the BatchNorm after a convolution, if
    any) whose weight is fake-quantized.

    BatchNorm is folded into the weight before it is quantized, so training sees the integer
    weights the file will hold. While ``is_bn_frozen`` is False (the first
    ``freeze_bn_after_epoch`` epochs) the BatchNorm uses and updates batch statistics: the weight
    is folded with the running statistics, quantized, and the convolution's output is rescaled
    to the batch statistics (PyTorch's QAT ConvBn, after Jacob et al. 2018, section 3.2, and
    Krishnamoorthi 2018, arXiv 1806.08342, section 2.4). Frozen (and in eval mode) it is a plain
    layer with the folded weight and bias, which is exactly what is exported. A transposed
    convolution is never folded (its output channels are the weight's axis 1).

    ``bits`` None leaves the weight in float (a layer the QDQ writer does not quantize).
    """

    layer: Any  # nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d | nn.Linear
    bn: Any  # a BatchNorm | None

    def __init__(self, layer: nn.Module, bn: nn.Module | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.bn = bn
        self.axis = channel_axis(layer)
        self.bits: int | None = None
        self.per_channel = True
        self.is_bn_frozen = True
        self.fixed_scale: torch.Tensor | None = None
        self.scale: nn.Parameter | None = None

    def quantize_weight(self, *, bits: int, per_channel: bool, is_learned: bool) -> None:
        """Start fake-quantizing the weight; a learned scale starts at the max-abs one."""
        self.bits = bits
        self.per_channel = per_channel
        if is_learned:
            init = weight_scale(
                self.folded()[0], bits=bits, per_channel=per_channel, axis=self.axis
            )
            self.scale = nn.Parameter(init)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias with the BatchNorm folded in (running statistics)."""
        weight, bias = self.layer.weight, self.layer.bias
        if self.bn is None:
            return weight, bias
        factor = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        mean = self.bn.running_mean
        shift = self.bn.bias + ((bias if bias is not None else 0.0) - mean) * factor
        return weight * factor.reshape(-1, *([1] * (weight.ndim - 1))), shift

    def weight_scale(self) -> torch.Tensor:
        """The scale (per output channel or one) the folded weight is quantized with."""
        if self.fixed_scale is not None:
            return self.fixed_scale
        if self.scale is not None:
            return self.scale.detach().abs()
        assert self.bits is not None
        return weight_scale(
            self.folded()[0], bits=self.bits, per_channel=self.per_channel, axis=self.axis
        )

    def quantized_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if self.bits is None:
            return weight
        qmin, qmax = weight_range(self.bits)
        if self.fixed_scale is not None:
            scale = self.fixed_scale
        elif self.scale is not None:
            factor = 1.0 / math.sqrt(weight.numel() / weight.shape[self.axis] * qmax)
            scale = _scale_gradient(self.scale.abs() + 1e-12, factor)
        else:
            scale = weight_scale(
                weight, bits=self.bits, per_channel=self.per_channel, axis=self.axis
            )
        if scale.ndim == 1 and scale.numel() > 1:
            shape = [1] * weight.ndim
            shape[self.axis] = -1
            scale = scale.reshape(shape)
        return fake_quantize(weight, scale, 0.0, qmin, qmax)

    def _run(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return functional.linear(x, weight, bias)
        if isinstance(layer, nn.ConvTranspose1d | nn.ConvTranspose2d):
            transposed = (
                functional.conv_transpose1d
                if isinstance(layer, nn.ConvTranspose1d)
                else functional.conv_transpose2d
            )
            return transposed(
                x,
                weight,
                bias,
                layer.stride,
                layer.padding,
                layer.output_padding,
                layer.groups,
                layer.dilation,
            )
        out: torch.Tensor = layer._conv_forward(x, weight, bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is None or self.is_bn_frozen or not self.training:
            weight, bias = self.folded()
            return self._run(x, self.quantized_weight(weight), bias)
        # Batch statistics: fold with the running ones, undo the factor after the convolution,
        # and let BatchNorm normalize with (and update) the batch's.
        factor = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        shape = (-1, *([1] * (self.layer.weight.ndim - 1)))
        weight = self.quantized_weight(self.layer.weight * factor.reshape(shape))
        out = self._run(x, weight, None)
        channels = (1, -1, *([1] * (out.ndim - 2)))
        out = out / factor.reshape(channels)
        if self.layer.bias is not None:
            out = out + self.layer.bias.reshape(channels)
        return self.bn(out)  # type: ignore[no-any-return]

    def to_float(self) -> nn.Module:
        """A plain layer of the wrapped kind holding the folded weight and bias, for export.

        A quantized weight is exported already on its grid (integers times scale): the writer's
        ``round(w / scale)`` then gives back exactly the integers training used, clipped to
        -127..127 as in training (ONNX Runtime would clip a learned scale's outliers at -128).
        """
        import copy

        weight, bias = self.folded()
        if self.bits is not None:
            with torch.no_grad():
                weight = self.quantized_weight(weight)
        layer = copy.deepcopy(self.layer)
        with torch.no_grad():
            layer.weight = nn.Parameter(weight.detach().clone())
            layer.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        exported: nn.Module = layer
        return exported
