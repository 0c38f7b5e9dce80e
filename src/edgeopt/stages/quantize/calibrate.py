"""Activation statistics of an fp32 ONNX model, and the calibrators that turn them into ranges.

:func:`collect_stats` runs the model with ONNX Runtime on the calibration samples, in batches,
with every float activation exposed as a graph output. Per tensor it keeps the exact minimum and
maximum, the number of exact zeros (ReLU outputs are mostly zeros, and zero is exactly
representable, so it costs no quantization error) and a histogram of ``HISTOGRAM_BINS`` bins
spanning ``[min, max]``. Batches are merged into one histogram: when a batch widens the range, the
old counts are spread onto the wider bins in proportion to overlap (counts assumed uniform within
a bin), so the bin count stays fixed, unlike ONNX Runtime's ``HistogramCollector``, which adds bins.

A calibrator maps one tensor's statistics to the range ``(lo, hi)`` the activation quantizer will
use (asymmetric 8-bit: 256 levels from ``min(lo, 0)`` to ``max(hi, 0)``):

- ``minmax``: the observed extremes; nothing is clipped.
- ``percentile``: the ``100 - p`` and ``p`` percentiles of the histogram (each tail loses
  ``100 - p`` percent of the samples), as in McKinstry et al. 2019 and ONNX Runtime's percentile
  calibrator.
- ``entropy``: the threshold that minimises the KL divergence between the clipped distribution
  of ``|x|`` and its quantized version (TensorRT's method: Migacz 2017, "8-bit Inference with
  TensorRT", GTC; https://on-demand.gputechconf.com/gtc/2017/presentation/s7310-8-bit-inference-with-tensorrt.pdf).
- ``mse``: the threshold that minimises the expected squared quantization error, rounding noise
  ``step**2 / 12`` inside the range plus the clipping error outside (as in Banner et al. 2019,
  "Post training 4-bit quantization of convolutional networks for rapid-deployment", searched
  numerically on the histogram instead of in closed form).

Entropy and MSE search one threshold ``t`` on ``|x|`` and return ``(max(min, -t), min(max, t))``.

Every range is then widened to ``RANGE_BITS`` significant bits, so that the int8 file is the same
bytes on every host: CPUs' SIMD kernels (numpy's log and FFT, ONNX Runtime's float GEMMs) round
differently in the last bit, and on an AVX-512 and an AVX2 host DS-CNN-S's MFCC features and every
one of its activation ranges differed by up to 9e-7 (relative), which changed the file's scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import InputError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "CALIBRATION_METHODS",
    "HISTOGRAM_BINS",
    "Histogram",
    "TensorStats",
    "calibrate",
    "check_calibration_data",
    "collect_stats",
    "compute_range",
    "entropy_range",
    "float_activations",
    "minmax_range",
    "mse_range",
    "percentile_range",
    "ranges_from_stats",
    "run_batches",
]

HISTOGRAM_BINS = 2048
#: Levels of the 8-bit activation grid the ranges are computed for.
ACTIVATION_LEVELS = 256
BATCH_SIZE = 64
_KL_EPSILON = 1e-4


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one activation tensor over the calibration set.

    ``counts`` is a histogram of ``len(counts)`` equal bins spanning ``[minimum, maximum]``;
    ``zeros`` of its samples were exactly 0 (they sit in the bin holding 0).
    """

    minimum: float
    maximum: float
    counts: np.ndarray
    zeros: int = 0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.minimum, self.maximum, len(self.counts) + 1)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def cumulative(self, points: np.ndarray) -> np.ndarray:
        """Samples at or below each point (counts spread uniformly within a bin)."""
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        if self.maximum <= self.minimum:
            return np.where(points >= self.minimum, self.total, 0.0)
        return np.interp(points, self.edges, cum, left=0.0, right=self.total)

    def absolute(self) -> tuple[np.ndarray, float]:
        """Histogram of ``|x|`` over ``[0, absmax]`` with as many bins, exact zeros removed."""
        absmax = max(abs(self.minimum), abs(self.maximum))
        if absmax == 0.0:
            return np.zeros(len(self.counts)), 0.0
        edges = np.linspace(0.0, absmax, len(self.counts) + 1)
        folded = self.cumulative(edges) - self.cumulative(-edges)
        folded -= folded[0]
        counts = np.maximum(np.diff(folded), 0.0)
        counts[0] = max(counts[0] - self.zeros, 0.0)
        return counts, absmax


