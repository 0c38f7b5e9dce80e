"""ShuffleNetV2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", https://arxiv.org/abs/1807.11164).

Each unit splits its channels in two: one half passes through, the other goes through 1x1,
depthwise 3x3 and 1x1 convolutions; a downsampling unit processes both halves instead. The
halves are concatenated and shuffled, which exports to ONNX as Reshape, Transpose, Reshape.

Stage channels come from the paper's Table 5 for widths 0.5, 1.0, 1.5 and 2.0; between those the
table is interpolated linearly, below 0.5 and above 2.0 the nearest row is scaled, and stage
channels are rounded to even numbers (the split needs two equal halves). At 3x224x224 and 1000
classes the parameter counts equal torchvision's (1,366,792 at 0.5, 2,278,604 at 1.0,
3,503,624 at 1.5, 7,393,996 at 2.0); at 1.0 it has 144.9 M MACs (the paper: 146 M).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.zoo.common import conv_bn
from edgeopt.models.zoo.common import zoo_model

# Table 5: stem, the three stages' output channels and the last 1x1 convolution, per width.
_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
_REPEATS = (4, 8, 4)


def stage_channels(width: float) -> tuple[int, ...]:
    """Stem, three stage and last-convolution channels at ``width`` (Table 5, interpolated).

    Example:
        >>> stage_channels(1.0), stage_channels(0.75)
        ((24, 116, 232, 464, 1024), (24, 82, 164, 328, 1024))
    """
    widths = sorted(_CHANNELS)
    if width <= widths[0] or width >= widths[-1]:
        anchor = widths[0] if width <= widths[0] else widths[-1]
        values = [v * width / anchor for v in _CHANNELS[anchor]]
    else:
        upper = next(w for w in widths if w >= width)
        lower = max(w for w in widths if w <= width)
        share = 0.0 if upper == lower else (width - lower) / (upper - lower)
        values = [
            a + (b - a) * share for a, b in zip(_CHANNELS[lower], _CHANNELS[upper], strict=True)
        ]
    stem, *stages, last = values
    return (
        max(1, round(stem)),
        *(max(2, 2 * round(v / 2)) for v in stages),
        max(1, round(last)),
    )


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (batch left free for a dynamic export)."""
    _, channels, height, width = x.shape
    x = x.reshape(-1, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(-1, channels, height, width)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit: split (or, when downsampling, copy) -> branch -> concat -> shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        branch = cout // 2
        self.left: nn.Module | None = None
        if stride > 1:
            self.left = nn.Sequential(
                conv_bn(cin, cin, 3, stride=stride, groups=cin, activation=None),
                conv_bn(cin, branch, 1),
            )
        self.right = nn.Sequential(
            conv_bn(cin if stride > 1 else branch, branch, 1),
            conv_bn(branch, branch, 3, stride=stride, groups=branch, activation=None),
            conv_bn(branch, branch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left is None:
            kept, processed = x.chunk(2, dim=1)
            out = torch.cat([kept, self.right(processed)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


@zoo_model(
    "shufflenet-v2",
    default_input=(3, 224, 224),
    min_size=17,
    summary="ShuffleNetV2: channel split and shuffle, Table 5 widths (Ma 2018)",
)
def shufflenet_v2(*, width: float, classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ShuffleNetV2: stem 3x3 stride 2, max pool, three stages (4, 8, 4 units), 1x1, pool, fc."""
    stem, *stages, last = stage_channels(width)
    layers: list[nn.Module] = [
        conv_bn(input_shape[0], stem, 3, stride=2),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    channels = stem
    for out, repeats in zip(stages, _REPEATS, strict=True):
        layers.append(ShuffleUnit(channels, out, 2))
        layers += [ShuffleUnit(out, out, 1) for _ in range(repeats - 1)]
        channels = out
    layers += [
        conv_bn(channels, last, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(last, classes),
    ]
    return nn.Sequential(*layers)
