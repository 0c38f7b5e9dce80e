"""Folding the recorded normalization into the first layer: the file takes raw uint8 and computes
what the unfolded file computes on normalized input (parity on real test splits)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from clitools import run_cli as _run_cli
from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.export.fold import fold_preprocessing
from edgeopt.export.onnx import export_onnx
from edgeopt.measure import profile_onnx
from edgeopt.measure.runtime import make_session
from edgeopt.measure.runtime import predict
from edgeopt.target import Target
from edgeopt.testing import shared_data_dir
from edgeopt.training import train


def _trained(spec: str, data: Dataset, path: Path, *, epochs: int) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(spec, data, TrainConfig(epochs=epochs))
    finally:
        torch.set_num_threads(threads)
    return export_onnx(result.model, path)


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    return predict(make_session(path), x).reshape(len(x), -1)


def _assert_parity(original: Path, folded: Path, data: Dataset, *, atol: float = 1e-4) -> None:
    """Folded file on raw values vs original file on normalized values, every test sample."""
    raw = data.raw["test"]
    expected = _logits(original, data.normalization.apply(raw))
    got = _logits(folded, raw)
    assert np.array_equal(expected.argmax(axis=1), got.argmax(axis=1))
    assert np.max(np.abs(expected - got)) < atol


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data("digits")


@pytest.fixture(scope="module")
def cnn_fp32(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained("zoo:cnn-s", digits, tmp_path_factory.mktemp("cnn") / "cnn.onnx", epochs=3)


def test_folded_cnn_takes_uint8_and_matches_on_digits(
    cnn_fp32: Path, digits: Dataset, tmp_path: Path
) -> None:
    result = fold_preprocessing(cnn_fp32, digits, output=tmp_path / "raw.onnx")
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert [n.op_type for n in model.graph.node[:3]] == ["Cast", "Pad", "Conv"]
    assert result.top1_agreement == 1.0 and result.max_abs_diff is not None
    assert result.max_abs_diff < 1e-4 and result.samples == len(digits.labels["test"])
    _assert_parity(cnn_fp32, result.path, digits)


def test_profile_measures_a_folded_file_on_the_raw_test_split(
    cnn_fp32: Path, digits: Dataset, tmp_path: Path
) -> None:
    folded = fold_preprocessing(cnn_fp32, digits, output=tmp_path / "raw.onnx", samples=0)
    before = profile_onnx(cnn_fp32, data=digits, target=Target.from_name("cortex-m4"))
    after = profile_onnx(folded.path, data=digits, target=Target.from_name("cortex-m4"))
    assert after.accuracy == before.accuracy  # fed the uint8 samples, not normalized floats
    assert after.latency_ms is not None and after.macs == before.macs
    alone = profile_onnx(folded.path)  # no data: random uint8 input of the model's shape
    assert alone.latency_ms is not None and alone.accuracy is None


def test_fold_moves_padding_into_a_pad_of_the_raw_mean(
    cnn_fp32: Path, digits: Dataset, tmp_path: Path
) -> None:
    """Without the Pad (the conv zero-padding raw values) the borders are wrong: the Pad is
    what makes the fold exact."""
    result = fold_preprocessing(cnn_fp32, digits, output=tmp_path / "raw.onnx", samples=0)
    model = onnx.load(str(result.path))
    pad, conv = model.graph.node[1], model.graph.node[2]
    pad_value = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[pad.input[2]]
    assert float(pad_value) == pytest.approx(digits.normalization.mean[0], rel=1e-6)
    assert list(helper.get_attribute_value(a) for a in conv.attribute if a.name == "pads") == [
        [0, 0, 0, 0]
    ]
    # The naive fold: conv pads its (raw-scaled) input with zeros again.
    conv.input[0] = pad.input[0]
    conv.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
    conv.attribute.remove(next(a for a in conv.attribute if a.name == "pads"))
    model.graph.node.remove(pad)
    naive = tmp_path / "naive.onnx"
    onnx.save(model, str(naive))
    raw = digits.raw["test"]
    error = np.abs(_logits(naive, raw) - _logits(cnn_fp32, digits.normalization.apply(raw)))
    assert error.max() > 1e-2


def test_fold_into_gemm_behind_flatten(digits: Dataset, tmp_path: Path) -> None:
    mlp = _trained("zoo:lenet300", digits, tmp_path / "mlp.onnx", epochs=2)
    result = fold_preprocessing(mlp, digits, output=tmp_path / "raw.onnx")
    assert result.method.startswith("folded into Gemm")
    _assert_parity(mlp, result.path, digits)


def test_fold_with_per_channel_means_keeps_the_borders_exact(tmp_path: Path) -> None:
    """RGB with different channel means: one Pad constant cannot serve, the mean is subtracted
    in front and only the scale is folded; still exact."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(120, 3, 8, 8)).astype(np.uint8)
    x[:, 1] //= 2  # channel means now differ
    np.savez(tmp_path / "rgb.npz", x=x, y=np.arange(120) % 3)
    data = load_data(f"npz:{tmp_path / 'rgb.npz'}")
    assert len(set(data.normalization.mean)) == 3 and data.normalization.raw_dtype == "uint8"
    fp32 = _trained("zoo:cnn-s", data, tmp_path / "rgb.onnx", epochs=1)
    result = fold_preprocessing(fp32, data, output=tmp_path / "raw.onnx")
    assert "mean subtracted" in result.method
    _assert_parity(fp32, result.path, data)


