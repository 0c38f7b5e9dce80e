from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from torch import nn

from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.measure import profile_onnx
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.stages.quantize import DynamicConfig
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import quantize
from edgeopt.stages.quantize.calibrate import CALIBRATION_METHODS


def _accuracy(path: Path, data: Dataset) -> float:
    metrics = profile_onnx(path, data=data, is_latency_measured=False)
    assert metrics.accuracy is not None
    return metrics.accuracy


def _with_calib(data: Dataset, x: np.ndarray) -> Dataset:
    raw = dict(data.raw)
    labels = dict(data.labels)
    raw["calib"], labels["calib"] = x, np.zeros(len(x), dtype=np.int64)
    return replace(data, raw=raw, labels=labels)


@pytest.fixture(scope="module")
def fp32_accuracy(cnn_s) -> float:
    return _accuracy(cnn_s.onnx_path, cnn_s.data)


@pytest.fixture(scope="module")
def lenet300(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> Path:
    """LeNet-300-100 on 8x8 digits (untrained: sizes do not depend on training)."""
    handle = load_model("zoo:lenet300", data=digits)
    return export_onnx(handle, tmp_path_factory.mktemp("lenet300") / "fp32.onnx")


@pytest.mark.parametrize("calibration", CALIBRATION_METHODS)
def test_int8_accuracy_is_within_1pp_of_fp32(
    calibration: str, cnn_s, fp32_accuracy: float, tmp_path: Path
) -> None:
    out = tmp_path / "int8.onnx"
    result = quantize(
        str(cnn_s.onnx_path), PTQConfig(calibration=calibration), data=cnn_s.data, output=out
    )
    assert result.model.onnx_path == out and result.float_nodes == ()
    assert abs(_accuracy(out, cnn_s.data) - fp32_accuracy) <= 0.01


def test_cle_and_bias_correction_keep_accuracy(cnn_s, fp32_accuracy: float, tmp_path: Path) -> None:
    config = PTQConfig(is_equalized=True, is_bias_corrected=True, is_per_channel=False)
    quantize(str(cnn_s.onnx_path), config, data=cnn_s.data, output=tmp_path / "q.onnx")
    assert abs(_accuracy(tmp_path / "q.onnx", cnn_s.data) - fp32_accuracy) <= 0.01


def test_int8_file_is_at_least_3x_smaller_and_int4_smaller_still(
    lenet300: Path, digits: Dataset, tmp_path: Path
) -> None:
    quantize(str(lenet300), PTQConfig(), data=digits, output=tmp_path / "int8.onnx")
    quantize(str(lenet300), PTQConfig(bits=4), data=digits, output=tmp_path / "int4.onnx")
    fp32, int8, int4 = (
        profile_onnx(p, is_latency_measured=False).size_bytes
        for p in (lenet300, tmp_path / "int8.onnx", tmp_path / "int4.onnx")
    )
    assert fp32 >= 3 * int8
    assert int4 < 0.7 * int8


def test_pytorch_model_is_exported_then_quantized(digits: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "cnn.onnx"
    result = quantize("zoo:cnn-s", PTQConfig(calibration="minmax"), data=digits, output=out)
    assert result.model.history[-1].startswith("quantize.ptq(calibration=minmax, bits=8")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["edgeopt.quantize"])["kind"] == "quantize.ptq"
    assert json.loads(meta["edgeopt.history"])[0] == "zoo:cnn-s"
    assert result.ranges["input"][0] < 0 < result.ranges["input"][1]


def test_input_onnx_file_is_left_unchanged(cnn_s, tmp_path: Path) -> None:
    before = hashlib.sha256(cnn_s.onnx_path.read_bytes()).hexdigest()
    config = PTQConfig(is_equalized=True, is_bias_corrected=True)
    quantize(str(cnn_s.onnx_path), config, data=cnn_s.data, output=tmp_path / "q.onnx")
    assert hashlib.sha256(cnn_s.onnx_path.read_bytes()).hexdigest() == before


def test_an_already_quantized_file_is_refused_before_calibration(cnn_s, tmp_path: Path) -> None:
    """Quantizing a QDQ file again calibrated quantized values (minutes, and a second rounding
    stacked on the first): one sentence instead, nothing written."""
    int8 = quantize(str(cnn_s.onnx_path), data=cnn_s.data, output=tmp_path / "q.onnx")
    again = tmp_path / "again.onnx"
    with pytest.raises(InputError, match=r"already quantized .*QuantizeLinear.*float source"):
        quantize(str(int8.model.onnx_path), data=cnn_s.data, output=again)
    assert not again.exists()


def test_output_over_the_input_file_is_refused(cnn_s) -> None:
    with pytest.raises(InputError, match="overwrite the input"):
        quantize(str(cnn_s.onnx_path), data=cnn_s.data, output=cnn_s.onnx_path)


def test_operator_without_int8_kernel_is_named_in_float_nodes(
    digits: Dataset, tmp_path: Path
) -> None:
    module = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )
    handle = ModelHandle(name="tanh-net", spec="tanh-net", input_shape=(1, 8, 8), module=module)
    result = quantize(handle, PTQConfig(), data=digits, output=tmp_path / "q.onnx")
    assert len(result.float_nodes) == 1 and result.float_nodes[0].endswith("(Tanh)")
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert json.loads(meta["edgeopt.float_nodes"]) == list(result.float_nodes)


