"""ResNet-8, the MLPerf Tiny image-classification reference (mlcommons/tiny,
``benchmark/training/image_classification/keras_model.py``, ``resnet_v1_eembc``), after He et
al. 2016, "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385.

A 3x3 stem of 16 channels, then three residual stages of 16, 32 and 64 channels (the second and
third start with stride 2 and a 1x1 stride-2 convolution on the shortcut, without BatchNorm, as
in the reference), global average pooling and a linear classifier. On 3x32x32 with 10 classes:
77,706 parameters after BatchNorm folding (the published 77,708 also counts the 2-element reshape
shape of the .tflite file) and 12,501,632 MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.zoo.common import conv_bn
from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model


class ResidualStage(nn.Module):
    """Two 3x3 convolutions with BatchNorm added to the input (projected when it changes shape),
    then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, cout, 3, stride=stride),
            conv_bn(cout, cout, 3, activation=None),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.shortcut(x) + self.body(x))
        return out


@zoo_model(
    "resnet8",
    default_input=(3, 32, 32),
    min_size=3,
    summary="ResNet-8: 3 residual stages of 16/32/64 channels (MLPerf Tiny image classification)",
)
def resnet8(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-8 as in MLPerf Tiny; ``width`` scales the 16/32/64 channels."""
    c1, c2, c3 = scaled(16, width), scaled(32, width), scaled(64, width)
    return nn.Sequential(
        conv_bn(input_shape[0], c1, 3),
        ResidualStage(c1, c1, 1),
        ResidualStage(c1, c2, 2),
        ResidualStage(c2, c3, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, classes),
    )
