"""Ethos-U targets through Vela: figures from Vela's own output, CPU-fallback operators named
and priced on the host core, bad files refused in one sentence, nothing left behind."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from edgeopt.errors import InputError
from edgeopt.measure import profile_onnx
from edgeopt.measure import vela
from edgeopt.measure.vela import compile_tflite
from edgeopt.measure.vela import estimate_npu
from edgeopt.target import Target
from edgeopt.testing import shared_data_dir

pytest.importorskip("ethosu.vela")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
flatbuffers = pytest.importorskip("flatbuffers")

NPU_TARGETS = ("ethos-u55-128", "ethos-u55-256", "ethos-u65-256")
TFLITE_MICRO = shared_data_dir("tflite-micro")


def _tensor(name: str, shape: list[int], kind: int, buffer: int = 0, scale: float = 0.0) -> object:
    tensor = schema.TensorT()
    tensor.name, tensor.shape, tensor.type, tensor.buffer = name.encode(), shape, kind, buffer
    if scale:
        quant = schema.QuantizationParametersT()
        quant.scale, quant.zeroPoint = [scale], [0]
        tensor.quantization = quant
    return tensor


def write_tiny_tflite(path: Path, *, is_cpu_tail: bool = False) -> Path:
    """An int8 FULLY_CONNECTED 16 -> 8 (Vela puts it on the NPU); with ``is_cpu_tail`` a
    DEQUANTIZE and a float32 FULLY_CONNECTED 8 -> 4 after it, which Vela leaves on the CPU
    (float feature maps are not an Ethos-U data type). Built with the TFLite schema's object API."""
    rng = np.random.default_rng(0)
    buffers = [schema.BufferT()]

    def constant(array: np.ndarray) -> int:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(array.tobytes(), np.uint8).tolist()
        buffers.append(buffer)
        return len(buffers) - 1

    i8, i32, f32 = schema.TensorType.INT8, schema.TensorType.INT32, schema.TensorType.FLOAT32
    tensors = [
        _tensor("x", [1, 16], i8, scale=0.05),
        _tensor("w", [8, 16], i8, constant(rng.integers(-127, 127, (8, 16), np.int8)), 0.01),
        _tensor("b", [8], i32, constant(np.zeros(8, np.int32)), 0.0005),
        _tensor("y", [1, 8], i8, scale=0.1),
    ]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    codes = [code]

    def fully_connected(inputs: list[int], output: int) -> object:
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, inputs, [output]
        op.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
        op.builtinOptions = schema.FullyConnectedOptionsT()
        return op

    operators = [fully_connected([0, 1, 2], 3)]
    if is_cpu_tail:
        tensors += [
            _tensor("yf", [1, 8], f32),
            _tensor("w2", [4, 8], f32, constant(rng.standard_normal((4, 8)).astype(np.float32))),
            _tensor("b2", [4], f32, constant(np.zeros(4, np.float32))),
            _tensor("z", [1, 4], f32),
        ]
        dequantize = schema.OperatorCodeT()
        dequantize.builtinCode = schema.BuiltinOperator.DEQUANTIZE
        dequantize.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
        codes.append(dequantize)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 1, [3], [4]
        operators += [op, fully_connected([4, 5, 6], 7)]
    graph = schema.SubGraphT()
    graph.tensors, graph.operators, graph.name = tensors, operators, b"main"
    graph.inputs, graph.outputs = [0], [len(tensors) - 1]
    model = schema.ModelT()
    model.version, model.subgraphs, model.operatorCodes, model.buffers = 3, [graph], codes, buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return path


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path: Path) -> Iterator[Path]:
    """Vela's scratch folders go under a folder of the test's own, checked empty afterwards."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    before, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = before
    assert not list(folder.iterdir()), "Vela's temporary folder was left behind"


@pytest.mark.parametrize("name", NPU_TARGETS)
def test_tiny_int8_model_compiles_on_every_npu_profile(name: str, tmp_path: Path) -> None:
    model = write_tiny_tflite(tmp_path / "tiny.tflite")
    before = model.read_bytes()
    result = compile_tflite(model, Target.from_name(name))
    target = Target.from_name(name)
    assert result.vela_version == "5.2.0" and result.accelerator == name
    assert result.clock_hz == target.clock_hz
    assert result.cycles > 0 and result.npu_latency_ms > 0
    assert result.npu_latency_ms == pytest.approx(result.cycles / result.clock_hz * 1e3, rel=1e-3)
    assert result.offchip_bytes > 0
    # Shared_Sram keeps the tensor arena in SRAM; Dedicated_Sram (the U65) keeps it in DRAM and
    # uses its SRAM as a cache, which a model this small does not need.
    is_shared = target.npu is not None and target.npu.memory_mode == "Shared_Sram"
    assert result.sram_bytes > 0 if is_shared else result.sram_bytes >= 0
    assert 16 * 8 <= result.encoded_weights_bytes <= result.offchip_bytes
    assert [layer.op_type for layer in result.layers] == ["FULLY_CONNECTED"]
    assert result.layers[0].macs == 16 * 8 and result.layers[0].is_npu
    assert result.cpu_operators == () and result.latency_ms == result.npu_latency_ms
    assert model.read_bytes() == before  # Vela worked on a copy


@pytest.mark.skipif(TFLITE_MICRO is None, reason="no shared/data/tflite-micro beside this checkout")
def test_person_detect_on_the_three_profiles() -> None:
    assert TFLITE_MICRO is not None
    model = TFLITE_MICRO / "person_detect.tflite"
    results = {name: compile_tflite(model, Target.from_name(name)) for name in NPU_TARGETS}
    for name, result in results.items():
        assert result.cycles > 0 and result.sram_bytes > 0, name
        assert result.cpu_operators == (), name  # MobileNetV1 and its softmax all on the NPU
        npu_macs = sum(layer.macs for layer in result.layers if layer.is_npu)
        assert npu_macs == pytest.approx(7_160_196, rel=0.01), name  # Vela's "Neural network macs"
        # Off-chip: the encoded weights plus the command stream, less than Vela's whole file
        # (which adds the flatbuffer around them and the input and output tensors).
        assert result.encoded_weights_bytes < result.offchip_bytes, name
        assert result.offchip_bytes < result.compiled_bytes * 1.1, name
        assert result.offchip_bytes == pytest.approx(result.compiled_bytes, rel=0.1), name
    u55_128, u55_256 = results["ethos-u55-128"], results["ethos-u55-256"]
    assert u55_256.cycles <= u55_128.cycles
    assert results["ethos-u65-256"].offchip_memory == "DRAM"
    assert u55_128.offchip_memory == "Off-chip Flash"
    # 7.2 M MACs on 128 MACs/cycle at 500 MHz: at least 0.11 ms; Vela says 0.71 ms.
    assert 0.11 < u55_128.npu_latency_ms < 5


def test_cpu_fallback_operators_are_named_and_priced_on_the_host(tmp_path: Path) -> None:
    model = write_tiny_tflite(tmp_path / "tail.tflite", is_cpu_tail=True)
    target = Target.from_name("ethos-u55-128")
    result = compile_tflite(model, target)
    by_type = {op.op_type: op for op in result.cpu_operators}
    assert set(by_type) == {"DEQUANTIZE", "FULLY_CONNECTED"}
    assert by_type["FULLY_CONNECTED"].macs == 8 * 4 and by_type["FULLY_CONNECTED"].names == ("z",)
    host = Target.from_name("cortex-m7")
    fc_cycles = 32 * host.cycles_per_mac["fc"]["float32"] + host.layer_overhead_cycles
    assert by_type["FULLY_CONNECTED"].host_cycles == pytest.approx(fc_cycles)
    assert result.cpu_latency_ms == pytest.approx(
        sum(op.host_cycles for op in result.cpu_operators) / host.clock_hz * 1e3
    )
    estimate, _ = estimate_npu(model, target)
    assert estimate.latency_ms == pytest.approx(result.npu_latency_ms + result.cpu_latency_ms)
    expected_uj = (
        result.npu_latency_ms * target.active_power_mw
        + result.cpu_latency_ms * host.active_power_mw
    )
    assert estimate.energy_uj == pytest.approx(expected_uj)
    assert estimate.method == "Vela 5.2.0 estimate"
    assert estimate.detail["energy_how"] == "estimated (150 mW, assumed)"
    assert estimate.detail["energy"].startswith("estimated from an assumed 150 mW NPU+MCU power")
    assert [op["op_type"] for op in estimate.detail["cpu_operators"]] == [
        "DEQUANTIZE",
        "FULLY_CONNECTED",
    ]


def test_a_file_that_is_no_tflite_is_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(InputError, match=r"bad.tflite: not a TFLite model \(no TFL3"):
        compile_tflite(bad, Target.from_name("ethos-u55-128"))


def test_a_damaged_tflite_gives_vela_s_first_error_line(tmp_path: Path) -> None:
    whole = write_tiny_tflite(tmp_path / "whole.tflite").read_bytes()
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(InputError) as error:
        compile_tflite(damaged, Target.from_name("ethos-u55-256"))
    message = str(error.value)
    assert message.startswith(f"{damaged}: Vela 5.2.0 cannot compile it for ethos-u55-256: ")
    assert "\n" not in message and "Traceback" not in message and message.endswith(".")


def test_a_cpu_profile_is_not_compiled_with_vela(tmp_path: Path) -> None:
    model = write_tiny_tflite(tmp_path / "tiny.tflite")
    with pytest.raises(InputError, match="'cortex-m4' is not an Ethos-U NPU profile"):
        compile_tflite(model, Target.from_name("cortex-m4"))


def test_onnx_needs_the_tflite_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import edgeopt.export

    monkeypatch.setitem(sys.modules, "edgeopt.export.tflite", None)  # as on a tree without it
    monkeypatch.delattr(edgeopt.export, "tflite", raising=False)  # (imported by edgeopt)
    with pytest.raises(InputError, match="no TFLite writer .* give the .tflite file instead"):
        vela.onnx_to_tflite(tmp_path / "m.onnx", tmp_path / "m.tflite")


def _gemm_onnx(path: Path, *, is_int8: bool = True) -> Path:
    """Gemm 16 -> 8, as edgeopt's int8 files express it (QDQ around it) or in float32."""
    scale = numpy_helper.from_array(np.array(0.01, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    if is_int8:
        weights = [numpy_helper.from_array(np.ones((16, 8), np.int8), "wq"), scale, zero]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]),
            helper.make_node("Gemm", ["xd", "w"], ["y"]),
        ]
    else:
        weights = [numpy_helper.from_array(np.ones((16, 8), np.float32), "w")]
        nodes = [helper.make_node("Gemm", ["x", "w"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_profile_reports_vela_s_figures_as_the_target_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX -> .tflite writer is stood in for by the tiny file (it lands on another branch)."""
    written: list[Path] = []

    def stand_in(model: Path, output: Path) -> Path:
        written.append(output)
        return write_tiny_tflite(output, is_cpu_tail=True)

    monkeypatch.setattr(vela, "onnx_to_tflite", stand_in)
    path = _gemm_onnx(tmp_path / "gemm.onnx")
    metrics = profile_onnx(
        path, target=Target.from_name("ethos-u55-128"), is_latency_measured=False
    )
    estimate = metrics.estimate
    assert estimate is not None and estimate.method == "Vela 5.2.0 estimate"
    assert estimate.detail["sram_bytes"] > 0 and estimate.detail["offchip_bytes"] > 0
    assert metrics.fits == {"flash": True, "ram": True}
    how = metrics.provenance["estimate"]
    assert how.startswith("Vela 5.2.0 estimate (ethos-u55-128, Ethos_U55_High_End_Embedded")
    assert "1 DEQUANTIZE, 1 FULLY_CONNECTED" in how and "cortex-m7" in how
    assert "Vela's Off-chip Flash used vs flash_bytes" in metrics.provenance["fits"]
    assert written and not written[0].exists()  # the .tflite went with its temporary folder
    record = metrics.to_dict()["estimate"]
    assert record["method"] == "Vela 5.2.0 estimate" and record["detail"]["cpu_operators"]


def test_a_float_model_on_an_npu_target_is_priced_on_the_host_core(tmp_path: Path) -> None:
    """The float baseline of a search has nothing the NPU runs: no Vela, the host's estimate."""
    path = _gemm_onnx(tmp_path / "float.onnx", is_int8=False)
    target = Target.from_name("ethos-u55-256")
    metrics = profile_onnx(path, target=target, is_latency_measured=False)
    estimate = metrics.estimate
    assert estimate is not None and estimate.target == "ethos-u55-256"
    host = Target.from_name("cortex-m7").estimate(metrics.layers)
    assert estimate.latency_ms == pytest.approx(host.latency_ms)
    assert estimate.method == "estimated on the cortex-m7 host core profile (cycles model)"
    assert "no int8 layers" in metrics.provenance["estimate"]
    assert metrics.fits == {"flash": True, "ram": True}
