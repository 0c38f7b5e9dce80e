"""MLPerf Tiny published results, and fitting a target profile's constants to them.

The yardstick for what a profile says about a microcontroller we cannot run: the MLPerf Tiny
closed-division results of the NUCLEO-L4R5ZI board (Arm Cortex-M4F, 120 MHz), with two
runtimes: TensorFlow Lite Micro 2.3.1 built with CMSIS-NN kernels (the v0.5 reference
submission) and ST X-CUBE-AI 8.1 (v1.1). The four reference models are rebuilt from the zoo,
exported, quantized to int8 with our PTQ and read as layers (:func:`reference_layers`);
:func:`fit_profile` fits the estimator's constants to the published latencies and energies by
non-negative least squares on relative errors, and :func:`leave_one_out` predicts each model
from a fit on the other three.

Four points cannot pin down a cycles-per-MAC for each of three op kinds plus memory, element and
per-layer costs: each model is dominated by one kind (IC: convolution, AD: fully connected) and
KWS and VWW mix convolution and depthwise in the same proportion (10.8% and 10.7% depthwise
MACs). So a :class:`Structure` ties constants together (kinds sharing one cost) and fits at most
two latency constants; the element and per-layer costs stay at the base profile's cited values.
:mod:`edgeopt.measure.boards` fits the same constants across several boards of one core and
runtime (:func:`fit_constants` takes each result at its own board's clock).
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
    "MIN_CYCLES_PER_MAC",
    "PUBLISHED",
    "REFERENCE_MODELS",
    "STRUCTURES",
    "Fit",
    "Published",
    "Structure",
    "fit_constants",
    "fit_profile",
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


def fit_constants(
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

    Args:
        points: the published results fitted on.
        layers: each model's layers (int8, from :func:`reference_layers`).
        base: the profile whose clock, power, fixed constants and float32 costs are kept.
        structure: which constants are fitted.

    Returns:
        ``base`` with the fitted constants (a group the fit drives to 0 gets
        :data:`MIN_CYCLES_PER_MAC`).
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

    Latency: :func:`fit_constants` at ``base``'s clock. Energy: the active power is the mean of the
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
    fitted = fit_constants(points, layers, base=base, structure=structure)
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
