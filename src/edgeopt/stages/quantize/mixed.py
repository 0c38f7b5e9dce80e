"""Mixed precision: per-layer weight bits (float / 8 / 4) chosen to meet a flash budget.

1. Sensitivity: for every Conv / Gemm / MatMul with a constant weight, a QDQ file is written in
   which only that layer is quantized (its weight at 8 and at 4 bits, its input and output
   activations at 8), and ONNX Runtime measures its accuracy on the validation split; the drop
   from the fp32 file's is the layer's sensitivity. The same files give the bytes the layer's
   tensors take in each form (the serialized initializers: weight, scales, zero points, bias).
2. Allocation: the predicted loss of a choice is the sum of its layers' drops (the additive
   proxy of HAWQ, Dong et al. 2019, arXiv 1905.03696, with measured drops for Hessian traces);
   the predicted size is the layers' bytes plus a measured overhead (the all-8-bit file's size
   less its layers' bytes). A multiple-choice knapsack, solved exactly by dynamic programming
   over the byte budget in units of at most 1/131072 of it (each layer's bytes rounded up, so the
   prediction never undershoots), picks the least predicted loss; at equal loss it prefers 8
   bits, then 4, then float (8-bit layers run with int8 kernels; ONNX Runtime dequantizes 4-bit
   weights to float). Float is chosen only for a layer whose 8-bit drop is measurable.
3. Verification: the chosen file is written and its size measured; when the overhead was
   underestimated, the weight budget shrinks by the excess and the allocation runs again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from collections.abc import Collection
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import numpy as np

from edgeopt.config import Config
from edgeopt.errors import BudgetError
from edgeopt.errors import InputError
from edgeopt.graph import INT8_OP_TYPES
from edgeopt.registry import register_stage
from edgeopt.stages._stage import ChoiceContext
from edgeopt.stages._stage import Deferred
from edgeopt.stages._stage import QuantizeOutput
from edgeopt.stages._stage import StageContext
from edgeopt.stages.quantize.calibrate import CALIBRATION_METHODS

if TYPE_CHECKING:
    import onnx

__all__ = [
    "LayerSensitivity",
    "MixedPlan",
    "MixedPrecisionConfig",
    "allocate_bits",
    "mixed_budget",
    "run_mixed",
]

FLOAT = "float"
#: ``stamp(model, float_nodes)``: the caller's finishing touch (metadata) before a size counts.
Stamp = Callable[[Any, list[str]], None]
_WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
_FUSED_ACTIVATIONS = ("Relu", "Clip")
_DP_UNITS = 1 << 17  # exact to the byte up to 128 KiB budgets; coarser units above
_VERIFY_ROUNDS = 5


@dataclass(frozen=True)
class MixedPrecisionConfig(Config):
    """Per-layer weight bits under a flash budget: float, 8 or 4 bits; activations 8-bit.

    Fields: ``max_flash_bytes`` (the file's size budget, bytes), ``candidates`` (weight bits
    to choose from: 8 and/or 4), ``allow_float`` (a sensitive layer may stay float),
    ``calibration`` and ``percentile`` (activation ranges, as in PTQ), ``is_per_channel``,
    ``validation_samples`` (validation samples the sensitivity is measured on; 0: all).
    """

    kind: ClassVar[str] = "quantize.mixed"
    max_flash_bytes: int = 0
    candidates: tuple[int, ...] = (8, 4)
    allow_float: bool = True
    calibration: str = "mse"
    percentile: float = 99.99
    is_per_channel: bool = True
    validation_samples: int = 0

    def label(self) -> str:
        return f"mixed({self.max_flash_bytes:,} B)"

    def __post_init__(self) -> None:
        if isinstance(self.candidates, int | str) or not self.candidates:
            raise InputError(f"{self.kind}: candidates must be a list of weight bits (8, 4).")
        object.__setattr__(self, "candidates", tuple(self.candidates))
        bad = [b for b in self.candidates if isinstance(b, bool) or b not in (4, 8)]
        if bad:
            raise InputError(f"{self.kind}: bits must be 4 or 8, got {bad[0]}.")
        if len(set(self.candidates)) != len(self.candidates):
            raise InputError(f"{self.kind}: candidates lists the same bits twice.")
        if isinstance(self.max_flash_bytes, bool) or not (
            isinstance(self.max_flash_bytes, int) and self.max_flash_bytes > 0
        ):
            raise InputError(
                f"{self.kind}: max_flash_bytes must be a positive number of bytes, "
                f"got {self.max_flash_bytes!r}."
            )
        if self.calibration not in CALIBRATION_METHODS:
            known = ", ".join(CALIBRATION_METHODS)
            raise InputError(
                f"{self.kind}: calibration must be one of {known}, got {self.calibration!r}."
            )
        if not 0.0 < self.percentile <= 100.0:
            raise InputError(f"{self.kind}: percentile must be in (0, 100], got {self.percentile}.")
        if self.validation_samples < 0:
            raise InputError(f"{self.kind}: validation_samples must be 0 or more.")

    def describe(self) -> str:
        bits = "/".join(str(b) for b in self.candidates) + ("/float" if self.allow_float else "")
        return f"{self.kind}(max_flash_bytes={self.max_flash_bytes}, bits={bits})"


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's row of the sensitivity table (drops are fractions: 0.01 is 1 pp)."""

    layer: str
    op_type: str
    params: int
    float_bytes: int
    int8_bytes: int
    int4_bytes: int
    drop_8: float | None
    drop_4: float | None

    def bytes_for(self, choice: int | str) -> int:
        return {FLOAT: self.float_bytes, 8: self.int8_bytes, 4: self.int4_bytes}[choice]

    def drop_for(self, choice: int | str) -> float:
        if choice == FLOAT:
            return 0.0
        drop = self.drop_8 if choice == 8 else self.drop_4
        return max(0.0, drop if drop is not None else math.inf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "op_type": self.op_type,
            "params": self.params,
            "bytes": {"float": self.float_bytes, "8": self.int8_bytes, "4": self.int4_bytes},
            "drop_pp": {
                "8": None if self.drop_8 is None else 100 * self.drop_8,
                "4": None if self.drop_4 is None else 100 * self.drop_4,
            },
        }


