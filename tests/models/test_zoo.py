from __future__ import annotations

import pytest
import torch

from edgeopt.errors import InputError
from edgeopt.measure import profile
from edgeopt.models import load_model
from edgeopt.models.zoo import build_zoo_model
from edgeopt.models.zoo import zoo_info
from edgeopt.registry import list_models


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_builds_runs_exports_and_profiles(name: str) -> None:
    handle = load_model(f"zoo:{name}?classes=7")
    module = handle.module
    assert module is not None
    for layer in module.modules():  # trained-looking BatchNorm, so folding leaves a bias
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-1, 1)
            layer.bias.data.uniform_(-1, 1)
    out = module(torch.zeros((3, *handle.input_shape)))
    assert tuple(out.shape) == (3, 7)
    metrics = profile(handle, target="cortex-m4", is_latency_measured=False)
    trainable = sum(p.numel() for p in module.parameters())
    # BatchNorm is folded into the convolution on export, so the ONNX file holds fewer numbers.
    bn = sum(m.weight.numel() * 2 for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv_bias = sum(
        m.out_channels
        for m in module.modules()
        if isinstance(m, torch.nn.Conv2d) and m.bias is None and bn
    )
    assert metrics.params == trainable - bn + conv_bias
    assert metrics.macs > 0 and metrics.estimate is not None


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_scales_with_width(name: str) -> None:
    small = build_zoo_model(name, width=0.5)
    large = build_zoo_model(name, width=1.0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(large)


def test_lenet5_params_and_macs_equal_the_hand_count() -> None:
    # conv1 1->6 5x5 pad 2 on 28x28, pool, conv2 6->16 5x5, pool, fc 400-120-84-10
    params = (6 * 25 + 6) + (16 * 6 * 25 + 16)
    params += (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    macs = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    metrics = profile("zoo:lenet5", is_latency_measured=False)
    assert (metrics.params, metrics.macs) == (params, macs) == (61_706, 416_520)


def test_lenet300_params_and_macs_equal_the_hand_count() -> None:
    metrics = profile("zoo:lenet300", is_latency_measured=False)
    assert metrics.params == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert metrics.macs == 784 * 300 + 300 * 100 + 100 * 10


@pytest.mark.parametrize("width", ["0", "-0.5"])
def test_width_at_or_below_zero_is_refused(width: str) -> None:
    with pytest.raises(InputError, match="width must be above 0"):
        load_model(f"zoo:lenet5?width={width}")


def test_input_too_small_names_the_minimum() -> None:
    minimum = zoo_info("lenet5").min_size
    with pytest.raises(InputError, match=f"minimum is {minimum}"):
        load_model("zoo:lenet5?input=1x8x8")


def test_unknown_zoo_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown zoo model 'resnet9000'.*lenet5"):
        load_model("zoo:resnet9000")


def test_unknown_spec_parameter_is_refused() -> None:
    with pytest.raises(InputError, match="unknown parameter 'widht'"):
        load_model("zoo:lenet5?widht=2")
