"""MLPerf Tiny published results, and fitting a target profile's constants to them.

The yardstick for what a profile says about a microcontroller we cannot run: the MLPerf Tiny
closed-division results of the NUCLEO-L4R5ZI board (Arm Cortex-M4F, 120 MHz), with two
runtimes: the reference TensorFlow Lite Micro kernels (v0.5) and ST X-CUBE-AI 8.1 (v1.1). The
four reference models are rebuilt from the zoo, exported, quantized to int8 with our PTQ and
read as layers (:func:`reference_layers`); :func:`fit_profile` fits the estimator's constants to
the published latencies and energies by non-negative least squares on relative errors, and
:func:`leave_one_out` predicts each model from a fit on the other three.

Four points cannot pin down a cycles-per-MAC for each of three op kinds plus memory, element and
per-layer costs: each model is dominated by one kind (IC: convolution, AD: fully connected) and
KWS and VWW mix convolution and depthwise in the same proportion (10.8% and 10.7% depthwise
MACs). So a :class:`Structure` ties constants together (kinds sharing one cost) and fits at most
two latency constants; the element and per-layer costs stay at the base profile's cited values.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.graph import Layer
from edgeopt.target import MAC_KINDS
from edgeopt.target import Target

__all__ = [
    "BOARD_RUNS",
    "DSP_CORES",
    "MIN_CYCLES_PER_MAC",
    "PUBLISHED",
    "REFERENCE_MODELS",
    "STRUCTURES",
    "BoardFit",
    "BoardRun",
    "Fit",
    "Published",
    "Structure",
    "board_peers",
    "core_runtime_groups",
    "fit_boards",
    "fit_profile",
    "leave_one_board_out",
    "leave_one_model_out",
    "leave_one_out",
    "reference_layers",
]

#: The cost a fitted group gets when least squares drives it to zero (a profile needs > 0).
MIN_CYCLES_PER_MAC = 1e-3

#: The MLPerf Tiny reference models as zoo specs (tests/models/test_mlperf_tiny.py checks their
#: counts against the published ones).
REFERENCE_MODELS: dict[str, str] = {
    "kws": "zoo:ds-cnn-s?classes=12&input=1x49x10",
    "vww": "zoo:mobilenet-v1?width=0.25&input=3x96x96&classes=2",
    "ic": "zoo:resnet8?input=3x32x32&classes=10",
    "ad": "zoo:ad-autoencoder?input=640",
}


@dataclass(frozen=True)
class Published:
    """One published result: median latency (ms) and energy (uJ) per inference."""

    latency_ms: float
    energy_uj: float

    @property
    def power_mw(self) -> float:
        return self.energy_uj / self.latency_ms


#: NUCLEO-L4R5ZI closed-division results (shared/research/perf-anchors.md section 3): latency =
#: 1000 / median throughput of performance/results.txt, energy = median uJ of energy/results.txt,
#: mlcommons/tiny_results_v0.5 (reference) and tiny_results_v1.1 (STMicroelectronics).
PUBLISHED: dict[str, dict[str, Published]] = {
    "tflm": {
        "kws": Published(181.9, 7374.0),
        "vww": Published(600.6, 24313.0),
        "ic": Published(704.2, 29207.0),
        "ad": Published(10.05, 416.0),
    },
    "xcubeai": {
        "kws": Published(62.9, 2833.0),
        "vww": Published(118.7, 5618.0),
        "ic": Published(214.0, 7019.0),
        "ad": Published(6.86, 294.0),
    },
}


@dataclass(frozen=True)
class Structure:
    """Which latency constants a fit frees; the rest keep the base profile's values.

    ``groups`` lists sets of MAC kinds that share one cycles-per-MAC constant (every kind is in
    exactly one group); ``extra`` may add ``"cycles_per_byte"`` or ``"layer_overhead_cycles"``
    as a fitted constant.
    """

    name: str
    reason: str
    groups: tuple[tuple[str, ...], ...]
    extra: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.groups) + len(self.extra)


STRUCTURES: tuple[Structure, ...] = (
    Structure(
        "shared",
        "one cycles-per-MAC for every kind",
        (MAC_KINDS,),
    ),
    Structure(
        "conv | depthwise+fc",
        "depthwise and fully connected kernels reuse no loaded operand across outputs (an "
        "input per channel, a weight per output at batch 1), so they share a cost; "
        "convolutions reuse both",
        (("conv",), ("depthwise", "fc")),
    ),
    Structure(
        "conv+fc | depthwise",
        "convolution and fully connected run the same scalar multiply-accumulate loop; the "
        "depthwise loop adds per-tap bounds checks and channel-multiplier indexing",
        (("conv", "fc"), ("depthwise",)),
    ),
    Structure(
        "shared + bytes",
        "one cycles-per-MAC, plus a cost per byte of memory traffic",
        (MAC_KINDS,),
        ("cycles_per_byte",),
    ),
    Structure(
        "shared + layers",
        "one cycles-per-MAC, plus a fitted fixed cost per layer",
        (MAC_KINDS,),
        ("layer_overhead_cycles",),
    ),
)


@dataclass(frozen=True)
class Fit:
    """Constants fitted on some models, and the profile's predictions for every model."""

    structure: Structure
    trained_on: tuple[str, ...]
    target: Target
    latency_ms: dict[str, float]
    energy_uj: dict[str, float]

    def errors(self, published: Mapping[str, Published]) -> dict[str, dict[str, float]]:
        """Relative error (predicted / published - 1) of latency and energy per model."""
        return {
            key: {
                "latency": self.latency_ms[key] / point.latency_ms - 1,
                "energy": self.energy_uj[key] / point.energy_uj - 1,
            }
            for key, point in published.items()
            if key in self.latency_ms
        }

    def constants(self) -> dict[str, Any]:
        """The fitted numbers, as they go into the profile's YAML file."""
        target = self.target
        return {
            "cycles_per_mac_int8": {k: target.cycles_per_mac[k]["int8"] for k in MAC_KINDS},
            "cycles_per_byte": target.cycles_per_byte,
            "layer_overhead_cycles": target.layer_overhead_cycles,
            "active_power_mw": target.active_power_mw,
        }


