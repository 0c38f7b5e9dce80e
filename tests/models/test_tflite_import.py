"""Importing ``.tflite`` files (issue 15, item 1): the ONNX import computes what TensorFlow Lite
Micro and LiteRT compute on the same inputs, every example model of TFLM either imports or is
refused in one sentence naming its operator, and damaged files are refused before any work.

Parity measured when this was written (max difference of the int8 output, in steps of its scale;
float outputs relative to their largest value; top-1 agreed on every input):

| file | vs TFLM | vs LiteRT (XNNPACK) |
|---|---|---|
| hello_world_float (50 inputs) | 3.6e-7 rel | 5.4e-7 rel |
| hello_world_int8 (all 256 inputs) | 3 LSB | 0 LSB |
| micro_speech_quantized (30 random int8 feature maps) | 0 LSB | 0 LSB |
| person_detect (person.bmp, no_person.bmp, 10 random) | 2 LSB | 0 LSB |
| synthetic int8 kitchen model (16 inputs) | 1 LSB | 1 LSB (reference kernels) |

The import is exact against LiteRT's kernels; TFLM rounds its requantization its own way, and
on hello_world_int8 TFLM differs from LiteRT's own reference kernels by the same 3 steps (a one
step difference in a hidden layer is multiplied by the next layer's gain), so against TFLM the
bound per file is the one TFLM keeps with LiteRT, not one step.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import InputError
from edgeopt.testing import shared_data_dir

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

import tflite_build  # noqa: E402  (tests/ is on the path: pyproject pythonpath)
from edgeopt.measure.int8 import make_exact_session  # noqa: E402
from edgeopt.models import load_model  # noqa: E402
from edgeopt.models.tflite import tflite_to_onnx  # noqa: E402

DATA = shared_data_dir("tflite-micro")
needs_data = pytest.mark.skipif(
    DATA is None,
    reason="no shared/data/tflite-micro above this checkout (only development machines have it)",
)

#: file -> the most int8 steps the import may differ from TFLM (see the module docstring)
TFLM_STEPS = {"hello_world_int8": 3, "micro_speech_quantized": 1, "person_detect": 2}


def _tflm(path: Path) -> object:
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    return runtime.Interpreter.from_file(str(path))


def _litert(content: bytes, *, is_reference: bool = False) -> object:
    interpreter = pytest.importorskip("ai_edge_litert.interpreter")
    kind = (
        interpreter.OpResolverType.BUILTIN_REF if is_reference else interpreter.OpResolverType.AUTO
    )
    model = interpreter.Interpreter(model_content=content, experimental_op_resolver_type=kind)
    model.allocate_tensors()
    return model


def _litert_bytes(path: Path) -> bytes:
    """The file as LiteRT accepts it: person_detect's 1-D biases say quantized_dimension 3,
    which LiteRT rejects and TFLM ignores; 0 is the same quantization."""
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None and q.scale is not None and len(tensor.shape) == 1:
            q.quantizedDimension = 0
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _inputs(name: str) -> list[np.ndarray]:
    """Deterministic inputs in the file's own type and shape."""
    rng = np.random.default_rng(0)
    if name == "hello_world_float":
        return [np.array([[v]], np.float32) for v in np.linspace(0.0, 2 * math.pi, 50)]
    if name == "hello_world_int8":
        return [np.array([[v]], np.int8) for v in range(-128, 128)]
    if name == "micro_speech_quantized":  # 49x40 int8 spectrogram features, flattened
        return [rng.integers(-128, 128, (1, 1960)).astype(np.int8) for _ in range(30)]
    from PIL import Image

    assert DATA is not None
    images = [np.asarray(Image.open(DATA / f"{n}.bmp")) for n in ("person", "no_person")]
    pictures = [(i.astype(np.int16) - 128).astype(np.int8).reshape(1, 96, 96, 1) for i in images]
    return pictures + [rng.integers(-128, 128, (1, 96, 96, 1)).astype(np.int8) for _ in range(10)]


def _run_onnx(session: object, x: np.ndarray, detail: dict) -> np.ndarray:
    """The ONNX import on ``x`` (an int8 file takes the dequantized values), as the TFLite
    output's type (int8 read back through the output's scale)."""
    (scale, zero), is_int8 = _scale(detail["input"]), x.dtype == np.int8
    feed = ((x.astype(np.float32) - zero) * np.float32(scale)) if is_int8 else x
    got = session.run(None, {session.get_inputs()[0].name: feed.astype(np.float32)})[0]
    if detail["output_dtype"] != np.int8:
        return got
    scale, zero = _scale(detail["output"])
    return np.clip(np.rint(got / scale) + zero, -128, 127)


