"""The four MLPerf Tiny reference models, counted by ``profile`` on the exported ONNX file.

Published counts: mlcommons/tiny (snapshot 1afd2c9), parsed from the reference .tflite files
(parameters = every constant tensor element including biases, after BatchNorm folding; MACs =
convolution, depthwise and fully connected layers only). See the zoo modules' docstrings for the
exact hand counts; the .tflite files also store a 2-element reshape shape, hence the +2.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeopt.measure import profile
from edgeopt.models import load_model

MLPERF_TINY = [
    pytest.param("zoo:ds-cnn-s?classes=12&input=1x49x10", 22_606, 2.66e6, id="kws-ds-cnn-s"),
    pytest.param(
        "zoo:mobilenet-v1?width=0.25&input=3x96x96&classes=2", 210_852, 7.49e6, id="vww-mobilenet"
    ),
    pytest.param("zoo:resnet8?input=3x32x32&classes=10", 77_708, 12.50e6, id="ic-resnet8"),
    pytest.param("zoo:ad-autoencoder?input=640", 265_864, 0.264e6, id="ad-autoencoder"),
]


def trained_looking(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics: a fresh BatchNorm folds into an all-zero bias, which
    the ONNX optimizer drops, while a trained model (the reference files) keeps it."""
    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            shape = layer.running_mean.shape
            layer.running_mean.copy_(torch.rand(shape, generator=generator) * 2 - 1)
            layer.bias.data.copy_(torch.rand(shape, generator=generator) * 2 - 1)
    return module


@pytest.mark.parametrize(("spec", "params", "macs"), MLPERF_TINY)
def test_reference_model_matches_the_published_counts(spec: str, params: int, macs: float) -> None:
    handle = load_model(spec)
    assert handle.module is not None
    trained_looking(handle.module)
    metrics = profile(handle, is_latency_measured=False)
    assert metrics.params == pytest.approx(params, rel=0.02)
    assert metrics.macs == pytest.approx(macs, rel=0.02)