@pytest.mark.parametrize("samples", [0, 1])
def test_too_small_calibration_split_is_refused_and_nothing_written(
    cnn_s, samples: int, tmp_path: Path
) -> None:
    data = _with_calib(cnn_s.data, cnn_s.data.raw["calib"][:samples])
    out = tmp_path / "q.onnx"
    with pytest.raises(InputError, match=f"has {samples} sample"):
        quantize(str(cnn_s.onnx_path), data=data, output=out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_calibration_data_is_refused_and_nothing_written(
    cnn_s, bad: float, tmp_path: Path
) -> None:
    raw = cnn_s.data.raw["calib"].astype(np.float32)
    raw[3, 0, 2, 2] = bad
    data = _with_calib(cnn_s.data, raw)
    with pytest.raises(InputError, match="NaN or infinite"):
        quantize(str(cnn_s.onnx_path), data=data, output=tmp_path / "q.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bits", [3, 16])
def test_bits_outside_4_and_8_are_refused(bits: int) -> None:
    with pytest.raises(InputError, match=f"bits must be 4 or 8, got {bits}"):
        PTQConfig(bits=bits)


def test_unknown_excluded_node_is_refused_and_nothing_written(cnn_s, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'conv_that_is_not_there'"):
        quantize(
            str(cnn_s.onnx_path),
            PTQConfig(exclude=("conv_that_is_not_there",)),
            data=cnn_s.data,
            output=tmp_path / "q.onnx",
        )
    assert list(tmp_path.iterdir()) == []


def test_static_ptq_needs_data(cnn_s, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs data"):
        quantize(str(cnn_s.onnx_path), PTQConfig(), output=tmp_path / "q.onnx")


@pytest.mark.parametrize(
    "config",
    [
        PTQConfig(calibration="entropy", bits=4, is_adarounded=True, exclude=("fc",)),
        DynamicConfig(is_per_channel=True),
    ],
)
def test_configs_survive_a_dict_round_trip(config: PTQConfig | DynamicConfig) -> None:
    raw = json.loads(json.dumps(config.to_dict()))  # tuples become lists on the way
    assert type(config).from_dict(raw) == config


def test_dynamic_quantization_writes_integer_matmuls(lenet300: Path, tmp_path: Path) -> None:
    result = quantize(str(lenet300), DynamicConfig(), output=tmp_path / "dyn.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "dyn.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert all(name.endswith(("(Relu)", "(Reshape)", "(Flatten)")) for name in result.float_nodes)