def _scale(quantization: dict) -> tuple[float, int]:
    scales, zeros = quantization["scales"], quantization["zero_points"]
    return (float(scales[0]), int(zeros[0])) if len(scales) else (1.0, 0)


def _compare(got: np.ndarray, want: np.ndarray, is_int8: bool) -> float:
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max()
    return float(diff) if is_int8 else float(diff / max(np.abs(want).max(), 1e-12))


@needs_data
@pytest.mark.parametrize("name", ["hello_world_float", *TFLM_STEPS])
def test_import_matches_tflite_micro_and_litert(name: str) -> None:
    path = DATA / f"{name}.tflite"
    tflm = _tflm(path)
    litert = _litert(_litert_bytes(path))
    session = make_exact_session(tflite_to_onnx(path))
    assert session.arithmetic is None or session.arithmetic.is_exact
    detail = {
        "input": tflm.get_input_details(0)["quantization_parameters"],
        "output": tflm.get_output_details(0)["quantization_parameters"],
        "output_dtype": tflm.get_output_details(0)["dtype"],
    }
    is_int8 = detail["output_dtype"] == np.int8
    worst_tflm = worst_litert = 0.0
    for x in _inputs(name):
        tflm.set_input(x, 0)
        tflm.invoke()
        want = tflm.get_output(0)
        litert.set_tensor(litert.get_input_details()[0]["index"], x)
        litert.invoke()
        want_litert = litert.get_tensor(litert.get_output_details()[0]["index"])
        got = _run_onnx(session, x, detail)
        assert np.argmax(got) == np.argmax(want) == np.argmax(want_litert)
        worst_tflm = max(worst_tflm, _compare(got, want, is_int8))
        worst_litert = max(worst_litert, _compare(got, want_litert, is_int8))
    if is_int8:
        assert worst_litert <= 1, f"{name}: {worst_litert} steps from LiteRT"
        assert worst_tflm <= TFLM_STEPS[name], f"{name}: {worst_tflm} steps from TFLM"
    else:
        assert worst_tflm < 1e-4 and worst_litert < 1e-4


@needs_data
def test_int8_import_is_qdq_with_the_files_own_scales() -> None:
    """person_detect: float in, QuantizeLinear with the input tensor's scale and zero point
    first, per-channel int8 weights along the output axis, int32 biases, DequantizeLinear last."""
    from onnx import numpy_helper

    model = tflite_to_onnx(DATA / "person_detect.tflite")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    first, last = model.graph.node[0], model.graph.node[-1]
    assert (first.op_type, last.op_type) == ("QuantizeLinear", "DequantizeLinear")
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 96, 96, 1]
    assert model.graph.input[0].type.tensor_type.elem_type == 1  # float
    assert np.isclose(inits[first.input[1]], 0.00784314) and inits[first.input[2]] == -1
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    producers = {out: n for n in model.graph.node for out in n.output}
    weight, bias = producers[conv.input[1]], producers[conv.input[2]]
    assert inits[weight.input[0]].dtype == np.int8 and inits[weight.input[0]].shape == (8, 1, 3, 3)
    assert inits[weight.input[1]].shape == (8,) and weight.attribute[0].i == 0  # axis 0
    assert inits[bias.input[0]].dtype == np.int32
    assert np.allclose(inits[bias.input[1]], np.float32(0.00784314) * inits[weight.input[1]])


def test_synthetic_float_operators_match_litert(tmp_path: Path) -> None:
    """The operators the example models lack, float: within 1e-4 of LiteRT, SAME and VALID
    padding, a flatten after a convolution in NHWC order."""
    samples = np.random.default_rng(1).normal(0, 1, (8, 8, 8, 3)).astype(np.float32)
    content, _ = tflite_build.calibrated_kitchen(samples)
    path = tmp_path / "kitchen.tflite"
    path.write_bytes(content)
    session = make_exact_session(tflite_to_onnx(path))
    litert = _litert(content)
    for x in samples:
        litert.set_tensor(litert.get_input_details()[0]["index"], x[None])
        litert.invoke()
        want = litert.get_tensor(litert.get_output_details()[0]["index"])
        got = session.run(None, {session.get_inputs()[0].name: x[None]})[0]
        assert _compare(got, want, False) < 1e-4


