"""DS-CNN S, M and L for keyword spotting (Zhang, Suda, Lai, Chandra 2017, "Hello Edge: Keyword
Spotting on Microcontrollers", https://arxiv.org/abs/1711.07128).

Input is 1 x time x coefficients: 49 frames (40 ms windows, 20 ms hop over one second) of 10 MFCC
coefficients by default. A 10x4 convolution, then depthwise-separable blocks (3x3 depthwise,
1x1 pointwise, each with BatchNorm and ReLU), average pooling over the whole map and a linear
classifier. Sizes from the authors' ``train_commands.txt`` (ARM-software/ML-KWS-for-MCU):

- ``ds-cnn-s``: 64 channels, first stride 2x2, 4 blocks of stride 1.
- ``ds-cnn-m``: 172 channels, first stride 2x1, 4 blocks, the first of stride 2x2.
- ``ds-cnn-l``: 276 channels, first stride 2x1, 5 blocks, the first of stride 2x2.

``ds-cnn-s`` with ``classes=12`` is the MLPerf Tiny keyword-spotting reference (mlcommons/tiny
``keras_model.py``, DS-CNN with 64 filters): 22,604 parameters after BatchNorm folding (the
published 22,606 also counts the 2-element reshape shape of the .tflite file) and 2,656,768 MACs
on 49x10. Dropout 0.2 after the first layer and 0.4 before pooling are MLPerf's.

Padding gives TensorFlow's ``same`` sizes (output = ceil(input / stride)), computed for the
input size the model is built for; see :func:`_first_layer` for where an uneven pad goes.
"""

from __future__ import annotations

import math

from torch import nn

from edgeopt.models.zoo.common import conv_bn
from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model

_KERNEL = (10, 4)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``same`` padding (before, after) of one dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _first_layer(
    cin: int, cout: int, *, height: int, width: int, stride: tuple[int, int]
) -> list[nn.Module]:
    """The 10x4 convolution with ``same`` padding, without a separate Pad layer where possible.

    At stride 2 an uneven pad can be made even by adding the extra pixel on both sides: the
    output size is unchanged, and the graph keeps one convolution, as the TFLite reference does.
    At stride 1 an uneven pad (the 4-wide kernel of DS-CNN-M and -L) needs a ZeroPad2d.
    """
    pads = []
    for size, kernel, step in zip((height, width), _KERNEL, stride, strict=True):
        before, after = _same_padding(size, kernel, step)
        pads.append((after, after) if step > 1 else (before, after))
    (top, bottom), (left, right) = pads
    if top == bottom and left == right:
        return [conv_bn(cin, cout, _KERNEL, stride=stride, padding=(top, left))]
    return [
        nn.ZeroPad2d((left, right, top, bottom)),
        conv_bn(cin, cout, _KERNEL, stride=stride, padding=0),
    ]


def _ds_cnn(
    *,
    channels: int,
    first_stride: tuple[int, int],
    block_strides: tuple[int, ...],
    width: float,
    classes: int,
    input_shape: tuple[int, ...],
) -> nn.Sequential:
    cin, height, width_px = input_shape
    c = scaled(channels, width)
    layers = _first_layer(cin, c, height=height, width=width_px, stride=first_stride)
    layers.append(nn.Dropout(0.2))
    for stride in block_strides:
        # A 3x3 kernel at stride 1 or 2 pads evenly for ``same``: ceil(size / stride) out.
        layers.append(conv_bn(c, c, 3, stride=stride, groups=c))
        layers.append(conv_bn(c, c, 1))
    layers += [
        nn.Dropout(0.4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, classes),
    ]
    return nn.Sequential(*layers)


@zoo_model(
    "ds-cnn-s",
    default_input=(1, 49, 10),
    min_size=2,
    summary="DS-CNN-S: 64 channels, 4 DS blocks (Hello Edge; MLPerf Tiny KWS with classes=12)",
)
def ds_cnn_s(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """DS-CNN-S: conv 10x4 stride 2x2, four 3x3 depthwise-separable blocks, 64 channels."""
    return _ds_cnn(
        channels=64,
        first_stride=(2, 2),
        block_strides=(1, 1, 1, 1),
        width=width,
        classes=classes,
        input_shape=input_shape,
    )


@zoo_model(
    "ds-cnn-m",
    default_input=(1, 49, 10),
    min_size=3,
    summary="DS-CNN-M: 172 channels, 4 DS blocks (Hello Edge)",
)
def ds_cnn_m(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """DS-CNN-M: conv 10x4 stride 2x1, four blocks (the first of stride 2), 172 channels."""
    return _ds_cnn(
        channels=172,
        first_stride=(2, 1),
        block_strides=(2, 1, 1, 1),
        width=width,
        classes=classes,
        input_shape=input_shape,
    )


@zoo_model(
    "ds-cnn-l",
    default_input=(1, 49, 10),
    min_size=3,
    summary="DS-CNN-L: 276 channels, 5 DS blocks (Hello Edge)",
)
def ds_cnn_l(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """DS-CNN-L: conv 10x4 stride 2x1, five blocks (the first of stride 2), 276 channels."""
    return _ds_cnn(
        channels=276,
        first_stride=(2, 1),
        block_strides=(2, 1, 1, 1, 1),
        width=width,
        classes=classes,
        input_shape=input_shape,
    )
