"""The MLPerf Tiny anomaly-detection autoencoder (mlcommons/tiny,
``benchmark/training/anomaly_detection/keras_model.py``; the DCASE 2020 Task 2 baseline, Koizumi
et al. 2020, https://arxiv.org/abs/2006.05822).

Fully connected 640-128-128-128-128-8-128-128-128-128-640: each hidden layer is Linear,
BatchNorm and ReLU, the output layer is linear. The input is one flat vector (5 frames of 128
log-mel bins in the reference), written ``input=640`` in a spec. At width 1.0: 265,864
parameters after BatchNorm folding, as published, and 264,192 MACs.

The output is a reconstruction of the input, not class scores: the anomaly score is the
reconstruction error. So ``classes`` means nothing here and is ignored
(``ZooInfo.has_classes`` is False); :func:`edgeopt.measure.profile` counts and times it like
any model, while training and accuracy, which assume class labels, do not apply.
"""

from __future__ import annotations

from torch import nn

from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model


def _dense_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU()]


@zoo_model(
    "ad-autoencoder",
    default_input=(640,),
    min_size=1,
    summary="FC autoencoder 640-128x4-8-128x4-640 (MLPerf Tiny anomaly detection)",
    has_classes=False,
)
def ad_autoencoder(*, width: float, input_shape: tuple[int, ...]) -> nn.Module:
    """The autoencoder; ``width`` scales the 128-wide layers and the 8-wide bottleneck."""
    features = input_shape[0]
    hidden, bottleneck = scaled(128, width), scaled(8, width)
    layers = _dense_bn_relu(features, hidden)
    for _ in range(3):
        layers += _dense_bn_relu(hidden, hidden)
    layers += _dense_bn_relu(hidden, bottleneck)
    layers += _dense_bn_relu(bottleneck, hidden)
    for _ in range(3):
        layers += _dense_bn_relu(hidden, hidden)
    layers.append(nn.Linear(hidden, features))
    return nn.Sequential(*layers)
