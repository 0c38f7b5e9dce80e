"""The ``.tflite`` writer: TensorFlow Lite Micro runs what edgeopt wrote, and computes what
edgeopt's exact int8 reference computes up to TFLite Micro's own rounding.

Each zoo model is quantized by PTQ (the shared fixtures: cnn-s trained on digits, the others
briefly trained on fixed inputs), written with :func:`write_tflite` and run in the real TFLite
Micro interpreter (``tflite_micro.python.tflite_micro.runtime``) sample by sample against
:func:`~edgeopt.measure.int8.make_exact_session` on the QDQ file.

Why not 0 LSB everywhere: TFLite Micro requantizes an int32 sum with a 31-bit fixed-point
multiplier and *two* roundings (gemmlowp's ``SaturatingRoundingDoublingHighMul`` to
``2^-shift``, then ``RoundingDivideByPOT``, half away from zero;
``tensorflow/lite/kernels/internal/common.h``, ``MultiplyByQuantizedMultiplier``), where ONNX
Runtime, and so the exact reference, multiplies by the float32 ratio of the scales and rounds
once, half to even. A value within ``2^-(shift+1)`` below a half step (shift about 8 to 10
for these layers) rounds up in TFLite Micro and down in the reference: measured on cnn-s's
first convolution, 97 of 102,400 outputs (0.095%), all with a fraction in [0.4985, 0.4999).
Such a step then moves the sums of the layers after it (a global average over 16 values
crosses a rounding boundary more often: 3.6% of cnn-s's last convolution outputs, 15% of its
mean, 3.3% of its logits; never more than 1 LSB). ADD rescales both inputs with a 20-bit left
shift (``add_common.cc``) where the reference rounds once.

The zoo files end in a fully connected layer whose float logits (ONNX Runtime's QGemm) have
no scale in the QDQ file; the int8 output's scale comes from the samples' logits (calibration),
so one output step is a fraction of a logit and the same real difference is more steps there
(resnet8: 2 LSB). Two measures of top-1: against the reference's logits quantized to the same
int8 grid (the arithmetic; a 1-LSB step can flip a near-tie), and against its float logits
(also what 256 output levels lose: logits closer than a step tie). Measured on these fixtures
(max LSB, share of outputs differing, top-1 int8 / float, samples): cnn-s 1, 7.9%, 100% /
99.7%, 359; lenet5 1, 1.4%, 99.7% / 96.3%, 300; ds-cnn-s 0, 0%, 100% / 100%, 40; resnet8 2,
38.8%, 100% / 100%, 40; mobilenet-v1 0, 0%, 100% / 100%, 40; mobilenet-v2 1, 21.3%, 100% /
100%, 40; shufflenet-v2 (not an MLPerf model: its TRANSPOSE and SPLIT_V, and the QUANTIZE that
brings each concat input to one scale, fixed point where the reference rounds once) 2, 54.4%,
100% / 100%, 40. The bounds below hold these with a margin.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx import numpy_helper

from edgeopt.errors import InputError
from edgeopt.export.tflite import check_tflite
from edgeopt.export.tflite import write_tflite

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

#: model -> (largest output difference in LSB, share of outputs that may differ), measured
#: with a margin (see the docstring)
BOUNDS = {
    "cnn-s": (1, 0.12),
    # 1.4% on Fashion-MNIST (10 outputs x 300 samples); 16.3% without ../shared, on the
    # fixture's fixed random inputs (4 classes x 52 samples: each differing value weighs more)
    "lenet5": (1, 0.25),
    "ds-cnn-s": (1, 0.05),
    "resnet8": (2, 0.5),
    "mobilenet-v1": (1, 0.05),
    "mobilenet-v2": (1, 0.3),
    "shufflenet": (2, 0.7),  # channel shuffles: TRANSPOSE, SPLIT_V, a QUANTIZE per concat
}

ZOO = ("cnn-s", "lenet5", "ds-cnn-s", "resnet8", "mobilenet-v1", "mobilenet-v2", "shufflenet")


def _quantized(name: str, request: pytest.FixtureRequest) -> Any:
    fixture = {
        "cnn-s": "cnn_s_int8",
        "lenet5": "lenet5_int8",
        "ds-cnn-s": "ds_cnn_int8",
        "resnet8": "resnet8_int8",
    }.get(name)
    if fixture is not None:
        return request.getfixturevalue(fixture)
    return request.getfixturevalue("zoo_family_int8")(name)


def _model(path: Path) -> Any:
    return schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def _first_quantize(path: Path) -> tuple[float, int]:
    """Scale and int8 zero point of the QDQ file's first QuantizeLinear (the graph input's)."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    zero = inits[node.input[2]]
    return float(inits[node.input[1]]), int(zero) - (128 if zero.dtype == np.uint8 else 0)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_runs_in_tflite_micro_as_the_exact_int8_reference(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    quantized = _quantized(name, request)
    # the samples set the scale of float logits (the QDQ file has none for them)
    done = write_tflite(
        quantized.onnx_path, tmp_path / f"{name}.tflite", calibration=quantized.samples
    )
    assert done.path.read_bytes()[4:8] == b"TFL3" and done.size_bytes == done.path.stat().st_size
    interpreter = runtime.Interpreter.from_file(str(done.path))
    for details in (interpreter.get_input_details(0), interpreter.get_output_details(0)):
        assert details["dtype"] == np.int8  # full int8: no float at either end
    scale, zero = _first_quantize(quantized.onnx_path)
    details = interpreter.get_input_details(0)["quantization_parameters"]
    assert np.float32(details["scales"][0]) == np.float32(scale)
    assert int(details["zero_points"][0]) == zero
    parity = check_tflite(done, quantized.samples)
    print(f"{name}: {parity.to_dict()}, arena {done.arena_bytes}, {done.size_bytes} bytes")
    assert parity.samples == len(quantized.samples)
    max_lsb, max_differing = BOUNDS[name]
    assert parity.top1_agreement >= 0.99  # a near-tie a 1-LSB step flips: 1 of 300 (lenet5)
    assert parity.top1_float_agreement >= 0.95  # also ties on the int8 grid: 11 of 300
    assert parity.max_lsb is not None and parity.max_lsb <= max_lsb
    assert parity.differing_fraction is not None
    assert parity.differing_fraction <= max_differing
    assert done.arena_bytes is not None and done.arena_bytes > 0


def test_weights_are_int8_per_channel_and_biases_int32_in_the_accumulator_scale(
    ds_cnn_int8: Any, tmp_path: Path
) -> None:
    done = write_tflite(ds_cnn_int8.onnx_path, tmp_path / "ds.tflite", is_arena_measured=False)
    model = _model(done.path)
    graph = model.subgraphs[0]
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    seen = set()
    for op in graph.operators:
        code = codes[model.operatorCodes[op.opcodeIndex].builtinCode]
        if code not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        x, w, b = (graph.tensors[i] for i in op.inputs)
        assert w.type == schema.TensorType.INT8 and b.type == schema.TensorType.INT32
        channels = int(w.shape[3] if code == "DEPTHWISE_CONV_2D" else w.shape[0])
        assert w.quantization.quantizedDimension == (3 if code == "DEPTHWISE_CONV_2D" else 0)
        assert not np.any(w.quantization.zeroPoint)  # symmetric weights (the spec)
        w_scale = np.broadcast_to(w.quantization.scale, (channels,))
        expected = np.float32(x.quantization.scale[0]) * w_scale.astype(np.float32)
        np.testing.assert_allclose(b.quantization.scale, expected, rtol=1e-6)
        seen.add(code)
    assert seen == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def test_a_flatten_after_convolutions_keeps_the_onnx_element_order(
    lenet5_int8: Any, tmp_path: Path
) -> None:
    done = write_tflite(lenet5_int8.onnx_path, tmp_path / "lenet.tflite", is_arena_measured=False)
    index = done.operators.index("RESHAPE")
    assert done.operators[index - 1] == "TRANSPOSE"  # NHWC back to NCHW before the vector
    # a wrong element order scrambles the dense layer's input: many LSB and other top-1s; the
    # right one leaves only TFLM's rounding (at most 1 LSB, as in the parity test above)
    parity = check_tflite(done, lenet5_int8.samples[:20])
    assert parity.max_lsb is not None and parity.max_lsb <= 1
    assert parity.top1_agreement == 1.0


def test_the_arena_is_the_smallest_tflite_micro_runs_in(cnn_s_int8: Any, tmp_path: Path) -> None:
    done = write_tflite(cnn_s_int8.onnx_path, tmp_path / "cnn.tflite")
    assert done.arena_bytes is not None

    def runs(arena: int) -> bool:  # in a child: this runtime may crash on a short arena
        code = (
            "import numpy as np\n"
            "from tflite_micro.python.tflite_micro import runtime\n"
            f"i = runtime.Interpreter.from_file({str(done.path)!r}, arena_size={arena})\n"
            "i.set_input(np.zeros((1, 8, 8, 1), np.int8), 0)\n"
            "i.invoke()\n"
        )
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        return child.returncode == 0

    assert runs(done.arena_bytes)
    assert not runs(done.arena_bytes - 16)


def test_a_float_model_is_written_in_float32_and_matches_onnx_runtime(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.data import load_data
    from edgeopt.export.onnx import export_onnx
    from edgeopt.models import load_model

    fp32 = export_onnx(load_model("zoo:cnn-s"), tmp_path / "fp32.onnx")
    done = write_tflite(fp32, tmp_path / "fp32.tflite")
    assert not done.is_int8 and done.input_quantization is None
    assert (
        done.operators
        == (
            "CONV_2D",
            "CONV_2D",
            "MAX_POOL_2D",
            "CONV_2D",
            "MEAN",
            "FULLY_CONNECTED",
        )
        or "MEAN" in done.operators
    )
    x = load_data("digits").arrays("test")[0][:50]
    parity = check_tflite(done, x)  # TFLite Micro's float kernels
    assert parity.top1_agreement == 1.0
    assert parity.max_relative_error is not None and parity.max_relative_error < 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    litert = Interpreter(model_path=str(done.path))  # and LiteRT's
    litert.allocate_tensors()
    for sample in x[:10]:
        want = session.run(None, {session.get_inputs()[0].name: sample[None]})[0]
        litert.set_tensor(litert.get_input_details()[0]["index"], sample.transpose(1, 2, 0)[None])
        litert.invoke()
        got = litert.get_tensor(litert.get_output_details()[0]["index"])
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def _mixed_model(folder: Path) -> Any:
    """A small net with the operators the zoo models lack: average pooling, an element-wise
    multiply, a concat of two scales, and a Softmax at the end; int8 by PTQ on digits."""
    import torch
    from torch import nn

    from edgeopt.data import load_data
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 8, 3, padding=1)
            self.b = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = torch.relu(self.a(x)), torch.relu(self.b(x))
            y = torch.cat([nn.functional.avg_pool2d(a * b, 2), nn.functional.max_pool2d(a, 2)], 1)
            return torch.softmax(self.fc(torch.flatten(y, 1)), -1)

    torch.manual_seed(0)
    fp32 = folder / "mixed.fp32.onnx"
    torch.onnx.export(Mixed().eval(), (torch.zeros(1, 1, 8, 8),), str(fp32), dynamo=True)
    digits = load_data("digits")
    int8 = quantize(str(fp32), PTQConfig(), data=digits, output=folder / "mixed.int8.onnx")
    return fp32, int8.model.onnx_path, digits


def test_pooling_multiply_concat_and_softmax_run_in_tflite_micro(tmp_path: Path) -> None:
    fp32, int8, digits = _mixed_model(tmp_path)
    done = write_tflite(int8, tmp_path / "mixed.tflite")
    for op in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "MUL", "CONCATENATION", "SOFTMAX"):
        assert op in done.operators
    # TFLite Micro's int8 SOFTMAX writes 1/256, -128 (softmax_common.cc)
    assert done.output_quantization == (1 / 256, -128)
    parity = check_tflite(done, digits.arrays("test")[0])
    # MUL, the average pool and the requantizations before the concat each round their own
    # way (fixed point) where the reference rounds once in float: measured 2 LSB of 1/256 on
    # 2.0% of the probabilities, top-1 99.2% (3 near-ties of 359)
    assert parity.max_lsb is not None and parity.max_lsb <= 3
    assert parity.differing_fraction is not None and parity.differing_fraction <= 0.05
    assert parity.top1_agreement >= 0.98
    floats = write_tflite(fp32, tmp_path / "mixed.fp32.tflite", is_arena_measured=False)
    parity = check_tflite(floats, digits.arrays("test")[0][:50])
    assert parity.max_relative_error is not None and parity.max_relative_error < 1e-4


