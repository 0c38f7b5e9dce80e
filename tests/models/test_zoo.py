from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.measure import profile
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.models.zoo import build_zoo_model
from edgeopt.models.zoo import zoo_info
from edgeopt.models.zoo.mobilenet import SqueezeExcite
from edgeopt.models.zoo.shufflenet import stage_channels
from edgeopt.registry import get_model
from edgeopt.registry import list_models

Exported = Callable[[str], tuple[ModelHandle, Path]]
STRIDED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def trained_looking(module: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so folding leaves a non-zero bias.

    A fresh BatchNorm folds into an all-zero bias, which the ONNX optimizer drops.
    """
    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            shape = layer.running_mean.shape
            layer.running_mean.copy_(torch.rand(shape, generator=generator) * 2 - 1)
            layer.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.rand(shape, generator=generator) * 2 - 1)
    return module


def small_input(name: str) -> tuple[int, ...]:
    """The default input with spatial sizes capped at 32 (never below the minimum)."""
    info = zoo_info(name)
    channels, *spatial = info.default_input
    if not spatial:
        return info.default_input
    return (channels, *(max(info.min_size, min(dim, 32)) for dim in spatial))


def expected_output(name: str, batch: int, classes: int) -> tuple[int, ...]:
    info = zoo_info(name)
    return (batch, classes) if info.has_classes else (batch, *info.default_input)


def counted_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of convolutions and linear layers at batch 1, counted on the PyTorch side."""
    total = 0

    def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kernel = layer.kernel_size[0] * layer.kernel_size[1]
            total += out.numel() * layer.in_channels // layer.groups * kernel
        else:
            total += out.numel() * layer.in_features

    handles = [
        layer.register_forward_hook(hook)
        for layer in module.modules()
        if isinstance(layer, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        module.eval()(torch.zeros((1, *input_shape)))
    for handle in handles:
        handle.remove()
    return total


def strides_starved(builder: Callable[..., nn.Module], name: str, size: int) -> bool:
    """Whether, at ``size`` per spatial dimension, a layer that downsamples gets fewer than 2
    pixels or less than its kernel (or the model cannot run at all). Calls the builder directly,
    past the size check of :func:`build_zoo_model`."""
    info = zoo_info(name)
    shape = (info.default_input[0],) + (size,) * (len(info.default_input) - 1)
    knobs = {"width": 1.0, "classes": 10, "input_shape": shape}
    accepted = inspect.signature(builder).parameters
    starved = False

    def check(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        nonlocal starved
        pairs = zip(
            args[0].shape[2:],
            nn.modules.utils._pair(layer.stride),
            nn.modules.utils._pair(layer.kernel_size),
            nn.modules.utils._pair(layer.padding),
            strict=True,
        )
        starved |= any(s > 1 and (n < 2 or n + 2 * p < k) for n, s, k, p in pairs)

    try:
        with warnings.catch_warnings():  # a starved Linear has zero inputs: torch warns
            warnings.simplefilter("ignore", UserWarning)
            module = builder(**{k: v for k, v in knobs.items() if k in accepted}).eval()
        for layer in module.modules():
            if isinstance(layer, STRIDED):
                layer.register_forward_pre_hook(check)
        with torch.no_grad():
            module(torch.zeros((1, *shape)))
    except RuntimeError:
        return True
    return starved


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Each model's default spec with trained-looking BatchNorm, exported once per module."""
    folder = tmp_path_factory.mktemp("zoo")
    cache: dict[str, tuple[ModelHandle, Path]] = {}

    def get(name: str) -> tuple[ModelHandle, Path]:
        if name not in cache:
            handle = load_model(f"zoo:{name}")
            assert handle.module is not None
            trained_looking(handle.module)
            cache[name] = (handle, export_onnx(handle, folder / f"{name}.onnx"))
        return cache[name]

    return get


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_builds_runs_exports_and_profiles(name: str, exported: Exported) -> None:
    info = zoo_info(name)
    shape = "x".join(str(d) for d in small_input(name))
    knobs = f"input={shape}" + ("&classes=7" if info.has_classes else "")
    small = load_model(f"zoo:{name}?{knobs}").module
    assert small is not None
    out = small(torch.zeros((3, *small_input(name))))
    assert tuple(out.shape) == ((3, 7) if info.has_classes else (3, *small_input(name)))

    handle, path = exported(name)
    module = handle.module
    assert module is not None and handle.input_shape is not None
    metrics = profile(str(path), target="cortex-m4", is_latency_measured=False)
    assert metrics.macs == counted_macs(module, handle.input_shape) > 0
    assert metrics.estimate is not None
    trainable = sum(p.numel() for p in module.parameters())
    # BatchNorm is folded into the layer before it on export, so the ONNX file holds fewer
    # numbers: the scale and shift go, and a convolution without a bias gains one.
    batchnorms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    bn = sum(m.weight.numel() * 2 for m in batchnorms)
    conv_bias = sum(
        m.out_channels
        for m in module.modules()
        if isinstance(m, nn.Conv2d) and m.bias is None and batchnorms
    )
    assert metrics.params == trainable - bn + conv_bias


@pytest.mark.parametrize("name", list_models())
def test_every_default_spec_exports_with_a_dynamic_batch(name: str, exported: Exported) -> None:
    handle, path = exported(name)
    assert handle.module is not None and handle.input_shape is not None
    batch_dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        x = rng.standard_normal((batch, *handle.input_shape)).astype(np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = handle.module(torch.from_numpy(x)).numpy()
        assert got.shape == expected_output(name, batch, 10)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_scales_with_width(name: str) -> None:
    small = build_zoo_model(name, width=0.5)
    large = build_zoo_model(name, width=1.0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(large)


@pytest.mark.parametrize("name", list_models())
def test_min_size_is_the_smallest_input_the_strides_allow(name: str) -> None:
    info = zoo_info(name)
    if len(info.default_input) == 1:
        assert info.min_size == 1  # a flat input has no spatial size to limit
        return
    builder = get_model(name)
    assert not strides_starved(builder, name, info.min_size)
    assert info.min_size == 1 or strides_starved(builder, name, info.min_size - 1)
    shape = (info.default_input[0],) + (info.min_size,) * (len(info.default_input) - 1)
    out = build_zoo_model(name, input_shape=shape)(torch.zeros((2, *shape)))
    assert tuple(out.shape) == expected_output(name, 2, 10)


@pytest.mark.parametrize("name", [n for n in list_models() if zoo_info(n).min_size > 1])
def test_input_one_below_min_size_names_the_minimum(name: str) -> None:
    info = zoo_info(name)
    shape = (info.default_input[0],) + (info.min_size - 1,) * (len(info.default_input) - 1)
    spec = f"zoo:{name}?input=" + "x".join(str(d) for d in shape)
    message = f"too small for its strides; the minimum is {info.min_size} per spatial"
    with pytest.raises(InputError, match=message):
        load_model(spec)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("width", ["0", "-0.5"])
def test_width_at_or_below_zero_is_refused(name: str, width: str) -> None:
    with pytest.raises(InputError, match=f"zoo:{name}: width must be above 0, got {float(width)}"):
        load_model(f"zoo:{name}?width={width}")


def test_lenet5_params_and_macs_equal_the_hand_count(exported: Exported) -> None:
    # conv1 1->6 5x5 pad 2 on 28x28, pool, conv2 6->16 5x5, pool, fc 400-120-84-10
    params = (6 * 25 + 6) + (16 * 6 * 25 + 16)
    params += (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    macs = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    metrics = profile(str(exported("lenet5")[1]), is_latency_measured=False)
    assert (metrics.params, metrics.macs) == (params, macs) == (61_706, 416_520)


def test_lenet300_params_and_macs_equal_the_hand_count(exported: Exported) -> None:
    metrics = profile(str(exported("lenet300")[1]), is_latency_measured=False)
    assert metrics.params == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert metrics.macs == 784 * 300 + 300 * 100 + 100 * 10


def test_lenet5_caffe_params_and_macs_equal_the_hand_count(exported: Exported) -> None:
    # Caffe's lenet.prototxt: conv 20 5x5 (28 -> 24), pool (12), conv 50 5x5 (8), pool (4),
    # fc 800-500, fc 500-10; Han et al. 2016 Table 1 gives 431K weights.
    params = (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    macs = 24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10
    metrics = profile(str(exported("lenet5-caffe")[1]), is_latency_measured=False)
    assert (metrics.params, metrics.macs) == (params, macs) == (431_080, 2_293_000)
    handle = exported("lenet5-caffe")[0]
    relus = [type(layer).__name__ for layer in handle.module.modules()].count("ReLU")
    assert relus == 1  # only between the two fully connected layers, as in the prototxt


@pytest.mark.parametrize(
    ("name", "width", "params"),
    [
        # torchvision's num_params for its ImageNet weights (1000 classes, 3x224x224)
        ("mobilenet-v2", 1.0, 3_504_872),
        ("mobilenet-v3-small", 1.0, 2_542_856),
        ("squeezenet1.1", 1.0, 1_235_496),
        ("shufflenet-v2", 0.5, 1_366_792),
        ("shufflenet-v2", 1.0, 2_278_604),
        ("shufflenet-v2", 1.5, 3_503_624),
        ("shufflenet-v2", 2.0, 7_393_996),
    ],
)
def test_imagenet_configs_have_the_reference_parameter_counts(
    name: str, width: float, params: int
) -> None:
    module = build_zoo_model(name, width=width, classes=1000, input_shape=(3, 224, 224))
    assert sum(p.numel() for p in module.parameters()) == params


def test_shufflenet_interpolates_table_5_between_widths() -> None:
    assert stage_channels(1.0) == (24, 116, 232, 464, 1024)
    assert stage_channels(2.0) == (24, 244, 488, 976, 2048)
    stem, *stages, last = stage_channels(0.75)
    assert (stem, last) == (24, 1024)
    assert stages == [82, 164, 328]  # halfway between the 0.5 and 1.0 rows, even
    assert all(c % 2 == 0 for c in stage_channels(0.3)[1:4])


def test_mobilenet_v3_small_exports_hard_activations_and_counts_the_excitation(
    exported: Exported,
) -> None:
    handle, path = exported("mobilenet-v3-small")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"HardSigmoid", "HardSwish", "Mul"} <= ops
    metrics = profile(str(path), is_latency_measured=False)
    gates = [m for m in handle.module.modules() if isinstance(m, SqueezeExcite)]
    # The excitation's two 1x1 convolutions act on a 1x1 map: in x out MACs each. At 224x224
    # no other convolution has a 1x1 output.
    excitation = sum(2 * g.reduce.in_channels * g.reduce.out_channels for g in gates)
    on_1x1 = [layer for layer in metrics.layers if layer.op_type == "Conv"]
    on_1x1 = [layer for layer in on_1x1 if layer.output_shape[2:] == (1, 1)]
    assert len(gates) == 9 and len(on_1x1) == 18
    assert sum(layer.macs for layer in on_1x1) == excitation


def test_mobilenet_v2_cifar_has_at_least_10m_macs_on_32x32(exported: Exported) -> None:
    handle, path = exported("mobilenet-v2-cifar")
    assert handle.input_shape == (3, 32, 32)
    metrics = profile(str(path), is_latency_measured=False)
    assert metrics.macs >= 10_000_000
    # Four times the ImageNet-stride MobileNetV2 on the same input, give or take the classifier.
    imagenet_strides = counted_macs(build_zoo_model("mobilenet-v2"), (3, 32, 32))
    assert 3.5 < metrics.macs / imagenet_strides < 4.5


def test_autoencoder_reconstructs_its_flat_input() -> None:
    handle = load_model("zoo:ad-autoencoder?input=640")
    assert handle.input_shape == (640,) and not zoo_info("ad-autoencoder").has_classes
    out = handle.module(torch.zeros((5, 640)))
    assert tuple(out.shape) == (5, 640)
    with pytest.raises(InputError, match="input must have 1 dims like 640"):
        load_model("zoo:ad-autoencoder?input=1x640")


def test_unknown_zoo_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown zoo model 'resnet9000'.*lenet5"):
        load_model("zoo:resnet9000")


def test_unknown_spec_parameter_is_refused() -> None:
    with pytest.raises(InputError, match="unknown parameter 'widht'"):
        load_model("zoo:lenet5?widht=2")