def _trained_looking(module: Any) -> Any:
    """Non-trivial BatchNorm statistics, so the folded biases survive as in a trained model."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
            shape = layer.running_mean.shape
            layer.running_mean.copy_(torch.rand(shape, generator=generator) * 2 - 1)
            layer.bias.data.copy_(torch.rand(shape, generator=generator) * 2 - 1)
    return module


def _random_dataset(input_shape: tuple[int, ...], samples: int = 32) -> Any:
    """Gaussian calibration data: the layer counts do not depend on the values."""
    from edgeopt.data.dataset import Dataset
    from edgeopt.data.dataset import Normalization

    x = np.random.default_rng(0).standard_normal((samples, *input_shape)).astype(np.float32)
    y = np.arange(samples, dtype=np.int64) % 2
    channels = input_shape[0]
    return Dataset(
        name="gaussian",
        spec="gaussian",
        raw={split: x for split in ("train", "val", "calib", "test")},
        labels={split: y for split in ("train", "val", "calib", "test")},
        classes=("0", "1"),
        normalization=Normalization((0.0,) * channels, (1.0,) * channels),
        split_rule="gaussian samples, for calibration only",
    )


def reference_layers(
    benchmark: str, *, is_int8: bool = True, folder: Path | None = None
) -> list[Layer]:
    """The layers of one MLPerf Tiny reference model from the zoo, as the estimator sees them.

    The model is exported to ONNX and (``is_int8``) quantized with our PTQ (minmax calibration
    on Gaussian samples: the counts do not depend on the values), then read on the file.

    Args:
        benchmark: ``kws``, ``vww``, ``ic`` or ``ad``.
        is_int8: quantize to int8 QDQ (as the published runs are) or keep float32.
        folder: where to write the ONNX files (a temporary folder by default).

    Returns:
        The layers, in execution order.

    Example:
        >>> layers = reference_layers("ad")
        >>> sum(layer.macs for layer in layers), {layer.dtype for layer in layers}
        (264192, {'int8'})
    """
    from edgeopt.export.onnx import export_onnx
    from edgeopt.graph import analyse
    from edgeopt.models import load_model
    from edgeopt.models import read_onnx
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    handle = load_model(REFERENCE_MODELS[benchmark])
    _trained_looking(handle.require_torch("export"))
    with tempfile.TemporaryDirectory(prefix="edgeopt-mlperf-") as scratch:
        out = Path(folder) if folder is not None else Path(scratch)
        path = export_onnx(handle, out / f"{benchmark}.onnx")
        if is_int8:
            data = _random_dataset(handle.require_input_shape())
            config = PTQConfig(calibration="minmax")
            written = quantize(str(path), config, data=data, output=out / f"{benchmark}-int8.onnx")
            assert written.model.onnx_path is not None
            path = written.model.onnx_path
        _, layers = analyse(read_onnx(path))
    return layers


def _features(layers: Sequence[Layer], structure: Structure, base: Target) -> tuple[Any, float]:
    """One model's row of fitted features, and the cycles of the constants that stay fixed."""
    counted = [layer for layer in layers if layer.kind != "fused"]
    row = [
        float(sum(layer.macs for layer in counted if layer.kind in group))
        for group in structure.groups
    ]
    fixed = 0.0
    for layer in counted:
        if layer.kind not in MAC_KINDS and layer.kind != "data":
            fixed += layer.output_elements * base.cycles_per_element.get(layer.dtype, 0.0)
    total_bytes = float(sum(layer.bytes_moved for layer in counted))
    if "cycles_per_byte" in structure.extra:
        row.append(total_bytes)
    else:
        fixed += total_bytes * base.cycles_per_byte
    if "layer_overhead_cycles" in structure.extra:
        row.append(float(len(counted)))
    else:
        fixed += len(counted) * base.layer_overhead_cycles
    return row, fixed