def test_synthetic_int8_operators_match_litert_within_one_step(tmp_path: Path) -> None:
    """Full int8 with per-channel weights, a requantizing QUANTIZE, an int8 RELU6 clamp inside
    int8's range (a Clip), fixed-scale LOGISTIC and SOFTMAX outputs: at most one step from
    LiteRT's reference kernels, the same class."""
    samples = np.random.default_rng(1).normal(0, 1, (16, 8, 8, 3)).astype(np.float32)
    _, content = tflite_build.calibrated_kitchen(samples)
    path = tmp_path / "kitchen_int8.tflite"
    path.write_bytes(content)
    model = tflite_to_onnx(path)
    assert "Clip" in [n.op_type for n in model.graph.node]
    session = make_exact_session(model)
    litert = _litert(content, is_reference=True)
    in_detail, out_detail = litert.get_input_details()[0], litert.get_output_details()[0]
    detail = {
        "input": in_detail["quantization_parameters"],
        "output": out_detail["quantization_parameters"],
        "output_dtype": np.int8,
    }
    scale, zero = _scale(detail["input"])
    for x in samples:
        q = np.clip(np.rint(x / scale) + zero, -128, 127).astype(np.int8)[None]
        litert.set_tensor(in_detail["index"], q)
        litert.invoke()
        want = litert.get_tensor(out_detail["index"])
        got = _run_onnx(session, q, detail)
        assert _compare(got, want, True) <= 1
        assert np.argmax(got) == np.argmax(want)


@needs_data
@pytest.mark.parametrize(
    ("name", "operator"),
    [
        ("trained_lstm_int8", "operator 0 is UNIDIRECTIONAL_SEQUENCE_LSTM"),
        ("audio_preprocessor_int8", "custom operator 'SignalWindow'"),
    ],
)
def test_unsupported_example_models_are_refused_naming_the_operator(
    name: str, operator: str
) -> None:
    with pytest.raises(InputError, match=operator) as caught:
        tflite_to_onnx(DATA / f"{name}.tflite")
    assert "\n" not in str(caught.value)


def _one_conv(**changes: object) -> bytes:
    """A valid one-layer int8 model, with ``changes`` applied to make it bad."""
    net = tflite_build.Net()
    x = net.tensor("x", (1, 4, 4, 1), kind="INT8", scale=0.1, zero=0)
    w = net.tensor(
        "w", (2, 1, 1, 1), np.ones((2, 1, 1, 1), np.int8), kind="INT8", scale=[0.1, 0.2], zero=0
    )  # noqa: E501
    y = net.tensor("y", (1, 4, 4, 2), kind="INT8", scale=changes.get("scale", 0.1), zero=0)
    options = net.options(
        "Conv2DOptions", padding=1, strideH=1, strideW=1, dilationHFactor=1, dilationWFactor=1
    )  # noqa: E501
    net.op(
        str(changes.get("op", "CONV_2D")),
        [x, w],
        [y],
        options,
        custom=str(changes.get("custom", "")),
    )
    return net.finish([x], [y], subgraphs=int(changes.get("subgraphs", 1)))