@dataclass(frozen=True)
class MixedPlan:
    """The sensitivity table, the chosen bits and what was predicted and measured."""

    sensitivity: tuple[LayerSensitivity, ...]
    bits: dict[str, int | str]
    overhead_bytes: int
    predicted_bytes: int
    size_bytes: int
    predicted_drop: float
    validation_drop: float
    smallest_bytes: int
    fp32_validation_accuracy: float
    budget_bytes: int = 0
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "bits": dict(self.bits),
            "sensitivity": [row.to_dict() for row in self.sensitivity],
            "overhead_bytes": self.overhead_bytes,
            "predicted_bytes": self.predicted_bytes,
            "size_bytes": self.size_bytes,
            "smallest_bytes": self.smallest_bytes,
            "predicted_drop_pp": 100 * self.predicted_drop,
            "validation_drop_pp": 100 * self.validation_drop,
            "fp32_validation_accuracy": self.fp32_validation_accuracy,
            "notes": list(self.notes),
        }


def _weighted_layers(prepared: onnx.ModelProto, exclude: Collection[str]) -> list[Any]:
    constants = {init.name for init in prepared.graph.initializer}
    return [
        node
        for node in prepared.graph.node
        if node.op_type in _WEIGHTED_OPS
        and len(node.input) > 1
        and node.input[1] in constants
        and node.name not in exclude
    ]


def _layer_bytes(model: onnx.ModelProto, node_name: str) -> int:
    """Serialized bytes of a layer's constant inputs, through their DequantizeLinear if any."""
    inits = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    names: set[str] = set()
    for name in list(node.input)[1:]:
        if name in inits:
            names.add(name)
        elif name in producers and producers[name].op_type == "DequantizeLinear":
            names.update(n for n in producers[name].input if n in inits)
    # Each initializer costs its own bytes plus a field tag and a length prefix in the graph.
    sizes = [inits[n].ByteSize() for n in names]
    return sum(size + 2 + math.ceil(size.bit_length() / 7) for size in sizes)


