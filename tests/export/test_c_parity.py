"""The C exporter: the generated library compiles cleanly and computes what ONNX Runtime does.

Each test exports an int8 QDQ model, compiles it with ``gcc -std=c99 -Wall -Wextra -Werror
-O2`` and a harness, runs it on samples and compares it with ONNX Runtime running the same
file on edgeopt's exact int8 path: the same top-1 on every sample, and every int8 tensor of the
schedule equal (0 LSB).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from edgeopt.errors import InputError
from edgeopt.export.c import CExport
from edgeopt.export.c import check_c
from edgeopt.export.c import export_c
from edgeopt.export.c import measure_c
from edgeopt.export.c._arena import liveness
from edgeopt.export.c._program import fixed_point

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("size") is None,
    reason="gcc and binutils' size are not installed (Debian: apt-get install gcc)",
)


def _assert_parity(export: CExport, samples: np.ndarray) -> None:
    parity = check_c(export, samples)
    assert parity.samples == len(samples)
    assert parity.top1_agreement == 1.0
    assert parity.max_tensor_lsb == 0, parity.tensor_lsb
    assert parity.is_exact and parity.arithmetic is not None and parity.arithmetic.is_exact
    assert len(parity.tensor_lsb) >= 3  # the intermediate tensors were compared too
    if parity.max_output_steps is not None:
        assert parity.max_output_steps <= 1.0


@needs_gcc
def test_cnn_s_matches_onnx_runtime_on_the_digits_test_split(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    export = export_c(cnn_s_int8.onnx_path, tmp_path / "c")
    assert (export.input_type, export.output_type) == ("uint8", "float32")
    assert export.input_shape == (1, 8, 8) and export.output_shape == (10,)
    _assert_parity(export, cnn_s_int8.samples)


@needs_gcc
def test_lenet5_matches_onnx_runtime(lenet5_int8: Any, tmp_path: Path) -> None:
    export = export_c(lenet5_int8.onnx_path, tmp_path / "c")
    _assert_parity(export, lenet5_int8.samples)


@needs_gcc
def test_depthwise_and_pointwise_blocks_match_onnx_runtime(
    ds_cnn_int8: Any, tmp_path: Path
) -> None:
    export = export_c(ds_cnn_int8.onnx_path, tmp_path / "c")
    functions = {step.function for step in export.program.steps}  # type: ignore[union-attr]
    assert {"edgeopt_depthwise_conv2d", "edgeopt_pointwise_conv2d"} <= functions
    _assert_parity(export, ds_cnn_int8.samples)


@needs_gcc
def test_residual_adds_match_onnx_runtime(resnet8_int8: Any, tmp_path: Path) -> None:
    export = export_c(resnet8_int8.onnx_path, tmp_path / "c")
    functions = [step.function for step in export.program.steps]  # type: ignore[union-attr]
    assert functions.count("edgeopt_add") == 3
    _assert_parity(export, resnet8_int8.samples)


@pytest.fixture(scope="module")
def kitchen_sink_int8(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small net using every other kernel: grouped and dilated convolution, a depth
    multiplier, both average pools, padded max pool, Sigmoid / LeakyRelu / Clip / HardSwish, a
    squeeze-excite gate (Mul), a channel split and shuffle, concatenation at two scales,
    transpose, Softmax."""
    import torch
    from torch import nn

    from edgeopt.export.onnx import export_onnx
    from edgeopt.models import ModelHandle
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    class Sink(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
            self.depthwise = nn.Conv2d(8, 16, 3, padding=1, groups=8)
            self.pointwise = nn.Conv2d(16, 8, 1)
            self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
            self.avg_pad = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True)
            self.max = nn.MaxPool2d(3, stride=2, padding=1)
            self.fc = nn.Linear(64, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))
            left, right = torch.chunk(x, 2, dim=1)
            x = torch.cat([right, left], dim=1).reshape(1 * x.shape[0], 2, 4, 4, 4)
            x = x.transpose(1, 2).reshape(x.shape[0], 8, 4, 4)  # channel shuffle
            y = torch.sigmoid(self.grouped(x))
            z = self.pointwise(torch.clamp(self.depthwise(x), 0, 6))
            a = self.avg(y) + nn.functional.leaky_relu(z, 0.1)
            a = a * torch.sigmoid(a.mean((2, 3), keepdim=True))  # a squeeze-excite gate
            b = torch.cat([self.avg_pad(a), self.max(nn.functional.hardswish(x))], dim=1)
            b = b.transpose(2, 3)
            return torch.softmax(self.fc(torch.flatten(b, 1)), dim=1)

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sink")
    handle = ModelHandle(name="sink", spec="sink", input_shape=(3, 8, 8), module=Sink().eval())
    fp32 = export_onnx(handle, folder / "fp32.onnx")
    x = np.random.default_rng(0).standard_normal((128, 3, 8, 8)).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=np.arange(128) % 5)
    data = f"npz:{folder / 'data.npz'}"
    result = quantize(str(fp32), PTQConfig(), data=data, output=folder / "int8.onnx")
    return SimpleNamespace(onnx_path=result.model.onnx_path, samples=x)