def _solve(
    points: Sequence[tuple[str, float, float]],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
) -> Target:
    """``base`` with the int8 latency constants of ``structure`` fitted to ``points``.

    Each point is ``(model, published latency in ms, clock in Hz)``: the published cycles are
    latency times the clock of the board that ran it, so boards at different clocks with the
    same core and runtime share one fit (cycles per MAC are a property of core and runtime).
    Non-negative least squares (``scipy.optimize.nnls``) on relative errors: each row divided
    by its published cycles, so a 5 ms model weighs as much as a 700 ms one.
    """
    from scipy.optimize import nnls

    rows, targets = [], []
    for key, latency_ms, clock_hz in points:
        row, fixed = _features(layers[key], structure, base)
        cycles = latency_ms * 1e-3 * clock_hz
        rows.append(np.asarray(row) / cycles)
        targets.append((cycles - fixed) / cycles)
    theta, _ = nnls(np.asarray(rows), np.asarray(targets))
    cycles_per_mac = {kind: dict(row) for kind, row in base.cycles_per_mac.items()}
    for value, group in zip(theta, structure.groups, strict=False):
        for kind in group:
            # A profile needs a positive cost; a group the fit drives to 0 gets a token one.
            cycles_per_mac[kind]["int8"] = max(float(value), MIN_CYCLES_PER_MAC)
    extras = dict(zip(structure.extra, theta[len(structure.groups) :], strict=True))
    return replace(
        base,
        cycles_per_mac=cycles_per_mac,
        cycles_per_byte=float(extras.get("cycles_per_byte", base.cycles_per_byte)),
        layer_overhead_cycles=float(
            extras.get("layer_overhead_cycles", base.layer_overhead_cycles)
        ),
    )


def fit_profile(
    published: Mapping[str, Published],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
    train_on: Sequence[str] | None = None,
) -> Fit:
    """Fit the int8 latency constants of ``structure`` and the active power to published points.

    Latency: :func:`_solve` at ``base``'s clock. Energy: the active power is the mean of the
    published average powers (energy / latency) of the models fitted on, so latency errors are
    not hidden in it. Constants outside the structure keep ``base``'s values.

    Args:
        published: the published latency and energy per model.
        layers: each model's layers (int8, from :func:`reference_layers`).
        base: the profile whose clock, fixed constants and float32 costs are kept.
        structure: which constants are fitted.
        train_on: the models fitted on (all of ``published`` by default).

    Returns:
        The fitted profile and its predictions for every model in ``layers``.
    """
    keys = list(train_on if train_on is not None else published)
    points = [(key, published[key].latency_ms, base.clock_hz) for key in keys]
    fitted = _solve(points, layers, base=base, structure=structure)
    latency = {key: fitted.estimate(model).latency_ms for key, model in layers.items()}
    power = float(np.mean([published[key].power_mw for key in keys]))
    fitted = replace(fitted, active_power_mw=power)
    return Fit(
        structure=structure,
        trained_on=tuple(keys),
        target=fitted,
        latency_ms=latency,
        energy_uj={key: value * power for key, value in latency.items()},
    )