def is_spread(minimum: float, maximum: float, bins: int) -> bool:
    """Whether ``bins`` finite float32 bins fit in [minimum, maximum]. numpy refuses a range a few
    float32 steps wide (a near-constant tensor gives one); such a tensor is binned and calibrated
    as a constant."""
    scale = max(abs(minimum), abs(maximum), float(np.finfo(np.float32).tiny))
    return maximum - minimum > 4 * bins * float(np.finfo(np.float32).eps) * scale


class Histogram:
    """Running min / max / zero count / fixed-bin histogram of one tensor, merged over batches."""

    def __init__(self, bins: int = HISTOGRAM_BINS) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.float64)
        self.minimum = np.inf
        self.maximum = -np.inf
        self.zeros = 0

    def add(self, values: np.ndarray) -> None:
        """Fold one batch of values in; widen (and rebin) the histogram when it falls outside."""
        flat = np.asarray(values, dtype=np.float32).ravel()
        if flat.size == 0:
            return
        low, high = float(flat.min()), float(flat.max())
        if low < self.minimum or high > self.maximum:
            self._widen(min(low, self.minimum), max(high, self.maximum))
        self.zeros += int(np.count_nonzero(flat == 0))
        if self._is_spread():
            batch, _ = np.histogram(flat, bins=self.bins, range=(self.minimum, self.maximum))
            self.counts += batch
        else:
            self.counts[0] += flat.size

    def _is_spread(self) -> bool:
        return is_spread(self.minimum, self.maximum, self.bins)

    def _widen(self, low: float, high: float) -> None:
        if self.counts.any():
            old = self.stats()
            edges = np.linspace(low, high, self.bins + 1) if high > low else np.full(2, low)
            moved = np.diff(old.cumulative(edges))
            self.counts = np.zeros(self.bins) if high == low else moved
            if high == low:
                self.counts[0] = old.total
        self.minimum, self.maximum = low, high

    def stats(self) -> TensorStats:
        return TensorStats(
            minimum=float(self.minimum),
            maximum=float(self.maximum),
            counts=self.counts.copy(),
            zeros=self.zeros,
        )


def minmax_range(stats: TensorStats) -> tuple[float, float]:
    """The observed extremes."""
    return stats.minimum, stats.maximum


def percentile_range(stats: TensorStats, percentile: float = 99.99) -> tuple[float, float]:
    """The ``100 - percentile`` and ``percentile`` percentiles read off the histogram.

    McKinstry et al. 2019, "Discovering low-precision networks close to full-precision networks
    for efficient embedded inference" (arXiv 1809.04191); the same rule as ONNX Runtime's
    percentile calibrator, applied to each tail.
    """
    if not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (0, 100], got {percentile}.")
    if percentile == 100.0 or stats.maximum <= stats.minimum:
        return minmax_range(stats)
    cum = np.concatenate([[0.0], np.cumsum(stats.counts)])
    tail = stats.total * (100.0 - percentile) / 100.0
    low = float(np.interp(tail, cum, stats.edges))
    high = float(np.interp(stats.total - tail, cum, stats.edges))
    return max(low, stats.minimum), min(high, stats.maximum)


def _clip(stats: TensorStats, threshold: float) -> tuple[float, float]:
    low, high = _clip_all(stats, np.array([threshold]))
    return float(low[0]), float(high[0])