def test_fold_int8_qdq_model_takes_uint8(cnn_s_int8: Any, digits: Dataset, tmp_path: Path) -> None:
    int8 = cnn_s_int8.onnx_path
    result = fold_preprocessing(int8, digits, output=tmp_path / "raw-int8.onnx")
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert result.method.startswith("prepended before the QuantizeLinear")
    assert result.top1_agreement == 1.0
    # One quantization step at most: (x - m) * (1/s) and (x - m) / s may round apart by 1 ulp.
    _assert_parity(int8, result.path, digits, atol=0.5)


def test_folded_lenet5_matches_on_fashion_mnist(tmp_path: Path) -> None:
    folder = shared_data_dir("fashion-mnist")
    if folder is None:
        pytest.skip("shared/data/fashion-mnist is not beside this checkout")
    data = load_data(f"idx:{folder}?limit=2000")  # 2,000 training images; the full 10k test
    fp32 = _trained("zoo:lenet5", data, tmp_path / "lenet5.onnx", epochs=1)
    result = fold_preprocessing(fp32, data, output=tmp_path / "raw.onnx", samples=0)
    _assert_parity(fp32, result.path, data)


def _relu_first(path: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["input"], ["r"], name="first_relu"),
            helper.make_node("Conv", ["r", "w"], ["logits"]),
        ],
        "relu-first",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2, 6, 6])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_fold_refuses_a_first_op_that_is_not_conv_or_gemm(digits: Dataset, tmp_path: Path) -> None:
    model = _relu_first(tmp_path / "relu.onnx")
    with pytest.raises(InputError, match="feeds a Relu node .*first_relu.*Conv or Gemm"):
        fold_preprocessing(model, digits, output=tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


run_cli = functools.partial(_run_cli, is_err_flat=True)


def test_cli_export_raw_input_writes_and_checks(
    cnn_fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "raw.onnx"
    args = [str(cnn_fp32), "--format", "onnx", "--raw-input", "--data", "digits", "-o", str(out)]
    code, stdout, _ = run_cli(["export", *args], capsys)
    assert code == 0 and out.exists()
    assert "top-1 agreement 100.00%" in " ".join(stdout.split())


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("relu", "feeds a Relu node"),
        ("uint8", "is uint8 already"),
        ("no-data", "--raw-input needs --format onnx and --data"),
    ],
)
def test_cli_fold_bad_input_is_one_sentence_exit_2(
    case: str,
    message: str,
    cnn_fp32: Path,
    digits: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if case == "relu":
        model = _relu_first(tmp_path / "relu.onnx")
    elif case == "uint8":
        model = fold_preprocessing(cnn_fp32, digits, output=tmp_path / "raw.onnx", samples=0).path
    else:
        model = cnn_fp32
    out = tmp_path / "out.onnx"
    data = [] if case == "no-data" else ["--data", "digits"]
    code, _, err = run_cli(
        ["export", str(model), "--format", "onnx", "--raw-input", *data, "-o", str(out)], capsys
    )
    assert code == 2 and message in err
    assert err.startswith("error: ") and err.count(". ") == 0 and "Traceback" not in err
    assert not out.exists()


def test_cli_c_export_of_a_folded_file_takes_raw_uint8(
    cnn_s_int8: Any, digits: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--format c`` on a folded file: the library takes raw uint8 and its parity runs on the
    dataset's raw test values."""
    folded = fold_preprocessing(cnn_s_int8.onnx_path, digits, output=tmp_path / "raw.onnx")
    out = tmp_path / "c"
    args = ["export", str(folded.path), "--format", "c", "-o", str(out), "--data", "digits"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    stdout = " ".join(stdout.split())
    assert "raw values (normalization folded in" in stdout
    assert "on 359 samples: top-1 agreement 100.00%" in stdout
    assert "typedef uint8_t model_input_t;" in (out / "model.h").read_text()


def test_fold_into_a_gemm_on_a_flat_input(tmp_path: Path) -> None:
    """A 2-D input straight into Gemm (no Flatten): every feature gets the normalization."""
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((5, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], transB=1, alpha=0.5)],
        "flat",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.ones(5, np.float32), "b"),
        ],
    )
    model = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(model))
    digits = load_data("digits")
    result = fold_preprocessing(model, digits.normalization, output=tmp_path / "raw.onnx")
    raw = digits.raw["test"].reshape(len(digits.labels["test"]), -1)
    normalized = digits.normalization.apply(digits.raw["test"]).reshape(len(raw), -1)
    expected, got = _logits(model, normalized), _logits(result.path, raw)
    assert np.max(np.abs(expected - got)) < 1e-4