def leave_one_out(
    published: Mapping[str, Published],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
) -> dict[str, dict[str, float]]:
    """Out-of-sample relative errors: each model predicted by a fit on the others.

    Returns:
        ``{model: {"latency": error, "energy": error}}`` with error = predicted / published - 1.
    """
    errors = {}
    for held_out in published:
        others = [key for key in published if key != held_out]
        fit = fit_profile(published, layers, base=base, structure=structure, train_on=others)
        errors[held_out] = fit.errors({held_out: published[held_out]})[held_out]
    return errors


# -- boards -------------------------------------------------------------------------------------
#: Cores that are one class for a leave-one-board-out fallback: single-issue three-stage
#: pipelines with the same DSP extension (SMLAD dual 16-bit MACs), so the same CMSIS-NN-class
#: kernels; a board whose core and runtime no other board shares is predicted from this class.
DSP_CORES = ("Cortex-M4", "Cortex-M33")


@dataclass(frozen=True)
class BoardRun:
    """One board's MLPerf Tiny closed-division results with one runtime.

    ``throughput`` is the median inferences per second of each model's
    ``performance/results.txt`` and ``energy_uj`` the median uJ per inference of its
    ``energy/results.txt``, both under ``source`` (repository, commit, results folder), as
    published; latency is 1000 / throughput (shared/research/perf-anchors.md section 3).
    """

    board: str
    core: str
    clock_hz: float
    runtime: str
    source: str
    throughput: Mapping[str, float]
    energy_uj: Mapping[str, float]

    @property
    def key(self) -> str:
        return f"{self.board} {self.runtime}"

    @property
    def published(self) -> dict[str, Published]:
        return {
            model: Published(1000.0 / rate, self.energy_uj[model])
            for model, rate in self.throughput.items()
        }

    def power_mw(self, models: Sequence[str] | None = None) -> float:
        """Mean published average power (energy / latency) over ``models`` (all by default)."""
        points = self.published
        return float(np.mean([points[key].power_mw for key in (models or list(points))]))


def _st(version: str, commit: str, folder: str) -> str:
    return (
        f"mlcommons/tiny_results_{version} (commit {commit[:7]}) "
        f"closed/STMicroelectronics/results/{folder}"
    )


