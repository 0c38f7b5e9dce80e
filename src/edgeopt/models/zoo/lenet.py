"""LeNet-5 and LeNet-300-100 (LeCun et al. 1998, "Gradient-based learning applied to document
recognition"), in the modern form: ReLU and max pooling instead of tanh and trainable subsampling.

At width 1.0 on 1x28x28 LeNet-5 has 61,706 parameters and 416,520 multiply-accumulates (conv
and fully connected only); LeNet-300-100 has 266,610 parameters and 266,200 MACs.

Han et al. 2016 ("Deep Compression", arXiv 1510.00149, Table 1) compress LeNet-300-100 and a
"LeNet-5" that is in fact Caffe's MNIST example (``examples/mnist/lenet.prototxt``): conv 20 5x5,
pool, conv 50 5x5, pool, fc 500, ReLU, fc 10 -- 431,080 parameters and 2,293,000 MACs on
1x28x28, seven times the classic network. It is ``lenet5-caffe`` here, so the comparison with
their 39x is like for like.
"""

from __future__ import annotations

import math

from torch import nn

from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model


@zoo_model(
    "lenet5",
    default_input=(1, 28, 28),
    min_size=12,
    summary="LeNet-5: conv6-pool-conv16-pool-fc120-fc84 (LeCun 1998)",
)
def lenet5(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """LeNet-5 with a padded first convolution so 28x28 input gives the classic 5x5x16 map."""
    channels, height, width_px = input_shape
    c1, c2 = scaled(6, width), scaled(16, width)
    f1, f2 = scaled(120, width), scaled(84, width)
    # conv 5x5 pad 2 keeps the size, pool halves it, conv 5x5 takes 4 off, pool halves again.
    out_h = ((height // 2) - 4) // 2
    out_w = ((width_px // 2) - 4) // 2
    return nn.Sequential(
        nn.Conv2d(channels, c1, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * out_h * out_w, f1),
        nn.ReLU(),
        nn.Linear(f1, f2),
        nn.ReLU(),
        nn.Linear(f2, classes),
    )


@zoo_model(
    "lenet300",
    default_input=(1, 28, 28),
    min_size=1,
    summary="LeNet-300-100: fully connected 300-100 (LeCun 1998)",
)
def lenet300(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The 784-300-100-10 multilayer perceptron; any input is flattened first."""
    features = math.prod(input_shape)
    h1, h2 = scaled(300, width), scaled(100, width)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, h1),
        nn.ReLU(),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.Linear(h2, classes),
    )


@zoo_model(
    "lenet5-caffe",
    default_input=(1, 28, 28),
    min_size=16,
    summary="Caffe's LeNet: conv20-pool-conv50-pool-fc500-fc10 (Deep Compression's LeNet-5)",
)
def lenet5_caffe(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Caffe's MNIST LeNet, layer for layer: unpadded convolutions and no ReLU after them.

    The prototxt has its only ReLU between the two fully connected layers; max pooling is the
    convolutions' nonlinearity. ``width`` scales the 20/50/500 channels and neurons.
    """
    channels, height, width_px = input_shape
    c1, c2, f1 = scaled(20, width), scaled(50, width), scaled(500, width)
    # conv 5x5 takes 4 off, pool halves, conv 5x5 takes 4 off, pool halves: 28 -> 4.
    out_h = ((height - 4) // 2 - 4) // 2
    out_w = ((width_px - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(channels, c1, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * out_h * out_w, f1),
        nn.ReLU(),
        nn.Linear(f1, classes),
    )
