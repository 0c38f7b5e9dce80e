"""Twelve small models of the kinds edge users bring (issue 14), as ``module:factory`` specs.

None of them is from edgeopt's zoo: each is written the way a user writes a model, with the
layers the field uses (1-D convolutions, recurrent layers, attention, LayerNorm and GELU,
squeeze-excite with hard-swish, nearest upsampling with a skip concatenation, transposed and
grouped convolutions, two branches, a tensor constant with reshape / permute). Inputs are
scikit-learn's digits (8x8 images): the image models take them as 1x8x8, the sequence and 1-D
models as 8 steps (rows) of 8 features, the natural shape of each, with no wrapper.
"""

from __future__ import annotations

import torch
from torch import nn

#: factory name -> the input shape of one sample (without the batch).
INPUTS: dict[str, tuple[int, ...]] = {}


def _register(shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    def decorator(factory):  # type: ignore[no-untyped-def]
        INPUTS[factory.__name__] = shape
        return factory

    return decorator


SEQUENCE = (8, 8)  # 8 channels (or features) x 8 steps
IMAGE = (1, 8, 8)


class _Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(8, 16, 3, padding=1),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Conv1d(16, 32, 3, padding=1),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@_register(SEQUENCE)
def conv1d_net() -> nn.Module:
    """A time-series classifier: Conv1d / BatchNorm1d / ReLU, global average pooling."""
    return _Conv1dNet()


@_register(SEQUENCE)
def dsconv1d_net() -> nn.Module:
    """Depthwise-separable 1-D convolutions (a depthwise Conv1d, then a pointwise one)."""
    return nn.Sequential(
        nn.Conv1d(8, 8, 3, padding=1, groups=8),
        nn.Conv1d(8, 32, 1),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Conv1d(32, 32, 3, padding=1, groups=32),
        nn.Conv1d(32, 32, 1),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class _Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(8, 32, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.transpose(1, 2))  # (N, features, steps) -> (N, steps, features)
        return self.head(out[:, -1])


@_register(SEQUENCE)
def gru_classifier() -> nn.Module:
    """A GRU over the 8 steps, classified from the last step's output."""
    return _Recurrent(nn.GRU)


@_register(SEQUENCE)
def lstm_classifier() -> nn.Module:
    """An LSTM over the 8 steps, classified from the last step's output."""
    return _Recurrent(nn.LSTM)


class _AttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.position = nn.Parameter(torch.zeros(1, 8, 32))
        self.blocks = nn.Sequential(_AttentionBlock(32, 4), _AttentionBlock(32, 4))
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.transpose(1, 2)) + self.position
        return self.head(self.norm(self.blocks(tokens)).mean(1))


@_register(SEQUENCE)
def tiny_transformer() -> nn.Module:
    """A two-block pre-norm transformer encoder with nn.MultiheadAttention (4 heads)."""
    return _TinyTransformer()


class _MixerBlock(nn.Module):
    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.tokens = nn.Sequential(nn.Linear(tokens, 16), nn.GELU(), nn.Linear(16, tokens))
        self.norm2 = nn.LayerNorm(width)
        self.channels = nn.Sequential(nn.Linear(width, 32), nn.GELU(), nn.Linear(32, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class _Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(_MixerBlock(8, 8), _MixerBlock(8, 8))
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.squeeze(1)  # (N, 1, 8, 8) -> 8 tokens (rows) of 8 features
        return self.head(self.dropout(self.blocks(rows).mean(1)))


@_register(IMAGE)
def mlp_mixer() -> nn.Module:
    """MLP-Mixer style: LayerNorm + GELU MLPs across tokens and across features, dropout."""
    return _Mixer()


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))
        return x * scale


@_register(IMAGE)
def se_hardswish() -> nn.Module:
    """A MobileNetV3-style block: inverted residual, Hardswish, squeeze-excite, SiLU."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.Hardswish(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.BatchNorm2d(16),
        nn.Hardswish(),
        _SqueezeExcite(16, 4),
        nn.Conv2d(16, 24, 1),
        nn.BatchNorm2d(24),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    )


class _UNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.merge = nn.Sequential(nn.Conv2d(24, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        merged = self.merge(torch.cat([self.up(self.down(skip)), skip], dim=1))
        return self.head(merged.mean((2, 3)))


@_register(IMAGE)
def unet_ish() -> nn.Module:
    """Down-sample, nearest-neighbour upsample, concatenate with the skip (U-Net style)."""
    return _UNetish()


@_register(IMAGE)
def convtranspose_net() -> nn.Module:
    """A strided convolution undone by a ConvTranspose2d (a decoder's layer)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 16, 2, stride=2),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@_register(IMAGE)
def grouped_conv() -> nn.Module:
    """Grouped convolutions (ResNeXt / ShuffleNet style): 4 and 2 groups."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, groups=4),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class _TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.narrow = nn.Sequential(nn.Conv2d(1, 16, 1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.wide(x), self.narrow(x) + self.wide(x)], dim=1)
        pooled = nn.functional.max_pool2d(self.fuse(both), 2)
        return self.head(pooled.flatten(1))


@_register(IMAGE)
def two_branch() -> nn.Module:
    """Two branches joined by an addition and a concatenation, max pooling, a dense head."""
    return _TwoBranch()


class _ConstantReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", torch.linspace(-0.5, 0.5, 8).reshape(1, 8, 1))
        self.rows = nn.Linear(8, 12)
        self.head = nn.Linear(8 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(x.shape[0], 8, 8).permute(0, 2, 1) + self.offset
        return self.head(torch.relu(self.rows(rows)).reshape(x.shape[0], -1))


@_register(IMAGE)
def constant_reshape() -> nn.Module:
    """A tensor-valued constant (a buffer) added after a reshape and a permute."""
    return _ConstantReshape()


#: The architectures users take from torchvision and timm (issue 14, item 1b): the library's own
#: code (the ``vision`` extra), fresh weights, as ``torchvision:`` / ``timm:`` specs. Inputs are
#: digits at 1x32x32 (each pixel a 4x4 block), the smallest size their five stride-2 stages take;
#: the widths are the libraries' own edge settings.
LIBRARY_SPECS: dict[str, str] = {
    "tv_mobilenet_v2": "torchvision:mobilenet_v2?width_mult=0.35",
    "tv_mobilenet_v3_small": "torchvision:mobilenet_v3_small",
    "tv_shufflenet_v2_x0_5": "torchvision:shufflenet_v2_x0_5",
    "tv_squeezenet1_1": "torchvision:squeezenet1_1",
    "tv_mnasnet0_5": "torchvision:mnasnet0_5",
    "tv_resnet18": "torchvision:resnet18",
    "timm_mobilenetv3_small_050": "timm:mobilenetv3_small_050",
}
LIBRARY_INPUT = (1, 32, 32)