@needs_gcc
def test_pooling_tables_split_concat_and_softmax_match_onnx_runtime(
    kitchen_sink_int8: Any, tmp_path: Path
) -> None:
    export = export_c(kitchen_sink_int8.onnx_path, tmp_path / "c")
    functions = {step.function for step in export.program.steps}  # type: ignore[union-attr]
    assert {
        "edgeopt_conv2d",
        "edgeopt_depthwise_conv2d",
        "edgeopt_avg_pool2d",
        "edgeopt_max_pool2d",
        "edgeopt_lookup",
        "edgeopt_split",
        "edgeopt_concat",
        "edgeopt_transpose",
        "edgeopt_add",
        "edgeopt_mul",
        "edgeopt_global_avg_pool",
        "edgeopt_softmax_f32",
    } <= functions
    assert export.output_type == "float32"  # Softmax stays float
    _assert_parity(export, kitchen_sink_int8.samples)


@needs_gcc
def test_build_sizes_put_weights_in_flash_and_the_arena_in_ram(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    export = export_c(cnn_s_int8.onnx_path, tmp_path / "c")
    size = measure_c(export)
    assert size.bss_bytes == export.arena_bytes  # the arena is the only RAM
    assert size.data_bytes == 0
    assert size.objects["model_weights.c"]["rodata"] >= export.weights_bytes
    assert size.flash_bytes > export.weights_bytes + 1000  # plus the kernels' code
    assert size.ram_bytes == export.arena_bytes


def test_arena_places_live_buffers_apart_within_the_liveness_peak(
    resnet8_int8: Any, tmp_path: Path
) -> None:
    export = export_c(resnet8_int8.onnx_path, tmp_path / "c")
    assert export.plan is not None and export.program is not None
    placements = list(export.plan.placements.values())
    for i, a in enumerate(placements):
        for b in placements[i + 1 :]:
            if a.first <= b.last and b.first <= a.last:  # live together: no shared bytes
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset
    assert all(p.offset % 4 == 0 for p in placements)
    live = liveness(export.program)
    assert set(live) == set(export.plan.placements)
    assert export.arena_bytes == export.plan.peak_live_bytes  # no fragmentation here
    assert export.arena_bytes >= export.peak_ram_bytes  # the graph's own liveness peak


def test_export_is_deterministic_and_self_contained(cnn_s_int8: Any, tmp_path: Path) -> None:
    first = export_c(cnn_s_int8.onnx_path, tmp_path / "a")
    second = export_c(cnn_s_int8.onnx_path, tmp_path / "b", prefix="digits")
    names = sorted(p.name for p in first.out_dir.iterdir())
    assert names == [
        "edgeopt_kernels.c",
        "edgeopt_kernels.h",
        "model.c",
        "model.h",
        "model.json",
        "model_weights.c",
    ]
    assert sorted(p.name for p in first.files) == names
    again = export_c(cnn_s_int8.onnx_path, tmp_path / "a", is_forced=True)
    assert (again.out_dir / "model.c").read_text() == (first.out_dir / "model.c").read_text()
    header = (second.out_dir / "digits.h").read_text()
    assert "int digits_run(const digits_input_t *input, digits_output_t *output);" in header
    assert f"#define DIGITS_ARENA_BYTES {second.arena_bytes}" in header
    assert "malloc" not in (second.out_dir / "digits.c").read_text()
    assert (
        "static int8_t digits_arena[DIGITS_ARENA_BYTES];"
        in (second.out_dir / "digits.c").read_text()
    )


def test_export_refuses_a_non_empty_folder_and_replaces_it_when_forced(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_c(cnn_s_int8.onnx_path, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    export_c(cnn_s_int8.onnx_path, out, is_forced=True)
    assert not (out / "keep.txt").exists() and (out / "model.c").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary folder left behind


def test_a_bad_prefix_is_refused_before_anything_is_written(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="C identifier"):
        export_c(cnn_s_int8.onnx_path, tmp_path / "c", prefix="my-model")
    assert not (tmp_path / "c").exists()


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=2.0**-32, max_value=2.0**20, allow_nan=False, width=32))
def test_fixed_point_multiplier_is_exact_for_a_float32(multiplier: float) -> None:
    m, shift = fixed_point(multiplier)
    assert 2**30 <= m < 2**31
    assert 1 <= shift <= 62
    assert math.ldexp(m, -shift) == multiplier


def test_a_tiny_multiplier_keeps_the_largest_shift() -> None:
    m, shift = fixed_point(2.0**-50 * 1.5)
    assert shift == 62 and math.ldexp(m, -shift) == pytest.approx(2.0**-50 * 1.5, rel=1e-3)
    assert fixed_point(0.0) == (0, 1)


def _fold(quantized: Path, data: Any, out: Path) -> Path:
    from edgeopt.export.fold import fold_preprocessing

    return fold_preprocessing(quantized, data, output=out, samples=0).path


@needs_gcc
@pytest.mark.parametrize("case", ["digits", "fashion-mnist"])
def test_folded_model_takes_raw_uint8_and_matches_onnx_runtime(
    case: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A model folded to raw input (``--raw-input``): the library takes the dataset's raw uint8
    test images and matches ONNX Runtime running the folded file on the same bytes."""
    from edgeopt.data import load_data
    from edgeopt.testing import shared_data_dir

    if case == "digits":
        quantized, data = request.getfixturevalue("cnn_s_int8"), load_data("digits")
    else:
        fashion = shared_data_dir("fashion-mnist")
        if fashion is None:
            pytest.skip("shared/data/fashion-mnist is not beside this checkout")
        quantized = request.getfixturevalue("lenet5_int8")
        data = load_data(f"idx:{fashion}?limit=2000")  # the fixture's data: same normalization
    folded = _fold(quantized.onnx_path, data, tmp_path / "raw.onnx")
    export = export_c(folded, tmp_path / "c")
    assert export.has_raw_input and export.input_type == "uint8"
    assert export.input_scale is None and export.input_zero_point is None
    header = (export.out_dir / "model.h").read_text()
    assert "typedef uint8_t model_input_t;" in header and "#define MODEL_INPUT_IS_RAW 1" in header
    assert "no normalization" in header and "quantize_input" not in header
    first = export.program.steps[0]  # type: ignore[union-attr]
    assert first.function == "edgeopt_lookup_u8" and first.args[0] == 1  # one table
    assert [a.values.size for a in first.arrays] == [256]
    raw = data.raw["test"][:300]
    assert raw.dtype == np.uint8
    _assert_parity(export, raw)


@needs_gcc
def test_raw_input_table_equals_onnx_runtime_on_all_256_values(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    """Every table entry, not only the digits' 0..16: four 8x8 images hold the values 0..255."""
    from edgeopt.data import load_data

    export = export_c(
        _fold(cnn_s_int8.onnx_path, load_data("digits"), tmp_path / "raw.onnx"), tmp_path / "c"
    )
    every_value = np.arange(256, dtype=np.uint8).reshape(4, 1, 8, 8)
    parity = check_c(export, every_value)
    first = export.program.steps[0].output  # type: ignore[union-attr]
    assert parity.tensor_lsb[first] == 0  # the table is ONNX Runtime's own QuantizeLinear
    assert parity.top1_agreement == 1.0 and parity.max_tensor_lsb == 0


@needs_gcc
@pytest.mark.parametrize("raw_dtype", ["uint8", "int8"])
def test_per_channel_normalization_folds_to_one_table_per_channel(
    raw_dtype: str, resnet8_int8: Any, tmp_path: Path
) -> None:
    """RGB means and deviations differ per channel: three tables of 256, indexed by the uint8
    value or the int8 value + 128."""
    from edgeopt.data import Normalization

    info = np.iinfo(raw_dtype)
    centre = (int(info.min) + int(info.max)) / 2
    norm = Normalization(
        mean=(centre - 20, centre, centre + 15), std=(60.0, 45.0, 70.0), raw_dtype=raw_dtype
    )
    export = export_c(_fold(resnet8_int8.onnx_path, norm, tmp_path / "raw.onnx"), tmp_path / "c")
    first = export.program.steps[0]  # type: ignore[union-attr]
    function = {"uint8": "edgeopt_lookup_u8", "int8": "edgeopt_lookup_s8"}[raw_dtype]
    assert first.function == function and first.args == (3, 256)
    assert export.input_type == raw_dtype and first.arrays[0].values.size == 3 * 256
    rng = np.random.default_rng(8)
    raw = rng.integers(info.min, int(info.max) + 1, size=(64, 3, 16, 16)).astype(raw_dtype)
    _assert_parity(export, raw)
    assert check_c(export, raw[:4]).tensor_lsb[first.output] == 0  # type: ignore[index]


@needs_gcc
def test_raw_input_refuses_normalized_float_samples(cnn_s_int8: Any, tmp_path: Path) -> None:
    from edgeopt.data import load_data

    digits = load_data("digits")
    export = export_c(_fold(cnn_s_int8.onnx_path, digits, tmp_path / "raw.onnx"), tmp_path / "c")
    with pytest.raises(InputError, match="raw uint8 input, so the samples must be integers"):
        check_c(export, digits.arrays("test")[0][:8])


def _user_net(folder: Path, module: Any, shape: tuple[int, ...]) -> SimpleNamespace:
    """A PyTorch module exported, quantized by edgeopt's PTQ on 64 random samples."""
    from edgeopt.export.onnx import export_onnx
    from edgeopt.models import ModelHandle
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    handle = ModelHandle(name="net", spec="net", input_shape=shape, module=module.eval())
    fp32 = export_onnx(handle, folder / "fp32.onnx")
    x = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=np.arange(64) % 4)
    data = f"npz:{folder / 'data.npz'}"
    result = quantize(str(fp32), PTQConfig(), data=data, output=folder / "int8.onnx")
    return SimpleNamespace(onnx_path=result.model.onnx_path, samples=x)


def _conv1d_net() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv1d(8, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(12, 12, 3, stride=2, groups=12),
        nn.ReLU(),
        nn.Conv1d(12, 16, 1),
        nn.Flatten(),
        nn.Linear(16 * 7, 4),
    )


def _upsample_net() -> Any:
    import torch
    from torch import nn

    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.merge = nn.Conv2d(12, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skip = torch.relu(self.stem(x))
            y = torch.cat([self.up(torch.relu(self.down(skip))), skip], dim=1)
            # the mean without keepdim, as torchvision's MNASNet and ShuffleNetV2 end
            return self.fc(torch.relu(self.merge(y)).mean((2, 3)))

    return Up()


def _conv_transpose_net() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ConvTranspose2d(8, 4, 2, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 4),
    )


_USER_NETS = {
    "conv1d": (_conv1d_net, (8, 16), "edgeopt_depthwise_conv2d"),
    "upsample": (_upsample_net, (3, 8, 8), "edgeopt_resize_nearest"),
    "convtranspose": (_conv_transpose_net, (3, 8, 8), "edgeopt_conv_transpose2d"),
}


@needs_gcc
@pytest.mark.parametrize("case", sorted(_USER_NETS))
def test_conv1d_nearest_upsample_and_conv_transpose_match_onnx_runtime(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conv1d lowers as a convolution of height 1, a nearest Upsample as ONNX Runtime's own
    row and column choice, a mean over H and W without keepdim as a global pool, ConvTranspose
    as the integer sum ONNX Runtime computes on the exact path (its QDQ ConvTranspose rewritten
    as a QLinearConv over the zero-inserted input)."""
    import torch

    torch.manual_seed(0)
    factory, shape, function = _USER_NETS[case]
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    net = _user_net(tmp_path, factory(), shape)
    assert not list(work.iterdir())  # the Upsample's shape inference wrote nothing here
    export = export_c(net.onnx_path, tmp_path / "c")
    functions = [step.function for step in export.program.steps]  # type: ignore[union-attr]
    assert function in functions
    _assert_parity(export, net.samples)
    if case == "upsample":  # x.mean((2, 3)) is a global pool and a free Flatten
        assert "edgeopt_global_avg_pool" in functions
    if case == "convtranspose":
        assert functions.count("edgeopt_conv_transpose2d") == 2
        arithmetic = check_c(export, net.samples[:2]).arithmetic
        assert arithmetic is not None and "ConvTranspose as an integer convolution" in (
            arithmetic.reason
        )


def test_a_refused_operator_names_its_node_and_the_nearest_alternative(tmp_path: Path) -> None:
    from edgeopt.export.c._lower import REFUSAL_HINTS
    from edgeopt.export.c._lower import SUPPORTED_OPS
    from edgeopt.export.c._lower import refusal

    assert not set(REFUSAL_HINTS) & set(SUPPORTED_OPS)
    shape = SimpleNamespace(op_type="Shape", name="Shape_3", output=["s"])
    assert refusal(shape) == (
        "node 'Shape_3' (Shape): unsupported operator; the C export needs static shapes; export "
        "the model with fixed input shapes (torch.onnx.export with dynamo and no dynamic axes) "
        "so Shape folds away."
    )
    div = refusal(SimpleNamespace(op_type="Div", name="LayerNorm", output=["d"]))
    assert div.startswith("node 'LayerNorm' (Div): unsupported operator; element-wise division")
    assert "replace LayerNorm with BatchNorm" in div
    other = refusal(SimpleNamespace(op_type="Hardmax", name="", output=["h"]))
    assert other.startswith("node 'h' (Hardmax): unsupported operator; the C exporter supports")
