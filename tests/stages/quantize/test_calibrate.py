from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper

from edgeopt.errors import InputError
from edgeopt.stages.quantize.calibrate import CALIBRATION_METHODS
from edgeopt.stages.quantize.calibrate import RANGE_BITS
from edgeopt.stages.quantize.calibrate import Histogram
from edgeopt.stages.quantize.calibrate import calibrate
from edgeopt.stages.quantize.calibrate import collect_stats
from edgeopt.stages.quantize.calibrate import compute_range
from edgeopt.stages.quantize.calibrate import ranges_from_stats
from edgeopt.stages.quantize.calibrate import snap_range
from edgeopt.stages.quantize.qdq import prepare


def _stats(values: np.ndarray, batches: int = 5) -> Histogram:
    histogram = Histogram()
    for part in np.array_split(values, batches):
        histogram.add(part)
    return histogram


def _relu_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


GAUSS = np.random.default_rng(0).standard_normal(200_000).astype(np.float32)


def test_minmax_range_is_the_extremes_of_the_samples() -> None:
    lo, hi = compute_range(_stats(GAUSS).stats(), "minmax")
    assert (lo, hi) == (float(GAUSS.min()), float(GAUSS.max()))


def test_percentile_range_clips_each_tail_by_the_percentile() -> None:
    stats = _stats(GAUSS).stats()
    lo, hi = compute_range(stats, "percentile", percentile=99.9)
    want_lo, want_hi = np.percentile(GAUSS, [0.1, 99.9])
    width = (stats.maximum - stats.minimum) / len(stats.counts)
    assert GAUSS.min() < lo and hi < GAUSS.max()
    assert lo == pytest.approx(want_lo, abs=2 * width)
    assert hi == pytest.approx(want_hi, abs=2 * width)


@pytest.mark.parametrize("method", ["entropy", "mse"])
def test_entropy_and_mse_clip_a_gaussian_below_its_maximum(method: str) -> None:
    lo, hi = compute_range(_stats(GAUSS).stats(), method)
    # 8-bit clipping thresholds of a unit Gaussian sit between 3 and 4.5 sigma.
    assert 3.0 < hi < GAUSS.max() and -GAUSS.max() < lo < -3.0


def test_mse_threshold_of_a_laplace_matches_banner_et_al() -> None:
    # Banner et al. 2019, table 1: the MSE-optimal 8-bit clip of Laplace(0, b) is 9.89 b.
    samples = np.random.default_rng(1).laplace(size=400_000).astype(np.float32)
    _, hi = compute_range(_stats(samples).stats(), "mse")
    assert hi == pytest.approx(9.89, rel=0.1)


def test_merged_histogram_matches_one_pass_and_keeps_every_count() -> None:
    merged = _stats(GAUSS, batches=9).stats()
    single = _stats(GAUSS, batches=1).stats()
    assert merged.total == pytest.approx(len(GAUSS))
    assert len(merged.counts) == 2048
    assert np.abs(merged.counts - single.counts).sum() < 0.05 * len(GAUSS)


def test_relu_outputs_count_their_zeros() -> None:
    x = np.array([[-1, 0, 1], [2, -3, 4]], dtype=np.float32)
    stats = collect_stats(_relu_model(), x)
    assert stats["y"].zeros == 3 and (stats["y"].minimum, stats["y"].maximum) == (0.0, 4.0)
    assert stats["x"].zeros == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=2, max_size=300),
    st.sampled_from(CALIBRATION_METHODS),
)
@example([-3.0, -2.0], "mse")  # one sign: a threshold below |max| crossed the bounds
def test_every_range_lies_within_the_observed_extremes(values: list[float], method: str) -> None:
    array = np.asarray(values, dtype=np.float32)
    lo, hi = compute_range(_stats(array, batches=2).stats(), method)
    assert array.min() <= lo <= hi <= array.max()


def test_calibration_covers_every_activation_of_the_model(cnn_s) -> None:
    model = prepare(onnx.load(str(cnn_s.onnx_path)))
    x, _ = cnn_s.data.arrays("calib")
    stats = collect_stats(model, x)
    outputs = {out for node in model.graph.node for out in node.output}
    assert {"input"} | outputs <= set(stats)
    assert all(s.total == s.counts.sum() > 0 and s.minimum <= s.maximum for s in stats.values())


def test_graph_inputs_keep_their_observed_range(cnn_s) -> None:
    model = prepare(onnx.load(str(cnn_s.onnx_path)))
    x, _ = cnn_s.data.arrays("calib")
    ranges = ranges_from_stats(model, collect_stats(model, x), method="entropy")
    lo, hi = ranges["input"]  # nothing clipped: the observed range, widened to the range grid
    assert lo <= float(x.min()) and hi >= float(x.max())
    assert (lo, hi) == snap_range(float(x.min()), float(x.max()))


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
)
def test_snapped_ranges_contain_the_range_and_sit_on_the_grid(lo: float, width: float) -> None:
    hi = lo + width
    snapped_lo, snapped_hi = snap_range(lo, hi)
    assert snapped_lo <= lo and snapped_hi >= hi
    for value, original in ((snapped_lo, lo), (snapped_hi, hi)):
        if value:
            assert abs(value - original) <= abs(original) * 2.0 ** -(RANGE_BITS - 1)
            mantissa, _ = math.frexp(value)
            assert (mantissa * 2**RANGE_BITS).is_integer()
    assert snap_range(snapped_lo, snapped_hi) == (snapped_lo, snapped_hi)  # already on the grid


@pytest.mark.parametrize("samples", [0, 1])
def test_calibration_refuses_fewer_than_two_samples(samples: int) -> None:
    with pytest.raises(InputError, match=f"has {samples} sample"):
        calibrate(_relu_model(), np.ones((samples, 3), dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_calibration_refuses_nan_and_inf(bad: float) -> None:
    x = np.ones((4, 3), dtype=np.float32)
    x[2, 1] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        calibrate(_relu_model(), x)


def test_unknown_calibration_method_is_refused() -> None:
    with pytest.raises(InputError, match="unknown calibration method 'kl'"):
        calibrate(_relu_model(), np.ones((4, 3), dtype=np.float32), method="kl")


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
def test_a_near_constant_tensor_calibrates_without_error(method: str) -> None:
    # A range a few float32 steps wide cannot hold 2048 finite bins (numpy raises); such a
    # tensor is binned as a constant and still gets a range within its extremes.
    values = np.full(1000, 1.0, dtype=np.float32)
    values[::7] = np.nextafter(np.float32(1.0), np.float32(2.0))
    lo, hi = compute_range(_stats(values).stats(), method)
    assert values.min() <= lo <= hi <= values.max()