def _clip_all(stats: TensorStats, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The observed range clipped at ``[-t, t]`` for each threshold ``t``. For data of one sign a
    threshold below its smallest magnitude would cross the bounds (``[-3, -2]`` clipped at 1.9
    gave ``lo = -1.9 > hi = -2``): each bound stays within the observed extremes."""
    low = np.minimum(np.maximum(stats.minimum, -thresholds), stats.maximum)
    high = np.maximum(np.minimum(stats.maximum, thresholds), stats.minimum)
    return low, high


def _steps(stats: TensorStats, thresholds: np.ndarray, levels: int) -> np.ndarray:
    """Quantization step of the asymmetric grid over each clipped range (zero included)."""
    low, high = _clip_all(stats, thresholds)
    return (np.maximum(high, 0.0) - np.minimum(low, 0.0)) / (levels - 1)


def kl_divergences(stats: TensorStats, levels: int = ACTIVATION_LEVELS) -> tuple[np.ndarray, float]:
    """KL divergence of every candidate threshold ``i * width`` (index i), and the bin width."""
    counts, absmax = stats.absolute()
    bins = len(counts)
    if absmax == 0.0 or counts.sum() == 0.0:
        return np.zeros(1), 0.0
    width = absmax / bins
    candidates = np.arange(1, bins + 1)
    grid = np.maximum(1, np.round(candidates * width / _steps(stats, candidates * width, levels)))
    divergence = np.full(bins + 1, np.inf)
    suffix = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    for i in candidates[candidates >= grid.astype(int)]:
        n = int(min(grid[i - 1], i))
        kept = counts[:i]
        reference = kept.copy()
        reference[-1] += suffix[i]
        nonzero = reference > 0
        bounds = (np.arange(n + 1) * i) // n
        sums = np.add.reduceat(kept, bounds[:-1])
        filled = np.add.reduceat(nonzero.astype(np.float64), bounds[:-1])
        per_bin = np.divide(sums, filled, out=np.zeros_like(sums), where=filled > 0)
        candidate = np.repeat(per_bin, np.diff(bounds)) * nonzero
        p = reference[nonzero] / reference.sum()
        q_total = candidate.sum()
        q = candidate[nonzero] / q_total if q_total > 0 else np.zeros_like(p)
        q = np.where(q > 0, q, _KL_EPSILON)
        divergence[i] = float(np.sum(p * np.log(p / q)))
    return divergence, width


def entropy_range(stats: TensorStats, levels: int = ACTIVATION_LEVELS) -> tuple[float, float]:
    """The threshold with the least KL divergence between clipped and quantized ``|x|``.

    TensorRT's calibration (Migacz 2017, "8-bit Inference with TensorRT", GTC 2017): for every
    candidate of ``i`` bins, the reference P is the first ``i`` bins with the outliers added to
    the last one; the candidate Q merges the unclipped bins into as many levels as the grid puts
    on ``[0, t]`` (128 for a signed tensor, as in TensorRT; 255 for a ReLU output) and spreads
    each level back over its non-empty bins. Exact zeros are left out: zero is exactly
    representable, and their spike would otherwise favour needless clipping.
    """
    divergence, width = kl_divergences(stats, levels)
    if width == 0.0:
        return minmax_range(stats)
    best = int(np.argmin(divergence))
    return _clip(stats, best * width)


def mse_range(stats: TensorStats, levels: int = ACTIVATION_LEVELS) -> tuple[float, float]:
    """The threshold with the least expected squared quantization error over the histogram.

    For a clipped range with step ``d``, samples inside cost the rounding noise ``d**2 / 12``
    and samples outside cost their squared distance to the bound (plus the bin's own width
    spread ``w**2 / 12``); exact zeros cost nothing. Every bin edge of ``|x|`` is a candidate.
    The error model is Banner et al. 2019, "Post training 4-bit quantization of convolutional
    networks for rapid-deployment" (NeurIPS, arXiv 1810.05723), searched numerically.
    """
    if stats.maximum <= stats.minimum:
        return minmax_range(stats)
    bins = len(stats.counts)
    absmax = max(abs(stats.minimum), abs(stats.maximum))
    thresholds = absmax * np.arange(1, bins + 1) / bins
    edges = stats.edges
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    counts = stats.counts.copy()
    zero_bin = int(np.clip(np.searchsorted(edges, 0.0, side="right") - 1, 0, bins - 1))
    if stats.minimum <= 0.0 <= stats.maximum:
        counts[zero_bin] = max(counts[zero_bin] - stats.zeros, 0.0)
    low, high = _clip_all(stats, thresholds)
    steps = _steps(stats, thresholds, levels)
    # Clipping error from prefix sums of the counts' moments: sum n (c - b)^2 over the bins whose
    # centre lies beyond the bound b is S2 - 2 b S1 + b^2 S0 over those bins.
    moments = [np.concatenate([[0.0], np.cumsum(counts * centers**k)]) for k in range(3)]
    first_above = np.searchsorted(centers, high, side="right")
    last_below = np.searchsorted(centers, low, side="left")
    above = [m[-1] - m[first_above] for m in moments]
    below = [m[last_below] for m in moments]
    clipped = (
        above[2]
        - 2 * high * above[1]
        + high**2 * above[0]
        + below[2]
        - 2 * low * below[1]
        + low**2 * below[0]
        + (above[0] + below[0]) * width**2 / 12
    )
    inside = moments[0][-1] - above[0] - below[0]
    error = inside * steps**2 / 12 + clipped
    best = int(np.argmin(error))
    return _clip(stats, float(thresholds[best]))


CALIBRATORS: dict[str, Callable[..., tuple[float, float]]] = {
    "minmax": minmax_range,
    "percentile": percentile_range,
    "entropy": entropy_range,
    "mse": mse_range,
}
CALIBRATION_METHODS = tuple(CALIBRATORS)


def compute_range(
    stats: TensorStats, method: str, *, percentile: float = 99.99
) -> tuple[float, float]:
    """The range one calibrator gives one tensor.

    Args:
        stats: the tensor's statistics from :func:`collect_stats`.
        method: ``minmax``, ``percentile``, ``entropy`` or ``mse``.
        percentile: the percentile kept by ``percentile``.

    Returns:
        ``(lo, hi)`` in the tensor's units.

    Raises:
        InputError: an unknown method or a percentile outside (0, 100].

    Example:
        >>> h = Histogram()
        >>> h.add(np.linspace(-1.0, 1.0, 10001))
        >>> compute_range(h.stats(), "minmax")
        (-1.0, 1.0)
    """
    if method not in CALIBRATORS:
        known = ", ".join(CALIBRATION_METHODS)
        raise InputError(f"unknown calibration method {method!r}; known: {known}.")
    if not is_spread(stats.minimum, stats.maximum, len(stats.counts)):
        return minmax_range(stats)
    if method == "percentile":
        return percentile_range(stats, percentile)
    return CALIBRATORS[method](stats)


def check_calibration_data(x: np.ndarray, *, source: str = "the calibration set") -> None:
    """Refuse a calibration set with fewer than two samples or with NaN / inf values."""
    if x.ndim == 0 or len(x) < 2:
        count = 0 if x.ndim == 0 else len(x)
        raise InputError(
            f"{source} has {count} sample(s); calibration needs at least 2 to estimate ranges."
        )
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InputError(
            f"{source} holds {bad} NaN or infinite value(s); calibration needs finite data."
        )


def float_activations(model: onnx.ModelProto) -> list[str]:
    """Graph inputs and node outputs that are not constants, in graph order (types unchecked)."""
    constants = {init.name for init in model.graph.initializer}
    names: list[str] = []
    for value in model.graph.input:
        if value.name not in constants:
            names.append(value.name)
    for node in model.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constants for name in inputs)):
            constants.update(node.output)
            continue
        names.extend(name for name in node.output if name)
    return names


def _session_with_outputs(model: onnx.ModelProto, names: list[str]) -> Any:
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        return ort.InferenceSession(
            probe.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise InputError(f"ONNX Runtime cannot load the model for calibration ({first}).") from None


def run_batches(
    model: onnx.ModelProto,
    x: np.ndarray,
    names: list[str],
    *,
    batch_size: int = BATCH_SIZE,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{name: array}`` of the named tensors for every batch of ``x`` (ONNX Runtime)."""
    session = _session_with_outputs(model, names)
    arg = session.get_inputs()[0]
    fixed = arg.shape[0] if isinstance(arg.shape[0], int) else None
    step = fixed or batch_size
    for begin in range(0, len(x), step):
        chunk = np.ascontiguousarray(x[begin : begin + step], dtype=np.float32)
        real = len(chunk)
        if fixed is not None and real < fixed:
            pad = np.repeat(chunk[-1:], fixed - real, axis=0)
            chunk = np.concatenate([chunk, pad])
        try:
            values = session.run(names, {arg.name: chunk})
        except Exception as exc:
            first = " ".join(str(exc).split())[:200]
            raise InputError(f"ONNX Runtime cannot run the calibration data ({first}).") from None
        out = {}
        for name, value in zip(names, values, strict=True):
            array = np.asarray(value)
            if fixed is not None and array.ndim > 0 and array.shape[0] == fixed:
                array = array[:real]
            out[name] = array
        yield out


def collect_stats(
    model: onnx.ModelProto,
    x: np.ndarray,
    *,
    tensors: Collection[str] | None = None,
    batch_size: int = BATCH_SIZE,
    bins: int = HISTOGRAM_BINS,
) -> dict[str, TensorStats]:
    """Min, max, zero count and histogram of every float activation, over ``x`` in batches.

    Args:
        model: the fp32 model (read, never modified).
        x: calibration inputs, already normalized, shaped like the model's input.
        tensors: the activations to observe; all non-constant float tensors by default.
        batch_size: samples per ONNX Runtime run (a file with a fixed batch uses its own).
        bins: histogram bins per tensor.

    Returns:
        Statistics per tensor name, in graph order.

    Raises:
        InputError: fewer than two samples, NaN / inf in ``x`` or in an activation, or inputs
            the model cannot run.

    Example:
        >>> import onnx
        >>> from onnx import helper, TensorProto
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Relu", ["x"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        >>> stats = collect_stats(model, np.array([[-1, 0, 1, 2], [3, 4, 5, -6]], np.float32))
        >>> stats["y"].minimum, stats["y"].maximum, stats["y"].zeros
        (0.0, 5.0, 3)
    """
    check_calibration_data(x)
    names = list(tensors) if tensors is not None else float_activations(model)
    histograms = {name: Histogram(bins) for name in names}
    floating: set[str] = set()
    for batch in run_batches(model, x, names, batch_size=batch_size):
        for name, value in batch.items():
            if not np.issubdtype(value.dtype, np.floating):
                continue
            if not np.all(np.isfinite(value)):
                raise InputError(
                    f"tensor {name!r} holds NaN or infinite values on the calibration data; "
                    "it cannot be calibrated."
                )
            floating.add(name)
            histograms[name].add(value)
    return {name: histograms[name].stats() for name in names if name in floating}


def calibrate(
    model: onnx.ModelProto,
    x: np.ndarray,
    *,
    method: str = "minmax",
    percentile: float = 99.99,
) -> dict[str, tuple[float, float]]:
    """Ranges of every float activation of ``model`` on the calibration inputs ``x``.

    Args:
        model: the fp32 model.
        x: calibration inputs, normalized, at least two samples.
        method: ``minmax``, ``percentile``, ``entropy`` or ``mse``.
        percentile: the percentile kept by ``percentile``.

    Returns:
        ``{tensor: (lo, hi)}``.

    Raises:
        InputError: see :func:`collect_stats` and :func:`compute_range`.

    Example:
        >>> from onnx import helper, TensorProto
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Relu", ["x"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        >>> calibrate(model, np.array([[-1, 2], [3, -4]], np.float32))["y"]
        (0.0, 3.0)
    """
    if method not in CALIBRATORS:
        known = ", ".join(CALIBRATION_METHODS)
        raise InputError(f"unknown calibration method {method!r}; known: {known}.")
    stats = collect_stats(model, x)
    return ranges_from_stats(model, stats, method=method, percentile=percentile)


#: Significant bits a calibrated range keeps: the range grows by at most 0.8% (0.4% on average),
#: far inside what the choice of calibrator moves it, and far above the last-bit float
#: differences between hosts (1e-6), so that those reach the file only for a range within 1e-6
#: of a grid point.
RANGE_BITS = 8


def snap_up(value: float) -> float:
    """The smallest number of ``RANGE_BITS`` significant bits at or above ``value`` (zero and
    non-finite values unchanged).

    Example:
        >>> snap_up(3.9703794496599585), snap_up(3.9703780461568385), snap_up(-7.7738)
        (3.984375, 3.984375, -7.75)
    """
    if value == 0 or not math.isfinite(value):
        return value
    mantissa, exponent = math.frexp(value)
    return math.ldexp(math.ceil(mantissa * 2**RANGE_BITS) / 2**RANGE_BITS, exponent)


def snap_range(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` widened to the nearest numbers of ``RANGE_BITS`` significant bits: nothing
    the calibrator kept is clipped, and float noise below the grid does not reach the file."""
    return -snap_up(-lo), snap_up(hi)


def ranges_from_stats(
    model: onnx.ModelProto,
    stats: Mapping[str, TensorStats],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
) -> dict[str, tuple[float, float]]:
    """Apply one calibrator to every activation, widened to ``RANGE_BITS`` significant bits;
    graph inputs keep their observed min / max (widened too).

    The inputs are the data: clipping them discards information before the first layer can use
    it, and their histograms are often a few spikes (pixel levels), on which KL and MSE searches
    are unreliable (on 8x8 digits, KL clips the input at 44% of its range and costs 11 pp).
    """
    inputs = {value.name for value in model.graph.input}
    ranges = {
        name: minmax_range(s) if name in inputs else compute_range(s, method, percentile=percentile)
        for name, s in stats.items()
    }
    return {name: snap_range(lo, hi) for name, (lo, hi) in ranges.items()}