#: Every closed-division result of ST's NUCLEO boards that names its runtime and has both a
#: performance and an energy median in the stored results repositories (systems JSON of each
#: round: core, clock, runtime). Round v1.1 (X-CUBE-AI 8.1) of the U575 and H7A3 is left out
#: (its stored copy lacks some results.txt files); the L4R5ZI's v1.1 and v0.5 results are
#: :data:`PUBLISHED`. In v1.0 the H7A3's IC energy folder is spelled ``ic/enegy``.
BOARD_RUNS: tuple[BoardRun, ...] = (
    BoardRun(
        "NUCLEO-L4R5ZI",
        "Cortex-M4",
        120e6,
        "X-CUBE-AI 7.3",
        _st("v1.0", "abb8e49aa59f3ad9e8d85ab98ebed0e583358ec3", "NUCLEO_L4R5ZI"),
        {"kws": 13.323, "vww": 4.339, "ic": 4.407, "ad": 131.950},
        {"kws": 3371.738, "vww": 10066.628, "ic": 10681.623, "ad": 322.977},
    ),
    BoardRun(
        "NUCLEO-U575ZI-Q",
        "Cortex-M33",
        160e6,
        "X-CUBE-AI 7.3",
        _st("v1.0", "abb8e49aa59f3ad9e8d85ab98ebed0e583358ec3", "NUCLEO-U575ZI-Q"),
        {"kws": 22.608, "vww": 7.496, "ic": 7.158, "ad": 206.211},
        {"kws": 1138.534, "vww": 3364.456, "ic": 3641.998, "ad": 119.113},
    ),
    BoardRun(
        "NUCLEO-H7A3ZI-Q",
        "Cortex-M7",
        280e6,
        "X-CUBE-AI 7.3",
        _st("v1.0", "abb8e49aa59f3ad9e8d85ab98ebed0e583358ec3", "NUCLEO-H7A3ZI-Q"),
        {"kws": 59.667, "vww": 19.722, "ic": 18.401, "ad": 547.705},
        {"kws": 2721.781, "vww": 7978.465, "ic": 8707.284, "ad": 266.486},
    ),
    BoardRun(
        "NUCLEO-L4R5ZI",
        "Cortex-M4",
        120e6,
        "X-CUBE-AI 9.0",
        _st("v1.2", "b448c5c7110903f4c0d8a24682f95b4903cdfd02", "NUCLEO_L4R5ZI"),
        {"kws": 23.155, "vww": 11.245, "ic": 6.056, "ad": 190.086},
        {"kws": 1820.454, "vww": 3894.566, "ic": 6919.375, "ad": 203.368},
    ),
    BoardRun(
        "NUCLEO-U575ZI-Q",
        "Cortex-M33",
        160e6,
        "X-CUBE-AI 9.0",
        _st("v1.2", "b448c5c7110903f4c0d8a24682f95b4903cdfd02", "NUCLEO_U575ZI_Q"),
        {"kws": 34.416, "vww": 16.870, "ic": 9.003, "ad": 291.589},
        {"kws": 656.163, "vww": 1354.685, "ic": 2578.969, "ad": 81.875},
    ),
    BoardRun(
        "NUCLEO-H7A3ZI-Q",
        "Cortex-M7",
        280e6,
        "X-CUBE-AI 9.0",
        _st("v1.2", "b448c5c7110903f4c0d8a24682f95b4903cdfd02", "NUCLEO_H7A3ZI_Q"),
        {"kws": 88.356, "vww": 42.009, "ic": 24.483, "ad": 816.004},
        {"kws": 1375.599, "vww": 2965.461, "ic": 5090.283, "ad": 165.728},
    ),
    BoardRun(
        "NUCLEO-L4R5ZI-P",
        "Cortex-M4",
        120e6,
        "X-CUBE-AI 10.2",
        _st("v1.3", "eae9ef9f4e90d829f54ea8614b03e332b391f692", "NUCLEO_L4R5ZI-P"),
        {"kws": 23.032, "vww": 11.181, "ic": 6.036, "ad": 208.608},
        {"kws": 1430.6681, "vww": 3029.7521, "ic": 5495.9150, "ad": 160.4232},
    ),
    BoardRun(
        "NUCLEO-U575ZI-Q",
        "Cortex-M33",
        160e6,
        "X-CUBE-AI 10.2",
        _st("v1.3", "eae9ef9f4e90d829f54ea8614b03e332b391f692", "NUCLEO_U575ZI_Q"),
        {"kws": 34.489, "vww": 16.873, "ic": 9.133, "ad": 311.579},
        {"kws": 664.4239, "vww": 1372.1684, "ic": 2565.2442, "ad": 77.2364},
    ),
    BoardRun(
        "NUCLEO-U385RG-Q",
        "Cortex-M33",
        96e6,
        "X-CUBE-AI 10.2",
        _st("v1.3", "eae9ef9f4e90d829f54ea8614b03e332b391f692", "NUCLEO_U385RG_Q"),
        {"kws": 20.703, "vww": 10.128, "ic": 5.481, "ad": 184.851},
        {"kws": 245.3412, "vww": 518.9761, "ic": 965.5817, "ad": 31.8347},
    ),
)


@dataclass(frozen=True)
class BoardFit:
    """Latency constants fitted on some (board, model) results of one core and runtime, and
    each board's predictions at its own clock and its own measured power."""

    structure: Structure
    trained_on: tuple[tuple[str, str], ...]
    target: Target  # the fitted constants (clock and power of ``base``, not of a board)
    latency_ms: dict[str, dict[str, float]]  # run key -> model -> predicted
    energy_uj: dict[str, dict[str, float]]

    def errors(self, runs: Sequence[BoardRun]) -> dict[str, dict[str, dict[str, float]]]:
        """Relative error (predicted / published - 1) per board, model, latency and energy."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for run in runs:
            if run.key not in self.latency_ms:
                continue
            out[run.key] = {
                key: {
                    "latency": self.latency_ms[run.key][key] / point.latency_ms - 1,
                    "energy": self.energy_uj[run.key][key] / point.energy_uj - 1,
                }
                for key, point in run.published.items()
            }
        return out

    def constants(self) -> dict[str, Any]:
        """The fitted numbers, as they go into a board profile's YAML file (its clock and power
        are the board's own)."""
        return Fit(self.structure, (), self.target, {}, {}).constants()