# -- refusals: one sentence, exit 2, nothing written ----------------------------------------------


def _sixteen_bit(source: Path, out: Path) -> Path:
    """``source`` with its first activation quantized to int16 (16-bit QDQ)."""
    model = onnx.load(str(source))
    inits = {i.name: i for i in model.graph.initializer}
    node = next(
        n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    )
    zero = inits[node.input[2]]
    wide = numpy_helper.from_array(np.array(0, np.int16), node.input[2] + "_int16")
    model.graph.initializer.append(wide)
    for other in model.graph.node:
        is_boundary = other.op_type in ("QuantizeLinear", "DequantizeLinear")
        if is_boundary and len(other.input) > 2 and other.input[2] == zero.name:
            other.input[2] = wide.name
    onnx.save(model, str(out))
    return out


def _tanh_model(out: Path) -> Path:
    """A QDQ graph with a Tanh between two quantized tensors."""
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]),
        helper.make_node("Tanh", ["xf"], ["t"], name="squash"),
        helper.make_node("QuantizeLinear", ["t", "s", "z"], ["tq"]),
        helper.make_node("DequantizeLinear", ["tq", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tanh",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(out))
    return out


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from clitools import run_cli

    code, out, err = run_cli(args, capsys)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_sixteen_bit_activations_are_refused_in_one_sentence(
    cnn_s_int8: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _sixteen_bit(cnn_s_int8.onnx_path, tmp_path / "a16.onnx")
    out = tmp_path / "a16.tflite"
    line = _refused(["export", str(source), "--format", "tflite", "-o", str(out)], capsys)
    assert "int16" in line and "int8" in line and "QuantizeLinear" in line
    assert list(tmp_path.iterdir()) == [source]


def test_an_unsupported_operator_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _tanh_model(tmp_path / "tanh.onnx")
    line = _refused(
        ["export", str(source), "--format", "tflite", "-o", str(tmp_path / "t.tflite")], capsys
    )
    assert "'squash' (Tanh): unsupported operator" in line and "Conv" in line
    assert list(tmp_path.iterdir()) == [source]
    with pytest.raises(InputError, match="Tanh"):
        write_tflite(source, tmp_path / "t.tflite")


def test_an_output_that_is_the_input_is_refused(
    cnn_s_int8: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "m.onnx"
    source.write_bytes(cnn_s_int8.onnx_path.read_bytes())
    before = source.read_bytes()
    line = _refused(["export", str(source), "--format", "tflite", "-o", str(source)], capsys)
    assert "overwrite" in line
    assert source.read_bytes() == before and list(tmp_path.iterdir()) == [source]


def test_cli_writes_the_file_and_the_memory_side_by_side(
    cnn_s_int8: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clitools import run_cli

    out = tmp_path / "out" / "cnn.tflite"
    code, text, err = run_cli(
        [
            "export",
            str(cnn_s_int8.onnx_path),
            "--format",
            "tflite",
            "-o",
            str(out),
            "--data",
            "digits",
            "--samples",
            "40",
        ],
        capsys,
        is_out_flat=True,
    )
    assert code == 0, err
    assert out.read_bytes()[4:8] == b"TFL3"
    assert list(out.parent.iterdir()) == [out]  # no temporary file or C scratch folder left
    assert "TFLite Micro" in text and "edgeopt C" in text and "arena (RAM)" in text
    assert "on 40 samples: top-1 agreement 100.00%" in text