def _accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 of one variant: its integers as a device computes them, on any host (4-bit layers
    included, which ONNX Runtime alone would compute in float)."""
    from edgeopt.measure.int8 import make_exact_session
    from edgeopt.measure.runtime import predict
    from edgeopt.measure.runtime import top1

    return top1(predict(make_exact_session(model, threads=os.cpu_count() or 1), x), y)


def _others(prepared: onnx.ModelProto, node: Any) -> list[str]:
    """Every int8-capable node but ``node`` and the ReLU / Clip right after it."""
    consumers = [n for n in prepared.graph.node if node.output[0] in n.input]
    keep = {node.name}
    if len(consumers) == 1 and consumers[0].op_type in _FUSED_ACTIVATIONS:
        keep.add(consumers[0].name)
    return [
        other.name
        for other in prepared.graph.node
        if other.op_type in INT8_OP_TYPES and other.name not in keep
    ]


def measure_sensitivity(
    prepared: onnx.ModelProto,
    ranges: dict[str, tuple[float, float]],
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    candidates: Collection[int],
    per_channel: bool,
    exclude: Collection[str] = (),
) -> tuple[tuple[LayerSensitivity, ...], float]:
    """The sensitivity table and the fp32 validation accuracy (see the module docstring)."""
    from edgeopt.stages.quantize.qdq import write_qdq

    base = _accuracy(prepared, x_val, y_val)
    rows = []
    for node in _weighted_layers(prepared, exclude):
        others = _others(prepared, node)
        drops: dict[int, float | None] = {8: None, 4: None}
        sizes = {}
        for bits in (8, 4):
            single, _ = write_qdq(
                prepared, ranges, per_channel=per_channel, weight_bits=bits, exclude_nodes=others
            )
            sizes[bits] = _layer_bytes(single, node.name)
            if bits in candidates:
                drops[bits] = base - _accuracy(single, x_val, y_val)
        params = sum(
            int(np.prod(init.dims))
            for init in prepared.graph.initializer
            if init.name in list(node.input)[1:]
        )
        rows.append(
            LayerSensitivity(
                layer=node.name,
                op_type=node.op_type,
                params=params,
                float_bytes=_layer_bytes(prepared, node.name),
                int8_bytes=sizes[8],
                int4_bytes=sizes[4],
                drop_8=drops[8],
                drop_4=drops[4],
            )
        )
    return tuple(rows), base


def allocate_bits(
    rows: Collection[LayerSensitivity],
    budget_bytes: int,
    *,
    candidates: Collection[int] = (8, 4),
    allow_float: bool = True,
) -> dict[str, int | str] | None:
    """Per-layer choice with the least summed drop whose bytes fit ``budget_bytes``.

    Exact multiple-choice knapsack by dynamic programming over the budget in at most
    ``_DP_UNITS`` units; each layer's bytes are rounded up to whole units. At equal drop the
    order of preference is 8 bits, 4 bits, float. None when nothing fits.

    Example:
        >>> rows = [LayerSensitivity("a", "Conv", 100, 400, 120, 70, 0.0, 0.02),
        ...         LayerSensitivity("b", "Gemm", 1000, 4000, 1020, 520, 0.001, 0.001)]
        >>> allocate_bits(rows, 800)
        {'a': 8, 'b': 4}
    """
    rows = list(rows)
    if budget_bytes < 0:
        return None
    unit = max(1, math.ceil(budget_bytes / _DP_UNITS))
    capacity = budget_bytes // unit
    choices: list[int | str] = [b for b in (8, 4) if b in candidates]
    if allow_float:
        choices.append(FLOAT)
    # Ties: less than one validation sample's worth of accuracy separates the preferences.
    tie = 1e-7 / max(1, len(rows))
    best = np.zeros(capacity + 1)
    picks = []
    for row in rows:
        new = np.full(capacity + 1, np.inf)
        pick = np.full(capacity + 1, -1)
        for index, choice in enumerate(choices):
            weight = math.ceil(row.bytes_for(choice) / unit)
            cost = row.drop_for(choice) + tie * index
            if weight > capacity or not math.isfinite(cost):
                continue
            candidate = np.full(capacity + 1, np.inf)
            candidate[weight:] = best[: capacity + 1 - weight] + cost
            better = candidate < new
            new[better], pick[better] = candidate[better], index
        best = new
        picks.append(pick)
    if not np.isfinite(best[capacity]):
        return None
    chosen: dict[str, int | str] = {}
    remaining = capacity
    for row, pick in zip(reversed(rows), reversed(picks), strict=True):
        choice = choices[int(pick[remaining])]
        chosen[row.layer] = choice
        remaining -= math.ceil(row.bytes_for(choice) / unit)
    return {row.layer: chosen[row.layer] for row in rows}


def _predicted_drop(rows: Collection[LayerSensitivity], bits: dict[str, int | str]) -> float:
    return sum(row.drop_for(bits[row.layer]) for row in rows)


def _best_allocation(
    rows: Collection[LayerSensitivity],
    budget: int,
    overheads: dict[bool, int],
    config: MixedPrecisionConfig,
) -> dict[str, int | str] | None:
    """The better of the allocations without and with 4-bit weights, each with its overhead;
    at equal predicted drop, the one without (int8 kernels run faster)."""
    found = []
    without_4 = [bits for bits in config.candidates if bits != 4]
    if without_4 or config.allow_float:
        found.append(
            allocate_bits(
                rows,
                budget - overheads[False],
                candidates=without_4,
                allow_float=config.allow_float,
            )
        )
    if 4 in config.candidates:
        found.append(
            allocate_bits(
                rows,
                budget - overheads[True],
                candidates=config.candidates,
                allow_float=config.allow_float,
            )
        )
    feasible = [bits for bits in found if bits is not None]
    if not feasible:
        return None
    return min(feasible, key=lambda bits: _predicted_drop(rows, bits))


def _write(
    prepared: onnx.ModelProto,
    ranges: dict[str, tuple[float, float]],
    bits: dict[str, int | str],
    config: MixedPrecisionConfig,
    scratch: Path,
    stamp: Stamp | None = None,
) -> tuple[Any, list[str], int]:
    from edgeopt.export.onnx import save_onnx
    from edgeopt.stages.quantize.qdq import write_qdq

    floats = [name for name, choice in bits.items() if choice == FLOAT]
    layer_bits = {name: int(choice) for name, choice in bits.items() if choice != FLOAT}
    model, float_nodes = write_qdq(
        prepared,
        ranges,
        per_channel=config.is_per_channel,
        exclude_nodes=floats,
        node_weight_bits=layer_bits,
    )
    if stamp is not None:
        stamp(model, float_nodes)
    path = save_onnx(model, scratch / "mixed-candidate.onnx")
    return model, float_nodes, path.stat().st_size


def run_mixed(
    prepared: onnx.ModelProto,
    ranges: dict[str, tuple[float, float]],
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: MixedPrecisionConfig,
    scratch: Path,
    *,
    stamp: Stamp | None = None,
) -> tuple[Any, list[str], MixedPlan]:
    """Measure the sensitivity, allocate bits under the budget, write and verify the file.

    Args:
        prepared: the pre-processed fp32 model (see :func:`edgeopt.stages.quantize.qdq.prepare`).
        ranges: the activation ranges (the calibrator's).
        x_val: validation inputs; ``y_val``: their labels.
        y_val: see ``x_val``.
        config: the budget and the candidates.
        scratch: a folder for the candidate files.
        stamp: ``stamp(model, float_nodes)`` adds the caller's metadata before each size is
            measured, so the budget holds for the file as it is finally written.

    Returns:
        The chosen QDQ model, the nodes left in float, and the plan.

    Raises:
        BudgetError: the budget is below the smallest file (every weight at the fewest bits).
    """
    if config.validation_samples:
        x_val, y_val = x_val[: config.validation_samples], y_val[: config.validation_samples]
    rows, base = measure_sensitivity(
        prepared,
        ranges,
        x_val,
        y_val,
        candidates=config.candidates,
        per_channel=config.is_per_channel,
    )
    if not rows:
        raise InputError(f"{config.kind}: the model has no Conv, Gemm or MatMul with weights.")
    smallest_bits = min(config.candidates)
    smallest = {row.layer: smallest_bits for row in rows}
    # The overhead (graph, activation scales, metadata) differs once a 4-bit weight upgrades the
    # graph to opset 21 (the version converter drops the exporter's graph metadata): measure both.
    sizes = {
        bits: _write(prepared, ranges, {r.layer: bits for r in rows}, config, scratch, stamp)[2]
        for bits in (8, 4)
    }
    overheads = {
        has_4: sizes[bits] - sum(row.bytes_for(bits) for row in rows)
        for has_4, bits in ((False, 8), (True, 4))
    }
    size_min = sizes[smallest_bits]
    budget = config.max_flash_bytes
    if budget < size_min:
        raise BudgetError(
            f"{config.kind}: max_flash_bytes {budget:,} is {size_min - budget:,} bytes below the "
            f"smallest file this model quantizes to ({size_min:,} bytes, every weight "
            f"{smallest_bits}-bit)."
        )
    notes: list[str] = []
    slack = 0
    for _ in range(_VERIFY_ROUNDS):
        bits = _best_allocation(rows, budget - slack, overheads, config) or dict(smallest)
        model, float_nodes, size = _write(prepared, ranges, bits, config, scratch, stamp)
        if size <= budget:
            break
        notes.append(f"the predicted size missed by {size - budget} bytes; budget lowered")
        slack += size - budget
    else:
        bits = dict(smallest)
        model, float_nodes, size = _write(prepared, ranges, bits, config, scratch, stamp)
    overhead = overheads[4 in bits.values()]
    predicted = overhead + sum(row.bytes_for(bits[row.layer]) for row in rows)
    plan = MixedPlan(
        sensitivity=rows,
        bits=bits,
        overhead_bytes=overhead,
        predicted_bytes=predicted,
        size_bytes=size,
        predicted_drop=_predicted_drop(rows, bits),
        validation_drop=base - _accuracy(model, x_val, y_val),
        smallest_bytes=size_min,
        fp32_validation_accuracy=base,
        budget_bytes=budget,
        notes=tuple(notes),
    )
    return model, float_nodes, plan


def mixed_budget(
    handle: Any,
    dataset: Any,
    fraction: float,
    scratch: Path,
    *,
    ptq_bytes: Callable[[Any, Any, int, Path], int],
) -> int:
    """Mixed precision's byte budget: ``fraction`` of the model's int8 file, never below its
    all-4-bit file (``ptq_bytes(handle, dataset, bits, scratch)`` writes and sizes each; the
    search passes :func:`edgeopt.search.space.ptq_bytes`).

    The graph, scales and metadata weigh more in a small model, so its 4-bit file can be 70-85%
    of its int8 file (a distilled LeNet-5 at width 0.25: 10,193 of 12,472 B); a budget under
    that is one no allocation meets, and failed the trial after its training. The 4-bit PTQ
    file is the floor (a few bytes over the all-4-bit file that mixed precision writes).
    """
    int8, int4 = (ptq_bytes(handle, dataset, bits, scratch) for bits in (8, 4))
    return max(int(fraction * int8), int4)


def _mixed_choice(choice: ChoiceContext) -> Deferred:
    """The search's ``mixed`` choice: a flash budget drawn as a fraction of the model's int8
    file, resolved once the trial's model exists (:func:`mixed_budget`, with the search's
    ``choice.ptq_bytes``)."""
    fraction = round(choice.trial.suggest_float("mixed_fraction", 0.65, 0.9, step=0.05), 2)
    ptq_bytes = choice.ptq_bytes

    def build(handle: Any, dataset: Any, scratch: Path) -> MixedPrecisionConfig:
        if ptq_bytes is None:
            raise ValueError("the mixed choice needs ChoiceContext.ptq_bytes to size its budget")
        budget = mixed_budget(handle, dataset, fraction, scratch, ptq_bytes=ptq_bytes)
        return MixedPrecisionConfig(max_flash_bytes=budget, allow_float=False)

    return Deferred(build)


@register_stage(MixedPrecisionConfig, choices={"mixed": _mixed_choice})
def apply_mixed(ctx: StageContext, config: MixedPrecisionConfig) -> QuantizeOutput:
    """Calibrate the fp32 model, measure each layer's sensitivity on the validation split and
    write the allocation that fits the flash budget."""
    from edgeopt.stages.quantize.calibrate import collect_stats
    from edgeopt.stages.quantize.calibrate import ranges_from_stats
    from edgeopt.stages.quantize.qdq import prepare

    assert ctx.calibration is not None and ctx.dataset is not None
    prepared = prepare(ctx.fp32, source=ctx.handle.spec)
    stats = collect_stats(prepared, ctx.calibration)
    ranges = ranges_from_stats(
        prepared, stats, method=config.calibration, percentile=config.percentile
    )
    x_val, y_val = ctx.dataset.arrays("val")
    if len(y_val) == 0:
        raise InputError(
            f"{ctx.dataset.spec}: the validation split is empty; mixed precision measures each "
            "layer's sensitivity on it."
        )
    quantized, float_nodes, plan = run_mixed(
        prepared, ranges, x_val, y_val, config, ctx.scratch, stamp=ctx.stamp
    )
    return QuantizeOutput(quantized, float_nodes, ranges, plan=plan)
