"""``cnn-s``: a small convolutional network for 8x8 digits and other tiny images.

Three 3x3 convolutions with BatchNorm (so quantization's BN folding has something to fold), one
max pool, global average pooling and a linear classifier: 14,378 parameters after BatchNorm
folding and 0.45 M MACs on 1x8x8 at width 1.0. Global pooling makes it accept any input of at
least 2x2.
"""

from __future__ import annotations

from torch import nn

from edgeopt.models.zoo.common import conv_bn
from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model


@zoo_model(
    "cnn-s",
    default_input=(1, 8, 8),
    min_size=2,
    summary="small CNN: 3x conv3x3-BN-ReLU, max pool, global pool, fc (8x8 digits)",
)
def cnn_s(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    channels = input_shape[0]
    c1, c2, c3 = scaled(16, width), scaled(32, width), scaled(32, width)
    return nn.Sequential(
        conv_bn(channels, c1, 3),
        conv_bn(c1, c2, 3),
        nn.MaxPool2d(2),
        conv_bn(c2, c3, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, classes),
    )
