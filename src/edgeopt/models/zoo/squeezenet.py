"""SqueezeNet 1.1 (Iandola et al. 2016, https://arxiv.org/abs/1602.07360; version 1.1 from the
authors' repository, https://github.com/forresti/SqueezeNet/tree/master/SqueezeNet_v1.1).

Fire modules (1x1 squeeze, then 1x1 and 3x3 expand, concatenated) between three max pools of
3x3 stride 2 in ceil mode; no BatchNorm; the classifier is a 1x1 convolution to the classes
followed by global average pooling. Version 1.1 has a 3x3 stem with 64 channels and pools
earlier than 1.0: 2.4x fewer MACs for the same accuracy. At 3x224x224 and 1000 classes it has
1,235,496 parameters, as torchvision's ``squeezenet1_1``, and 349 M MACs. ``width`` scales the
stem and every Fire module.

The stem and pools are unpadded, so the input must be at least 25x25: below that the third
pool's 3x3 window no longer fits in its input (2x2), and ceil mode would pool past the edge.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.zoo.common import scaled
from edgeopt.models.zoo.common import zoo_model

# (squeeze channels, expand channels per branch) of the eight Fire modules, in three groups with
# a max pool before each group.
_STAGES = (
    ((16, 64), (16, 64)),
    ((32, 128), (32, 128)),
    ((48, 192), (48, 192), (64, 256), (64, 256)),
)


class Fire(nn.Module):
    """Squeeze 1x1 + ReLU, then expand 1x1 and 3x3 (each + ReLU) concatenated on channels."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], dim=1)


@zoo_model(
    "squeezenet1.1",
    default_input=(3, 224, 224),
    min_size=25,
    summary="SqueezeNet 1.1: eight Fire modules, conv classifier (Iandola 2016)",
)
def squeezenet1_1(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """SqueezeNet 1.1 (dropout 0.5 before the classifier, as in the reference)."""
    channels = scaled(64, width)
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], channels, 3, stride=2), nn.ReLU()]
    for stage in _STAGES:
        layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
        for squeeze, expand in stage:
            layers.append(Fire(channels, scaled(squeeze, width), scaled(expand, width)))
            channels = 2 * scaled(expand, width)
    layers += [
        nn.Dropout(0.5),
        nn.Conv2d(channels, classes, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    return nn.Sequential(*layers)