def fit_boards(
    runs: Sequence[BoardRun],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
    train_on: Sequence[tuple[str, str]] | None = None,
    predict: Sequence[BoardRun] | None = None,
) -> BoardFit:
    """Fit one set of latency constants to several boards' results; predict every board.

    The fit is :func:`fit_profile`'s, with each result's cycles taken at its own board's clock.
    Energy is each predicted latency times the board's own measured average power: the mean
    over the models of that board fitted on, or over all its models when none of them was (a
    board held out whole keeps its own power: only the cycle constants come from other boards).

    Args:
        runs: the boards fitted on (one core and runtime, or one class of them).
        layers: each model's layers (int8, from :func:`reference_layers`).
        base: the profile whose fixed constants and float32 costs are kept.
        structure: which constants are fitted.
        train_on: the ``(run.key, model)`` results fitted on (all of ``runs`` by default).
        predict: the boards to predict (``runs`` by default).

    Returns:
        The fitted constants and the predictions for every model of every board in ``predict``.
    """
    pairs = (
        list(train_on)
        if train_on is not None
        else [(run.key, key) for run in runs for key in run.published]
    )
    chosen = set(pairs)
    points = [
        (key, point.latency_ms, run.clock_hz)
        for run in runs
        for key, point in run.published.items()
        if (run.key, key) in chosen
    ]
    fitted = _solve(points, layers, base=base, structure=structure)
    latency: dict[str, dict[str, float]] = {}
    energy: dict[str, dict[str, float]] = {}
    for run in predict if predict is not None else runs:
        seen = [key for key in run.published if (run.key, key) in chosen]
        power = run.power_mw(seen or None)
        board = replace(fitted, clock_hz=run.clock_hz, active_power_mw=power)
        latency[run.key] = {key: board.estimate(layers[key]).latency_ms for key in run.published}
        energy[run.key] = {key: value * power for key, value in latency[run.key].items()}
    return BoardFit(structure, tuple(pairs), fitted, latency, energy)


def board_peers(run: BoardRun, runs: Sequence[BoardRun]) -> list[BoardRun]:
    """The boards a held-out board is predicted from: the others with its core and runtime, or,
    when there are none, the others with its runtime whose core is in its class
    (:data:`DSP_CORES`); empty when neither exists (the only Cortex-M7)."""
    others = [other for other in runs if other.key != run.key and other.runtime == run.runtime]
    same = [other for other in others if other.core == run.core]
    if same or run.core not in DSP_CORES:
        return same
    return [other for other in others if other.core in DSP_CORES]


def leave_one_board_out(
    runs: Sequence[BoardRun],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
) -> dict[str, dict[str, dict[str, float]]]:
    """Out-of-sample errors per board: each board predicted by constants fitted on its peers
    (:func:`board_peers`) only, at its own clock and with its own measured power.

    Returns:
        ``{run.key: {model: {"latency": error, "energy": error}}}`` for every board with peers.
    """
    errors = {}
    for run in runs:
        peers = board_peers(run, runs)
        if peers:
            fit = fit_boards(peers, layers, base=base, structure=structure, predict=[run])
            errors.update(fit.errors([run]))
    return errors


def leave_one_model_out(
    runs: Sequence[BoardRun],
    layers: Mapping[str, Sequence[Layer]],
    *,
    base: Target,
    structure: Structure,
) -> dict[str, dict[str, dict[str, float]]]:
    """Out-of-sample errors per board: each model predicted on every board by constants fitted
    on the other models of all ``runs`` (one core and runtime), with each board's power the mean
    over its other models.

    Returns:
        ``{run.key: {model: {"latency": error, "energy": error}}}``.
    """
    errors: dict[str, dict[str, dict[str, float]]] = {run.key: {} for run in runs}
    for held_out in REFERENCE_MODELS:
        pairs = [(run.key, key) for run in runs for key in run.published if key != held_out]
        fit = fit_boards(runs, layers, base=base, structure=structure, train_on=pairs)
        for key, row in fit.errors(runs).items():
            errors[key][held_out] = row[held_out]
    return errors


def core_runtime_groups(runs: Sequence[BoardRun]) -> dict[str, list[BoardRun]]:
    """The runs that share one constant set: same core and same runtime."""
    groups: dict[str, list[BoardRun]] = {}
    for run in runs:
        groups.setdefault(f"{run.core} {run.runtime}", []).append(run)
    return groups
