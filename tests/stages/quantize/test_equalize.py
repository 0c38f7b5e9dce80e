from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from edgeopt.stages.quantize.calibrate import calibrate
from edgeopt.stages.quantize.equalize import adaround
from edgeopt.stages.quantize.equalize import correct_bias
from edgeopt.stages.quantize.equalize import equalization_pairs
from edgeopt.stages.quantize.equalize import equalize
from edgeopt.stages.quantize.qdq import prepare
from edgeopt.stages.quantize.qdq import quantized_weights
from edgeopt.stages.quantize.qdq import weight_scale
from edgeopt.stages.quantize.qdq import write_qdq
from edgeopt.stages.quantize.qdq import written_weight_scales


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _out_ranges(w: np.ndarray) -> np.ndarray:
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1)


def _depthwise_chain(between: str = "Relu") -> onnx.ModelProto:
    """conv 3->8, ReLU, depthwise 3x3 (8 groups), ReLU, pointwise 8->4; wild channel scales."""
    rng = np.random.default_rng(0)
    spread = np.exp(rng.uniform(-3, 3, 8)).astype(np.float32)
    tensors = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * spread[:, None, None, None],
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 1, 3, 3)).astype(np.float32) / spread[:, None, None, None],
        "b2": rng.standard_normal(8).astype(np.float32),
        "w3": rng.standard_normal((4, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(between, ["c1"], ["r1"], name="act1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="act2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="pw"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 6, 6])],
        [numpy_helper.from_array(v, k) for k, v in tensors.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture(scope="module")
def model(cnn_s) -> onnx.ModelProto:
    return prepare(onnx.load(str(cnn_s.onnx_path)))


def test_cle_keeps_fp32_outputs_and_equalizes_paired_ranges(model, cnn_s) -> None:
    equalized = equalize(model)
    x, _ = cnn_s.data.arrays("test")
    before, after = _run(model, x), _run(equalized, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-4)
    pairs = equalization_pairs(model)
    assert pairs == [("node_Conv_54", "node_Conv_56"), ("node_Conv_56", "node_Conv_58")]
    old, new = _weights(model), _weights(equalized)
    for first, second in (("0.0.weight", "1.0.weight"), ("1.0.weight", "3.0.weight")):
        r1_old, r2_old = _out_ranges(old[first]), np.abs(old[second]).max(axis=(0, 2, 3))
        r1, r2 = _out_ranges(new[first]), np.abs(new[second]).max(axis=(0, 2, 3))
        assert np.abs(np.log(r1_old / r2_old)).max() > 0.5  # they were far apart
        np.testing.assert_allclose(r1, r2, rtol=1e-2)


def test_cle_handles_a_depthwise_separable_chain() -> None:
    chain = _depthwise_chain()
    equalized = equalize(chain)
    assert equalization_pairs(chain) == [("conv", "dw"), ("dw", "pw")]
    x = np.random.default_rng(1).standard_normal((4, 3, 6, 6)).astype(np.float32)
    before = _run(chain, x)
    np.testing.assert_allclose(_run(equalized, x), before, rtol=1e-5, atol=1e-4)
    w = _weights(equalized)
    np.testing.assert_allclose(_out_ranges(w["w1"]), _out_ranges(w["w2"]), rtol=1e-2)
    np.testing.assert_allclose(_out_ranges(w["w2"]), np.abs(w["w3"]).max(axis=(0, 2, 3)), rtol=1e-2)


def test_cle_shrinks_per_tensor_weight_quantization_error() -> None:
    chain = _depthwise_chain()

    def relative_error(model: onnx.ModelProto) -> float:
        total = 0.0
        for name in ("w1", "w2"):
            w = _weights(model)[name]
            scale = weight_scale(w, axis=None)
            total += float(np.mean((np.round(w / scale) * scale - w) ** 2) / np.mean(w**2))
        return total

    assert relative_error(equalize(chain)) < 0.5 * relative_error(chain)


def test_cle_skips_layers_joined_by_other_operators() -> None:
    chain = _depthwise_chain(between="Sigmoid")
    assert equalization_pairs(chain) == [("dw", "pw")]
    w = _weights(equalize(chain))
    np.testing.assert_array_equal(w["w1"], _weights(chain)["w1"])


def test_bias_correction_cancels_the_mean_error_and_keeps_accuracy(model, cnn_s) -> None:
    x, _ = cnn_s.data.arrays("calib")
    x_test, y_test = cnn_s.data.arrays("test")
    ranges = calibrate(model, x)
    options = {"per_channel": False, "weight_bits": 4}
    plain, _ = write_qdq(model, ranges, **options)
    corrected, _ = write_qdq(correct_bias(model, ranges, x, **options), ranges, **options)
    reference = _run(model, x)
    bias_before = np.abs((reference - _run(plain, x)).mean(axis=0)).mean()
    bias_after = np.abs((reference - _run(corrected, x)).mean(axis=0)).mean()
    assert bias_after < 0.5 * bias_before
    accuracy = {
        name: np.mean(_run(m, x_test).argmax(1) == y_test)
        for name, m in (("plain", plain), ("corrected", corrected))
    }
    assert accuracy["corrected"] >= accuracy["plain"]


def test_bias_correction_gives_a_bias_to_a_layer_without_one() -> None:
    chain = _depthwise_chain()
    x = np.random.default_rng(2).standard_normal((16, 3, 6, 6)).astype(np.float32)
    corrected = correct_bias(chain, calibrate(chain, x), x, weight_bits=4)
    pw = next(n for n in corrected.graph.node if n.name == "pw")
    assert len(pw.input) == 3 and pw.input[2] in _weights(corrected)
    assert _weights(corrected)[pw.input[2]].shape == (4,)


def test_adaround_integers_are_exactly_what_the_qdq_file_holds(model, cnn_s) -> None:
    x, _ = cnn_s.data.arrays("calib")
    ranges = calibrate(model, x)
    scales = written_weight_scales(write_qdq(model, ranges, weight_bits=4)[0])
    result = adaround(model, x, bits=4, scales=scales, iterations=200)
    qdq, _ = write_qdq(result.model, ranges, weight_bits=4, weight_scales=result.scales)
    written = quantized_weights(qdq)
    assert set(result.integers) == set(written) == set(scales)
    for name, integers in result.integers.items():
        np.testing.assert_array_equal(written[name], integers)
    nearest = quantized_weights(write_qdq(model, ranges, weight_bits=4)[0])
    changed = sum(int((nearest[n] != i).sum()) for n, i in result.integers.items())
    assert changed > 0  # AdaRound chose a different rounding for some weights


def test_adaround_reduces_the_output_error_of_4bit_weights(model, cnn_s) -> None:
    x, _ = cnn_s.data.arrays("calib")
    ranges = calibrate(model, x)
    options = {"weight_bits": 4}
    scales = written_weight_scales(write_qdq(model, ranges, **options)[0])
    result = adaround(model, x, bits=4, scales=scales, iterations=200)
    nearest, _ = write_qdq(model, ranges, **options)
    rounded, _ = write_qdq(result.model, ranges, weight_scales=result.scales, **options)
    reference = _run(model, x)
    error = {
        name: float(np.mean((_run(m, x) - reference) ** 2))
        for name, m in (("nearest", nearest), ("adaround", rounded))
    }
    assert error["adaround"] < error["nearest"]
