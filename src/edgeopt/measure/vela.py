"""Latency and memory on an Arm Ethos-U NPU, from Vela compiling the model's int8 ``.tflite``.

edgeopt has no Ethos-U to run on and does not model one: Vela, Arm's compiler for the
Ethos-U NPUs (ethos-u-vela, https://gitlab.arm.com/artificial-intelligence/ethos-u/ethos-u-vela),
schedules the network for the profile's accelerator, system configuration and memory mode and
estimates its cycles from that schedule and the memories' bandwidths and latencies (Vela's
PERFORMANCE.md: the cycle estimate is of the NPU alone; CPU operators are not counted). Vela
writes what we read into its output folder (OPTIONS.md: ``--verbose-performance`` adds the
per-layer table):

- ``<model>_summary_<system config>.csv``: ``cycles_total``, ``inference_time`` (s, at the
  system config's ``core_clock``), ``sram_memory_used`` and the off-chip areas' ``*_memory_used``
  (KiB), ``total_npu_encoded_weights`` (bytes);
- ``<model>_per-layer.csv``: one row per operator with its ``Target`` (NPU or CPU), ``Op Cycles``
  and ``MAC Count``, named by its output tensor.

The operators Vela leaves on the CPU run on the Cortex-M beside the NPU: they are priced with the
cycle model of the profile's ``npu.host_target`` (MACs counted on the ``.tflite``), named, and
added to the latency. Vela runs as a child process (an argument list, never a shell) on a copy of
the model in a temporary folder that is removed afterwards, whatever happens.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from edgeopt._optional import require
from edgeopt.errors import InputError

if TYPE_CHECKING:
    from edgeopt.target import Estimate
    from edgeopt.target import Target

__all__ = [
    "CpuOperator",
    "VelaLayer",
    "VelaResult",
    "compile_tflite",
    "estimate_npu",
    "onnx_to_tflite",
]

#: A .tflite larger than this is refused before Vela reads it (the largest MLPerf Tiny model is
#: under 1 MB; an Ethos-U55 system's flash is a few MB).
MAX_TFLITE_BYTES = 256 << 20
#: Seconds Vela may take on one model before it is stopped (it compiles the zoo in under 2 s).
VELA_TIMEOUT_S = 600
#: Output tensor names kept per CPU operator type (a file may name thousands).
MAX_NAMES = 20
#: TFLite builtin operators whose MACs are counted for the host core, with the cycle-model kind.
_MAC_KINDS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "fc"}
#: Per-layer CSV spelling (Vela's) -> TFLite builtin name, where the two differ in more than case.
_VELA_OP_NAMES = {
    "Conv2D": "CONV_2D",
    "DepthwiseConv2D": "DEPTHWISE_CONV_2D",
    "FullyConnected": "FULLY_CONNECTED",
}


@dataclass(frozen=True)
class VelaLayer:
    """One operator of Vela's per-layer table."""

    name: str  # its output tensor
    op_type: str  # the TFLite operator it came from (Vela's "Original Operator")
    is_npu: bool
    cycles: int
    macs: int


@dataclass(frozen=True)
class CpuOperator:
    """The operators of one type that Vela left on the CPU, priced on the host core."""

    op_type: str  # TFLite builtin name, e.g. FULLY_CONNECTED
    count: int
    macs: int
    host_cycles: float
    names: tuple[str, ...]  # their output tensors (the first MAX_NAMES, 80 characters each)

    def to_dict(self) -> dict[str, Any]:
        return {
            "op_type": self.op_type,
            "count": self.count,
            "macs": self.macs,
            "host_cycles": self.host_cycles,
            "names": list(self.names),
        }