def test_a_valid_synthetic_model_imports(tmp_path: Path) -> None:
    path = tmp_path / "ok.tflite"
    path.write_bytes(_one_conv())
    assert [n.op_type for n in tflite_to_onnx(path).graph.node].count("Conv") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no TFL3 identifier"),
        (b"\x00" * 4 + b"ONNX" + b"\x00" * 32, "no TFL3 identifier"),
        (_one_conv()[:64], "damaged or truncated"),
        (_one_conv(subgraphs=2), "2 subgraphs"),
        (_one_conv(op="CUSTOM", custom="MyOp$(rm -rf)"), "custom operator 'MyOp__rm_-rf_'"),
        (_one_conv(op="TRANSPOSE_CONV"), "operator 0 is TRANSPOSE_CONV"),
        (_one_conv(scale=0.0), "zero, negative or non-finite scale"),
        (_one_conv(scale=float("nan")), "zero, negative or non-finite scale"),
    ],
)
def test_bad_files_are_one_sentence(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message.replace("$", r"\$").replace("(", r"\(")) as caught:
        tflite_to_onnx(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite"]


def test_a_buffer_outside_the_file_is_refused(tmp_path: Path) -> None:
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(_one_conv(), 0)
    weight = model.subgraphs[0].tensors[1].buffer
    model.buffers[weight].data, model.buffers[weight].offset = None, 1 << 20
    model.buffers[weight].size = 2
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "outside.tflite"
    path.write_bytes(bytes(builder.Output()))
    with pytest.raises(InputError, match="points outside the file"):
        tflite_to_onnx(path)


def test_handle_is_named_after_the_file_and_its_onnx_is_private(tmp_path: Path) -> None:
    path = tmp_path / "one_conv.tflite"
    path.write_bytes(_one_conv())
    handle = load_model(str(path))
    assert (handle.name, handle.history) == ("one_conv", ("tflite:one_conv.tflite",))
    assert handle.metadata["edgeopt.source"] == "tflite:one_conv.tflite"
    assert handle.onnx_path is not None and handle.onnx_path.is_file()
    assert tmp_path not in handle.onnx_path.parents  # never beside the user's file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_conv.tflite"]
    assert handle.input_shape == (4, 4, 1)


def test_the_private_folder_is_removed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "one_conv.tflite"
    path.write_bytes(_one_conv())
    code = (
        "import sys; from edgeopt.models import load_model; "
        "print(load_model(sys.argv[1]).onnx_path)"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )
    written = Path(done.stdout.strip())
    assert written.suffix == ".onnx" and not written.exists() and not written.parent.exists()


@needs_data
@pytest.mark.parametrize("name", ["hello_world_int8", "micro_speech_quantized", "person_detect"])
def test_imported_int8_examples_export_to_c_bit_exact(tmp_path: Path, name: str) -> None:
    """The C library of the import computes the exact int8 session's integers, every tensor.
    (person_detect's int8 activations take the session's U8U8 copy: ONNX Runtime's depthwise
    convolution of signed activations is a step off the integers there.)"""
    from edgeopt.export.c import check_c
    from edgeopt.export.c import export_c
    from edgeopt.export.c import has_compiler

    if not has_compiler():
        pytest.skip("no gcc on this machine")
    handle = load_model(str(DATA / f"{name}.tflite"))
    library = export_c(handle.onnx_path, tmp_path / "c")
    tflm = _tflm(DATA / f"{name}.tflite")
    scale, zero = _scale(tflm.get_input_details(0)["quantization_parameters"])
    q = np.stack([x[0] for x in _inputs(name)[:16]]).astype(np.float32)
    parity = check_c(library, (q - zero) * np.float32(scale))
    assert parity.is_exact, parity.tensor_lsb


def test_int8_with_float_input_and_output_matches_litert(tmp_path: Path) -> None:
    """QUANTIZE first and DEQUANTIZE last: the import takes and returns float in the file's
    NHWC shapes, its int8 convolution (zero point 3 in, -20 out, RELU as the clamp at the
    output's zero point) equal to LiteRT's on every value, SAME padding at stride 2."""
    content = tflite_build.float_io_conv()
    path = tmp_path / "float_io.tflite"
    path.write_bytes(content)
    model = tflite_to_onnx(path)
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 2, 2, 3]
    session = make_exact_session(model)
    litert = _litert(content, is_reference=True)
    for x in np.random.default_rng(5).normal(0, 1, (20, 1, 6, 6, 2)).astype(np.float32):
        litert.set_tensor(litert.get_input_details()[0]["index"], x)
        litert.invoke()
        want = litert.get_tensor(litert.get_output_details()[0]["index"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert np.abs(got - want).max() <= 0.03 * 1.001  # at most one step of the output


def test_float16_weights_are_folded_and_a_fused_tanh_is_left_out_as_litert_does(
    tmp_path: Path,
) -> None:
    """A fused TANH on a convolution is no activation in TFLite's float kernels
    (CalculateActivationRange clamps only the RELUs): LiteRT's output is the convolution's."""
    content = tflite_build.float16_weights_conv()
    path = tmp_path / "fp16.tflite"
    path.write_bytes(content)
    model = tflite_to_onnx(path)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "Conv", "Transpose"]
    session = make_exact_session(model)
    litert = _litert(content)
    for x in np.random.default_rng(7).normal(0, 1, (5, 1, 5, 5, 2)).astype(np.float32):
        litert.set_tensor(litert.get_input_details()[0]["index"], x)
        litert.invoke()
        want = litert.get_tensor(litert.get_output_details()[0]["index"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert _compare(got, want, False) < 1e-4
