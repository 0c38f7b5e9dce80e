from __future__ import annotations

import collections
import inspect
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from edgeopt.errors import InputError
from edgeopt.export.onnx import save_onnx
from edgeopt.stages.quantize.calibrate import calibrate
from edgeopt.stages.quantize.qdq import executed_op_types
from edgeopt.stages.quantize.qdq import prepare
from edgeopt.stages.quantize.qdq import quantized_weights
from edgeopt.stages.quantize.qdq import weight_scale
from edgeopt.stages.quantize.qdq import write_qdq
from edgeopt.stages.quantize.qdq import written_weight_scales


@pytest.fixture(scope="module")
def prepared(cnn_s) -> tuple[onnx.ModelProto, dict[str, tuple[float, float]]]:
    model = prepare(onnx.load(str(cnn_s.onnx_path)))
    return model, calibrate(model, cnn_s.data.arrays("calib")[0])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_ort_qdq_quantizer_keeps_the_interface_we_call() -> None:
    # QDQQuantizer is internal to ONNX Runtime: pin the constructor and TensorData we rely on.
    from onnxruntime.quantization.calibrate import TensorData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    params = list(inspect.signature(QDQQuantizer.__init__).parameters)
    assert params == [
        "self",
        "model",
        "per_channel",
        "reduce_range",
        "weight_qType",
        "activation_qType",
        "tensors_range",
        "nodes_to_quantize",
        "nodes_to_exclude",
        "op_types_to_quantize",
        "extra_options",
    ]
    data = TensorData(lowest=np.float32(-1.0), highest=np.float32(2.0))
    assert data.range_value == (-1.0, 2.0)


@settings(max_examples=25, deadline=None)
@given(
    low=st.floats(-100.0, 0.0),
    span=st.floats(1e-3, 200.0),
    seed=st.integers(0, 2**16),
)
def test_quantize_dequantize_error_stays_within_half_a_step(
    low: float, span: float, seed: int
) -> None:
    high = low + span
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"], name="flatten")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    qdq, _ = write_qdq(model, {"x": (low, high), "y": (low, high)})
    x = np.random.default_rng(seed).uniform(low, high, (8, 16)).astype(np.float32)
    step = (max(high, 0.0) - min(low, 0.0)) / 255
    error = np.abs(_run(qdq, x) - x).max()
    assert error <= step / 2 * (1 + 1e-4) + 1e-6


def test_written_model_runs_int8_kernels_in_onnx_runtime(prepared, tmp_path: Path) -> None:
    model, ranges = prepared
    qdq, float_nodes = write_qdq(model, ranges)
    path = save_onnx(qdq, tmp_path / "int8.onnx")
    ops = collections.Counter(executed_op_types(path, np.zeros((1, 1, 8, 8), np.float32)))
    assert ops["QLinearConv"] == 3 and ops["QGemm"] == 1 and ops["QLinearGlobalAveragePool"] == 1
    assert ops["Conv"] == ops["Gemm"] == 0
    assert float_nodes == []


def test_weights_are_int8_symmetric_per_channel_with_max_abs_scales(prepared) -> None:
    model, ranges = prepared
    qdq, _ = write_qdq(model, ranges)
    fp32 = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    inits = {init.name: init for init in qdq.graph.initializer}
    weights = quantized_weights(qdq)
    scales = written_weight_scales(qdq)
    assert set(weights) == {"0.0.weight", "1.0.weight", "3.0.weight", "6.weight"}
    for name, integers in weights.items():
        assert inits[f"{name}_quantized"].data_type == TensorProto.INT8
        assert np.abs(integers).max() == 127
        assert scales[name].shape == (fp32[name].shape[0],)
        np.testing.assert_array_equal(scales[name], weight_scale(fp32[name]))
    zero_points = [i for i in qdq.graph.initializer if i.name.endswith("weight_zero_point")]
    assert zero_points and all(not numpy_helper.to_array(z).any() for z in zero_points)


def test_activations_are_uint8_and_logits_stay_float(prepared) -> None:
    model, ranges = prepared
    qdq, _ = write_qdq(model, ranges)
    quantize = [n for n in qdq.graph.node if n.op_type == "QuantizeLinear"]
    inits = {init.name: init for init in qdq.graph.initializer}
    assert quantize and all(inits[n.input[2]].data_type == TensorProto.UINT8 for n in quantize)
    producer = next(n for n in qdq.graph.node if "logits" in n.output)
    assert producer.op_type == "Gemm"


def test_int8_output_matches_fp32_closely(prepared, cnn_s) -> None:
    model, ranges = prepared
    qdq, _ = write_qdq(model, ranges)
    x, _ = cnn_s.data.arrays("test")
    fp32, int8 = _run(model, x), _run(qdq, x)
    assert np.mean(fp32.argmax(1) == int8.argmax(1)) > 0.98
    assert np.abs(fp32 - int8).mean() < 0.05 * np.abs(fp32).mean()