@dataclass(frozen=True)
class VelaResult:
    """What Vela says one ``.tflite`` costs on one Ethos-U profile (all estimated by Vela,
    except ``cpu_latency_ms``: edgeopt's cycle model of the host core)."""

    model: str
    target: str
    vela_version: str
    accelerator: str
    system_config: str
    memory_mode: str
    clock_hz: float
    cycles: int  # Vela's cycles_total: the NPU's, CPU operators not counted
    npu_latency_ms: float
    sram_bytes: int
    offchip_bytes: int  # off-chip flash, DRAM and on-chip flash Vela uses
    offchip_memory: str  # which: "Off-chip Flash", "DRAM", ...
    encoded_weights_bytes: int
    compiled_bytes: int  # the optimised .tflite Vela wrote (command stream, weights, CPU ops)
    layers: tuple[VelaLayer, ...]
    host_target: str
    host_clock_hz: float
    cpu_operators: tuple[CpuOperator, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cpu_latency_ms(self) -> float:
        """Time of the CPU-fallback operators on the host core (its profile's cycle model)."""
        return sum(op.host_cycles for op in self.cpu_operators) / self.host_clock_hz * 1e3

    @property
    def latency_ms(self) -> float:
        """The NPU's time (Vela) plus the CPU operators' (host profile), run one after another."""
        return self.npu_latency_ms + self.cpu_latency_ms

    @property
    def label(self) -> str:
        return f"Vela {self.vela_version} estimate"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "vela_version": self.vela_version,
            "accelerator": self.accelerator,
            "system_config": self.system_config,
            "memory_mode": self.memory_mode,
            "clock_hz": self.clock_hz,
            "cycles": self.cycles,
            "npu_latency_ms": self.npu_latency_ms,
            "cpu_latency_ms": self.cpu_latency_ms,
            "latency_ms": self.latency_ms,
            "sram_bytes": self.sram_bytes,
            "offchip_bytes": self.offchip_bytes,
            "offchip_memory": self.offchip_memory,
            "encoded_weights_bytes": self.encoded_weights_bytes,
            "compiled_bytes": self.compiled_bytes,
            "host_target": self.host_target,
            "cpu_operators": [op.to_dict() for op in self.cpu_operators],
            "layer_cycles": {layer.name: layer.cycles for layer in self.layers if layer.is_npu},
        }


def onnx_to_tflite(model: Path, output: Path) -> Path:
    """Write an edgeopt int8 (QDQ) ONNX file as a full-int8 ``.tflite`` for Vela.

    The one place the TFLite writer is called from here: ``edgeopt.export.tflite.write_tflite``
    keeps the file's own scales (no TensorFlow converter in between).

    Raises:
        InputError: the writer is not part of this install, or refuses the model.
    """
    try:
        from edgeopt.export import tflite as writer  # type: ignore[attr-defined]
    except ImportError:
        raise InputError(
            f"{model}: an Ethos-U target compiles the model's int8 .tflite with Vela, and this "
            "edgeopt has no TFLite writer (edgeopt.export.tflite) to make one from ONNX; give "
            "the .tflite file instead."
        ) from None
    writer.write_tflite(model, output)
    return output


def _check_tflite(path: Path) -> None:
    """Refuse what is not a TFLite flatbuffer of a bounded size before Vela reads it."""
    if not path.is_file():
        raise InputError(f"{path}: no such .tflite file.")
    size = path.stat().st_size
    if size > MAX_TFLITE_BYTES:
        raise InputError(f"{path}: {size:,} bytes is more than the {MAX_TFLITE_BYTES:,} allowed.")
    with path.open("rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise InputError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier).")


def _vela_error(output: str) -> str:
    """Vela's own first error line: the exception line of a traceback, else its first line
    that is not a warning."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        tail = [line for line in lines if not line.startswith(("File ", "^", "~"))]
        return tail[-1] if tail else "a Python error"
    for line in lines:
        if not line.lower().startswith(("warning", "reason:")):
            return line
    return "no message"


def _run_vela(model: Path, target: Target, scratch: Path) -> tuple[Path, str]:
    """Compile ``model`` (already copied into ``scratch``) and return Vela's output folder."""
    assert target.npu is not None
    out = scratch / "out"
    command = [
        sys.executable,
        "-m",
        "ethosu.vela",
        model.name,
        *target.npu.vela_arguments(),
        "--output-dir",
        out.name,
        "--verbose-performance",
    ]
    try:
        done = subprocess.run(
            command, cwd=scratch, capture_output=True, text=True, timeout=VELA_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"Vela did not finish within {VELA_TIMEOUT_S} s.") from None
    text = f"{done.stdout}\n{done.stderr}"
    if done.returncode != 0 or not list(out.glob("*_summary_*.csv")):
        raise InputError(_vela_error(text))
    return out, text


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or 0.0)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class _HostLayer:
    """A CPU-fallback operator as the host profile's estimator sees it (``LayerCost``)."""

    kind: str
    dtype: str
    macs: int
    output_elements: int
    bytes_moved: int = 0


