"""``cnn-s``: a small convolutional network for 8x8 digits and other tiny images.

Three 3x3 convolutions with BatchNorm (so quantization's BN folding has something to fold), one
max pool, global average pooling and a linear classifier: about 15k parameters and 0.7 M MACs
on 1x8x8 at width 1.0. Global pooling makes it accept any input of at least 2x2.
"""

from __future__ import annotations

from torch import nn

from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: the BatchNorm's shift replaces it), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


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
        conv_bn_relu(channels, c1),
        conv_bn_relu(c1, c2),
        nn.MaxPool2d(2),
        conv_bn_relu(c2, c3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, classes),
    )