def test_prepare_turns_reduce_mean_into_global_average_pool(cnn_s) -> None:
    raw = onnx.load(str(cnn_s.onnx_path))
    model = prepare(raw)
    assert "ReduceMean" in [n.op_type for n in raw.graph.node]
    assert "ReduceMean" not in [n.op_type for n in model.graph.node]
    assert "GlobalAveragePool" in [n.op_type for n in model.graph.node]
    x, _ = cnn_s.data.arrays("test")
    np.testing.assert_allclose(_run(model, x), _run(raw, x), atol=1e-5)


def test_unquantizable_operator_stays_float_and_is_named() -> None:
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
            helper.make_node("Erf", ["h"], ["e"], name="erf"),
            helper.make_node("Relu", ["e"], ["y"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    qdq, float_nodes = write_qdq(model, calibrate(model, x))
    assert float_nodes == ["erf (Erf)", "relu (Relu)"]
    erf = next(n for n in qdq.graph.node if n.name == "erf")
    producers = {out: n.op_type for n in qdq.graph.node for out in n.output}
    assert producers[erf.input[0]] == "DequantizeLinear"  # fed a float tensor, computes in float


def test_excluded_node_is_kept_in_float(prepared) -> None:
    model, ranges = prepared
    qdq, float_nodes = write_qdq(model, ranges, exclude_nodes=["node_linear"])
    gemm = next(n for n in qdq.graph.node if n.name == "node_linear")
    assert float_nodes == ["node_linear (Gemm)"]
    assert gemm.input[1] == "6.weight"  # the fp32 initializer, not a DequantizeLinear output


def test_unknown_excluded_node_is_refused(prepared) -> None:
    model, ranges = prepared
    with pytest.raises(InputError, match="'no_such_node'"):
        write_qdq(model, ranges, exclude_nodes=["no_such_node"])


def test_int4_weights_are_packed_in_opset_21(prepared, tmp_path: Path) -> None:
    model, ranges = prepared
    int8, _ = write_qdq(model, ranges)
    int4, float_nodes = write_qdq(model, ranges, weight_bits=4)
    assert next(o.version for o in int4.opset_import if o.domain == "") == 21
    packed = [i for i in int4.graph.initializer if i.name.endswith("weight_quantized")]
    assert len(packed) == 4 and float_nodes == []
    assert all(i.data_type == TensorProto.INT4 for i in packed)
    assert all(np.abs(w).max() <= 8 for w in quantized_weights(int4).values())
    size4 = save_onnx(int4, tmp_path / "w4.onnx").stat().st_size
    size8 = save_onnx(int8, tmp_path / "w8.onnx").stat().st_size
    assert size4 < 0.75 * size8
    x = np.zeros((1, 1, 8, 8), np.float32)
    assert _run(int4, x).shape == (1, 10)  # ONNX Runtime loads and runs int4 QDQ


@pytest.mark.parametrize("bits", [3, 16])
def test_weight_bits_other_than_4_or_8_are_refused(prepared, bits: int) -> None:
    model, ranges = prepared
    with pytest.raises(InputError, match="weight bits must be 4 or 8"):
        write_qdq(model, ranges, weight_bits=bits)


def test_missing_range_is_reported_with_the_tensor_name(prepared) -> None:
    model, ranges = prepared
    partial = {name: r for name, r in ranges.items() if name != "relu"}
    with pytest.raises(InputError, match="no calibration range for tensor 'relu'"):
        write_qdq(model, partial)


def test_a_tensor_read_twice_still_feeds_int8_convs(tmp_path: Path) -> None:
    # Why activations are uint8: with int8 activations ONNX Runtime 1.32 runs the Convs that
    # read a shared tensor (here the residual input y) in float between Q/DQ.
    rng = np.random.default_rng(0)
    weights = {
        name: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)
        for name, shape in (("wa", (8, 3, 3, 3)), ("wb", (8, 8, 3, 3)), ("wc", (8, 8, 3, 3)))
    }
    conv = {"pads": [1, 1, 1, 1]}
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", **conv),
            helper.make_node("Relu", ["a"], ["y"], name="relu_a"),
            helper.make_node("Conv", ["y", "wb"], ["b"], name="conv_b", **conv),
            helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
            helper.make_node("Add", ["y", "rb"], ["s"], name="add"),
            helper.make_node("Conv", ["s", "wc"], ["out"], name="conv_c", **conv),
        ],
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8, 8, 8])],
        list(weights.values()),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    qdq, float_nodes = write_qdq(model, calibrate(model, x))
    ops = collections.Counter(executed_op_types(save_onnx(qdq, tmp_path / "q.onnx"), x[:1]))
    assert ops["QLinearConv"] == 3 and ops["QLinearAdd"] == 1
    assert ops["Conv"] == ops["Add"] == 0 and float_nodes == []
