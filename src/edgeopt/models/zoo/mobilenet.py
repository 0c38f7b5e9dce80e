"""MobileNetV1, V2 and V3-Small: depthwise-separable networks for phones and microcontrollers.

- ``mobilenet-v1``: Howard et al. 2017, https://arxiv.org/abs/1704.04861. ``width`` is the
  paper's alpha. With ``width=0.25``, ``input=3x96x96`` and ``classes=2`` it is the MLPerf Tiny
  visual-wake-words reference: 210,850 parameters after BatchNorm folding (the published
  210,852 also counts the 2-element reshape shape of the .tflite file) and 7,489,664 MACs. ReLU,
  as in the paper and the MLPerf model.
- ``mobilenet-v2``: Sandler et al. 2018, https://arxiv.org/abs/1801.04381. Inverted residuals
  with linear bottlenecks and ReLU6; channels rounded to multiples of 8 (``_make_divisible``).
- ``mobilenet-v3-small``: Howard et al. 2019, https://arxiv.org/abs/1905.02244. Squeeze-and-
  excitation with a hard sigmoid gate, hard swish; the ONNX file holds ``HardSigmoid`` and
  ``HardSwish`` (opset 14+), and the excitation's two 1x1 convolutions are counted as MACs.

All three keep the ImageNet stride pattern (total stride 32) whatever the input: the input-size
knob decides the feature-map sizes, down to 17x17 (five stride-2 layers, each still reducing at
least 2 pixels). For 28x28 or 32x32 data a stem of stride 1 is common (total stride 16, four
times the MACs): ``mobilenet-v2-cifar`` is MobileNetV2 with that stem, 24.5 M MACs on 3x32x32 at
width 1.0 against 6.1 M with the ImageNet stem. At ImageNet's 3x224x224 and 1000 classes the
parameter counts equal torchvision's (3,504,872 for V2, 2,542,856 for V3-Small) and the MACs
are the papers' (568.7 M, 300.8 M and 56.5 M against 569 M, 300 M and 56 M).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.zoo.common import conv_bn
from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model

# MobileNetV1 body after the 32-channel stem: (pointwise output channels, depthwise stride).
_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

# MobileNetV2 body after the 32-channel stem: expansion t, channels c, repeats n, stride s
# (the paper's Table 2).
_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# MobileNetV3-Small bottlenecks after the 16-channel stem (the paper's Table 2): kernel,
# expanded channels, output channels, squeeze-and-excitation, hard swish (else ReLU), stride.
_V3_SMALL_BLOCKS = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)


class SqueezeExcite(nn.Module):
    """Channel gate: global average, 1x1 reduce, ReLU, 1x1 expand, hard sigmoid, multiply."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights: torch.Tensor = self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))
        return x * weights


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when ``hidden == cin``), depthwise, optional SE, linear project 1x1.

    The input is added back when the block keeps both the size and the channel count.
    """

    def __init__(
        self,
        cin: int,
        hidden: int,
        cout: int,
        *,
        kernel: int,
        stride: int,
        activation: type[nn.Module],
        se_channels: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(conv_bn(cin, hidden, 1, activation=activation))
        layers.append(
            conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden, activation=activation)
        )
        if se_channels:
            layers.append(SqueezeExcite(hidden, se_channels))
        layers.append(conv_bn(hidden, cout, 1, activation=None))
        self.body = nn.Sequential(*layers)
        self.is_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return x + out if self.is_residual else out


@zoo_model(
    "mobilenet-v1",
    default_input=(3, 224, 224),
    min_size=17,
    summary="MobileNetV1: 13 depthwise-separable blocks, width = alpha (Howard 2017)",
)
def mobilenet_v1(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """MobileNetV1: a 3x3 stride-2 stem, then depthwise 3x3 + pointwise 1x1 pairs."""
    channels = scaled(32, width)
    layers: list[nn.Module] = [conv_bn(input_shape[0], channels, 3, stride=2)]
    for out, stride in _V1_BLOCKS:
        out_channels = scaled(out, width)
        layers.append(conv_bn(channels, channels, 3, stride=stride, groups=channels))
        layers.append(conv_bn(channels, out_channels, 1))
        channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def _mobilenet_v2(
    *, width: float, classes: int, input_channels: int, stem_stride: int
) -> nn.Sequential:
    channels = scaled(32, width, 8)
    # The last 1x1 convolution never shrinks below 1280 (Sandler et al. 2018, section 5.1).
    last = scaled(1280, max(1.0, width), 8)
    layers: list[nn.Module] = [
        conv_bn(input_channels, channels, 3, stride=stem_stride, activation=nn.ReLU6)
    ]
    for expansion, out, repeats, first_stride in _V2_STAGES:
        out_channels = scaled(out, width, 8)
        for index in range(repeats):
            layers.append(
                InvertedResidual(
                    channels,
                    int(round(channels * expansion)),
                    out_channels,
                    kernel=3,
                    stride=first_stride if index == 0 else 1,
                    activation=nn.ReLU6,
                )
            )
            channels = out_channels
    layers += [
        conv_bn(channels, last, 1, activation=nn.ReLU6),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(last, classes),
    ]
    return nn.Sequential(*layers)


@zoo_model(
    "mobilenet-v2",
    default_input=(3, 224, 224),
    min_size=17,
    summary="MobileNetV2: inverted residuals, linear bottlenecks, ReLU6 (Sandler 2018)",
)
def mobilenet_v2(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """MobileNetV2 with the ImageNet strides (stem stride 2, total stride 32)."""
    return _mobilenet_v2(width=width, classes=classes, input_channels=input_shape[0], stem_stride=2)


@zoo_model(
    "mobilenet-v2-cifar",
    default_input=(3, 32, 32),
    min_size=9,
    summary="MobileNetV2 with a stride-1 stem for 32x32 images (total stride 16)",
)
def mobilenet_v2_cifar(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """MobileNetV2 whose stem keeps the input size, as is common for 28x28 and 32x32 data."""
    return _mobilenet_v2(width=width, classes=classes, input_channels=input_shape[0], stem_stride=1)


@zoo_model(
    "mobilenet-v3-small",
    default_input=(3, 224, 224),
    min_size=17,
    summary="MobileNetV3-Small: SE with hard sigmoid, hard swish (Howard 2019)",
)
def mobilenet_v3_small(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """MobileNetV3-Small; the last 1x1 layer without BatchNorm is a Linear after pooling."""
    channels = scaled(16, width, 8)
    layers: list[nn.Module] = [
        conv_bn(input_shape[0], channels, 3, stride=2, activation=nn.Hardswish)
    ]
    for kernel, expanded, out, has_se, is_hard_swish, stride in _V3_SMALL_BLOCKS:
        hidden = scaled(expanded, width, 8)
        layers.append(
            InvertedResidual(
                channels,
                hidden,
                scaled(out, width, 8),
                kernel=kernel,
                stride=stride,
                activation=nn.Hardswish if is_hard_swish else nn.ReLU,
                se_channels=scaled(hidden // 4, 1.0, 8) if has_se else 0,
            )
        )
        channels = scaled(out, width, 8)
    head = 6 * channels
    last = scaled(1024, width, 8)
    layers += [
        conv_bn(channels, head, 1, activation=nn.Hardswish),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(head, last),
        nn.Hardswish(),
        nn.Dropout(0.2),
        nn.Linear(last, classes),
    ]
    return nn.Sequential(*layers)