def _tflite_operators(path: Path) -> dict[str, _HostLayer]:
    """Output tensor name -> the operator that writes it, with its MACs, read from the
    ``.tflite`` with the TFLite schema (the first subgraph; sizes as Python integers)."""
    schema = require("ai_edge_litert.schema_py_generated", purpose="Ethos-U targets")
    try:
        model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        graph = model.subgraphs[0]
        tensors = graph.tensors or []
        found: dict[str, _HostLayer] = {}
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            op_type = names.get(builtin, f"BUILTIN_{builtin}")
            if op.outputs is None or len(op.outputs) == 0 or op.outputs[0] < 0:
                continue
            out = tensors[op.outputs[0]]
            elements = 1
            for dim in out.shape if out.shape is not None else ():
                elements *= max(int(dim), 1)
            macs = 0
            kind = _MAC_KINDS.get(op_type, "pool" if "POOL" in op_type else "elementwise")
            if kind != "elementwise" and kind != "pool" and len(op.inputs) > 1:
                weight = [max(int(d), 1) for d in tensors[op.inputs[1]].shape]
                per_output = {
                    "conv": weight[1:] if len(weight) == 4 else [],
                    "depthwise": weight[1:3] if len(weight) == 4 else [],
                    "fc": weight[-1:],
                }[kind]
                macs = elements
                for dim in per_output:
                    macs *= dim
            dtype = "int8" if types.get(out.type) in ("INT8", "UINT8", "INT16") else "float32"
            name = out.name.decode("utf-8", "replace") if out.name else ""
            found[name] = _HostLayer(kind, dtype, macs, elements)
        return found
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as a TFLite model ({exc}).") from None


def _cpu_operators(
    layers: tuple[VelaLayer, ...], model: Path, host: Target
) -> tuple[CpuOperator, ...]:
    """The CPU rows of the per-layer table, grouped by TFLite operator and priced on ``host``."""
    cpu = [layer for layer in layers if not layer.is_npu]
    if not cpu:
        return ()
    operators = _tflite_operators(model)
    grouped: dict[str, list[tuple[str, _HostLayer]]] = {}
    for layer in cpu:
        cost = operators.get(layer.name, _HostLayer("elementwise", "int8", 0, 0))
        grouped.setdefault(layer.op_type, []).append((layer.name, cost))
    return tuple(
        CpuOperator(
            op_type=op_type,
            count=len(items),
            macs=sum(cost.macs for _, cost in items),
            host_cycles=sum(host.layer_cycles(cost) for _, cost in items),
            names=tuple(name[:80] for name, _ in items[:MAX_NAMES]),
        )
        for op_type, items in sorted(grouped.items())
    )


def _op_type(vela_name: str) -> str:
    """Vela's "Original Operator" spelling (``FullyConnected``) as a TFLite builtin name."""
    if vela_name in _VELA_OP_NAMES:
        return _VELA_OP_NAMES[vela_name]
    out = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(vela_name))
    return out.upper()


def compile_tflite(model: Path, target: Target) -> VelaResult:
    """Compile a ``.tflite`` with Vela for an Ethos-U profile and read its figures.

    Args:
        model: an int8 ``.tflite`` file (left as it is: Vela works on a copy).
        target: a profile with an ``npu`` block (``ethos-u55-128``, ...).

    Returns:
        Vela's cycles, time, SRAM and off-chip memory, per-layer cycles, and the operators it
        left on the CPU priced on the host core.

    Raises:
        InputError: the target is not an Ethos-U profile, Vela is not installed, the file is
            not a TFLite model, or Vela fails (its own first error line).

    Example:
        >>> from edgeopt.target import Target
        >>> compile_tflite(Path("missing.tflite"), Target.from_name("ethos-u55-128"))
        Traceback (most recent call last):
        edgeopt.errors.InputError: missing.tflite: no such .tflite file.
    """
    from edgeopt.target import Target

    model = Path(model)
    if target.npu is None:
        raise InputError(f"target {target.name!r} is not an Ethos-U NPU profile (no npu block).")
    _check_tflite(model)
    require("ethosu.vela.vela", purpose="Ethos-U targets")
    version = str(getattr(sys.modules.get("ethosu.vela"), "__version__", "?"))
    with tempfile.TemporaryDirectory(prefix="edgeopt-vela-") as folder:
        scratch = Path(folder)
        copy = scratch / "model.tflite"  # a fixed name: nothing of the user's path reaches Vela
        shutil.copyfile(model, copy)
        try:
            out, _ = _run_vela(copy, target, scratch)
        except InputError as exc:
            raise InputError(
                f"{model}: Vela {version} cannot compile it for {target.name}: {exc}"
                + ("" if str(exc).endswith(".") else ".")
            ) from None
        summary = _rows(next(out.glob("*_summary_*.csv")))[0]
        per_layer = next(out.glob("*_per-layer.csv"), None)
        compiled = next(out.glob("*_vela.tflite"), None)
        layers = tuple(
            VelaLayer(
                name=row.get("Name", ""),
                op_type=_op_type(row.get("Original Operator", "")[:60]),
                is_npu=row.get("Target", "NPU") == "NPU",
                cycles=int(_number(row, "Op Cycles")),
                macs=int(_number(row, "MAC Count")),
            )
            for row in (_rows(per_layer) if per_layer is not None else [])
        )
        compiled_bytes = compiled.stat().st_size if compiled is not None else 0
        host = Target.from_name(target.npu.host_target)
        cpu = _cpu_operators(layers, copy, host)
    areas = {"DRAM": "dram", "Off-chip Flash": "off_chip_flash", "On-chip Flash": "on_chip_flash"}
    used = {label: _number(summary, f"{key}_memory_used") for label, key in areas.items()}
    return VelaResult(
        model=str(model),
        target=target.name,
        vela_version=version,
        accelerator=target.npu.accelerator,
        system_config=target.npu.system_config,
        memory_mode=target.npu.memory_mode,
        clock_hz=_number(summary, "core_clock"),
        cycles=int(_number(summary, "cycles_total")),
        npu_latency_ms=_number(summary, "inference_time") * 1e3,
        sram_bytes=round(_number(summary, "sram_memory_used") * 1024),
        offchip_bytes=round(sum(used.values()) * 1024),
        offchip_memory=" + ".join(label for label, kib in used.items() if kib > 0) or "none",
        encoded_weights_bytes=int(_number(summary, "total_npu_encoded_weights")),
        compiled_bytes=compiled_bytes,
        layers=layers,
        host_target=host.name,
        host_clock_hz=host.clock_hz,
        cpu_operators=cpu,
    )


