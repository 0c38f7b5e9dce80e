"""The cost model of edgeopt's C kernels, fitted to instructions counted on an emulated core.

A target profile prices a layer as ``macs * cycles_per_mac[kind] + output_elements *
cycles_per_output[kind] + macs / kernel_elements * cycles_per_channel[kind] + ops *
cycles_per_element + layer_overhead_cycles``
(:meth:`edgeopt.target.Target.layer_cycles`). For a profile whose runtime is edgeopt's own C
library those constants need not be guessed: :func:`~edgeopt.measure.cortexm.measure_cortexm`
counts the instructions of every kernel call, and each call is one layer of
:func:`edgeopt.graph.analyse` (joined by the ONNX node's ``name (OpType)``). :func:`fit_kernels`
fits instructions per MAC, per output element (one row per kernel kind: ``conv``,
``pointwise``, ``depthwise``, ``fc``), per window channel of a general convolution (its loop
over input channels and kernel rows: a 1x1 stride-2 convolution pays it once per MAC), per
element operation of the other layers and per call
with non-negative least squares on relative errors (``scipy.optimize.nnls``; each layer's row
divided by its count, so a small layer weighs as much as a large one).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from edgeopt.graph import Layer
    from edgeopt.measure.cortexm import CortexMRun

__all__ = [
    "CONSTANTS",
    "LayerCount",
    "ModelCount",
    "fit_kernels",
    "layer_counts",
    "layer_features",
    "measure_model",
    "predict",
]

#: The fitted constants, named as the profile's YAML fields (int8 layers).
CONSTANTS = (
    "cycles_per_mac.conv.int8",
    "cycles_per_output.conv.int8",
    "cycles_per_channel.conv.int8",
    "cycles_per_mac.pointwise.int8",
    "cycles_per_output.pointwise.int8",
    "cycles_per_mac.depthwise.int8",
    "cycles_per_output.depthwise.int8",
    "cycles_per_mac.fc.int8",
    "cycles_per_output.fc.int8",
    "cycles_per_element.int8",
    "layer_overhead_cycles",
)


@dataclass(frozen=True)
class LayerCount:
    """One layer of the graph and the instructions its kernel call executed."""

    layer: Layer
    function: str  # the C kernel
    instructions: int


def layer_features(layer: Any) -> dict[str, float]:
    """What each constant of :data:`CONSTANTS` multiplies for one int8 layer, as
    :meth:`~edgeopt.target.Target.layer_cycles` prices it (a fused layer: nothing)."""
    if layer.kind == "fused":
        return {}
    features = {"layer_overhead_cycles": 1.0}
    ops = getattr(layer, "ops", None)
    if layer.kind in ("conv", "depthwise", "fc"):
        kind = "pointwise" if getattr(layer, "is_pointwise", False) else layer.kind
        features[f"cycles_per_mac.{kind}.int8"] = float(layer.macs)
        features[f"cycles_per_output.{kind}.int8"] = float(layer.output_elements)
        if kind == "conv":  # the window's channel loop (pointwise, depthwise: collinear)
            features["cycles_per_channel.conv.int8"] = layer.macs / layer.kernel_elements
        features["cycles_per_element.int8"] = float(ops or 0)
    elif layer.kind != "data":
        elements = layer.output_elements if ops is None else ops
        features["cycles_per_element.int8"] = float(elements)
    return features


def layer_counts(run: CortexMRun, layers: Iterable[Layer]) -> tuple[list[LayerCount], int]:
    """The run's kernel calls joined to the graph's layers by node label.

    Returns:
        The joined layers, in schedule order, and the instructions of the calls that have no
        layer (converting the input, a copy the lowering added).
    """
    by_label = {layer.label: layer for layer in layers}
    joined, unmatched = [], 0
    for step in run.layers:
        layer = by_label.get(step.node)
        if layer is None or layer.kind == "fused":
            unmatched += step.instructions
        else:
            joined.append(LayerCount(layer, step.function, step.instructions))
    return joined, unmatched


def fit_kernels(counts: Sequence[LayerCount]) -> dict[str, float]:
    """Instructions per MAC, per output element, per element operation and per call.

    Args:
        counts: measured layers (from :func:`layer_counts`) of the models fitted on.

    Returns:
        Each constant of :data:`CONSTANTS` in instructions; one no layer exercises is 0.

    Example:
        >>> from types import SimpleNamespace as L
        >>> fc = [L(kind="fc", macs=m, output_elements=o, ops=0) for m, o in ((800, 10), (50, 5))]
        >>> fit = fit_kernels([LayerCount(fc[0], "fc", 6000), LayerCount(fc[1], "fc", 550)])
        >>> round(fit["cycles_per_mac.fc.int8"] * 800 + fit["cycles_per_output.fc.int8"] * 10
        ...       + fit["layer_overhead_cycles"])
        6000
    """
    import numpy as np
    from scipy.optimize import nnls

    rows = np.array(
        [[layer_features(c.layer).get(name, 0.0) for name in CONSTANTS] for c in counts]
    )
    measured = np.array([float(c.instructions) for c in counts])
    solution, _ = nnls(rows / measured[:, None], np.ones(len(counts)))
    return {name: float(value) for name, value in zip(CONSTANTS, solution, strict=True)}


def predict(constants: Mapping[str, float], layer: Any) -> float:
    """Instructions of one layer under fitted ``constants`` (a missing one counts 0)."""
    return sum(constants.get(name, 0.0) * value for name, value in layer_features(layer).items())


@dataclass(frozen=True)
class ModelCount:
    """One zoo model quantized, exported to C and counted on an emulated core."""

    spec: str
    onnx_path: Path  # the int8 file the C library was made from
    run: CortexMRun
    counts: tuple[LayerCount, ...]
    unmatched_instructions: int


def measure_model(spec: str, folder: Path, *, core: str = "cortex-m4") -> ModelCount:
    """Quantize a model (minmax PTQ on Gaussian samples, BatchNorm statistics that look
    trained, as :func:`edgeopt.measure.mlperf.reference_layers` does: the counts do not depend
    on the values), export it as C and count its instructions on one seeded random input.

    Args:
        spec: a model spec (``zoo:resnet8?input=3x32x32&classes=10``).
        folder: where the ONNX files and the C library are written.
        core: a name of :data:`edgeopt.measure.cortexm.CORES`.

    Returns:
        The int8 file, the run and its layers joined to the graph's.

    Raises:
        InputError: the emulator's tools are missing (see
            :func:`~edgeopt.measure.cortexm.require_cortexm_tools`).
    """
    from edgeopt.export.c import export_c
    from edgeopt.export.onnx import export_onnx
    from edgeopt.graph import analyse
    from edgeopt.measure.cortexm import fixed_inputs
    from edgeopt.measure.cortexm import measure_cortexm
    from edgeopt.measure.mlperf import _random_dataset
    from edgeopt.measure.mlperf import _trained_looking
    from edgeopt.models import load_model
    from edgeopt.models import read_onnx
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    handle = load_model(spec)
    _trained_looking(handle.require_torch("export"))
    path = export_onnx(handle, folder / "model.onnx")
    data = _random_dataset(handle.require_input_shape())
    written = quantize(
        str(path), PTQConfig(calibration="minmax"), data=data, output=folder / "int8.onnx"
    )
    assert written.model.onnx_path is not None
    int8 = Path(written.model.onnx_path)
    _, layers = analyse(read_onnx(int8))
    export = export_c(int8, folder / "c")
    run = measure_cortexm(
        export, fixed_inputs(export, samples=1), core=core, inputs_source="1 seeded random input"
    )
    counts, unmatched = layer_counts(run, layers)
    return ModelCount(spec, int8, run, tuple(counts), unmatched)