def estimate_npu(model: Path, target: Target) -> tuple[Estimate, VelaResult]:
    """The target estimate of an Ethos-U profile for a ``.tflite`` or an edgeopt int8 ONNX
    file (written as ``.tflite`` first, in a temporary folder).

    Latency is Vela's NPU time plus the CPU-fallback operators on the host core; energy is the
    NPU time at the profile's NPU+MCU ``active_power_mw`` plus the CPU time at the host
    profile's power (the NPU idles while the host runs them).

    Raises:
        InputError: see :func:`compile_tflite` and :func:`onnx_to_tflite`.
    """
    from edgeopt.target import Estimate
    from edgeopt.target import Target

    model = Path(model)
    if model.suffix.lower() == ".tflite":
        result = compile_tflite(model, target)
    else:
        with tempfile.TemporaryDirectory(prefix="edgeopt-tflite-") as folder:
            written = onnx_to_tflite(model, Path(folder) / f"{model.stem[:64] or 'model'}.tflite")
            result = compile_tflite(written, target)
        result = _renamed(result, str(model))
    assert target.npu is not None
    host = Target.from_name(target.npu.host_target)
    energy = result.npu_latency_ms * target.active_power_mw
    energy += result.cpu_latency_ms * host.active_power_mw  # ms * mW = uJ
    npu_cycles = [layer.cycles for layer in result.layers if layer.is_npu]
    is_assumed = target.sources.get("active_power_mw", "").startswith("assumption")
    kind = "assumed" if is_assumed else "cited"
    estimate = Estimate(
        target=target.name,
        latency_ms=result.latency_ms,
        energy_uj=energy,
        cycles=float(result.cycles),
        layer_latency_ms=tuple(c / result.clock_hz * 1e3 for c in npu_cycles),
        source=result.label,
        detail={
            "sram_bytes": result.sram_bytes,
            "offchip_bytes": result.offchip_bytes,
            "offchip_memory": result.offchip_memory,
            "npu_latency_ms": result.npu_latency_ms,
            "cpu_latency_ms": result.cpu_latency_ms,
            "cpu_operators": [op.to_dict() for op in result.cpu_operators],
            "energy": energy_label(target, host.name),
            "energy_how": f"estimated ({target.active_power_mw:g} mW, {kind})",
        },
    )
    return estimate, result


def energy_label(target: Target, host: str) -> str:
    """How the energy was made, with the power it used (the profile's source says whether it
    is cited or assumed)."""
    cited = target.sources.get("active_power_mw", "")
    kind = "an assumed" if cited.startswith("assumption") else "a cited"
    return (
        f"estimated from {kind} {target.active_power_mw:g} mW NPU+MCU power ({target.name} "
        f"profile) over Vela's NPU time, plus the {host} profile's power over the CPU operators"
    )


def _renamed(result: VelaResult, model: str) -> VelaResult:
    from dataclasses import replace

    return replace(result, model=model)
