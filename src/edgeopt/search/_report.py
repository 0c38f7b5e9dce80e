"""The pieces of ``report.json`` that are not candidates: environment, provenance, sensitivity,
memory schedules, and the hand-off to :func:`edgeopt.report.write_report`."""

from __future__ import annotations

import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeopt.measure.int8 import cpu_flags
from edgeopt.measure.int8 import host_int8

SCHEMA_VERSION = 1
REPORT_KIND = "edgeopt-optimize-report"
SENSITIVITY_RATIOS = (0.25, 0.5, 0.75)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int) -> dict[str, Any]:
    """Versions and machine: what a reader needs to compare host latencies."""
    return {
        "edgeopt": _version("edgeopt"),
        "python": sys.version.split()[0],
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "optuna": _version("optuna"),
        "cpu": _cpu(),
        "cores": os.cpu_count() or 1,
        "threads": threads,
        "platform": platform.platform(),
        "cpu_flags": list(cpu_flags()),
        "int8": host_int8().describe(),
    }


def provenance(data_spec: str, target: str, threads: int) -> dict[str, str]:
    """How each candidate number was obtained, in words."""
    return {
        "accuracy": f"measured: top-1 of the exported ONNX file on the test split of {data_spec} "
        "(ONNX Runtime; an int8 file's exact integers, on the path its int8 entry names)",
        "latency_ms": f"estimated for {target} from the target profile (cycles model over the "
        "ONNX graph's layers)",
        "energy_uj": f"estimated for {target}: estimated latency times the profile's active power",
        "flash_bytes": "measured: bytes of the ONNX file on disk (weights and graph)",
        "ram_bytes": "counted: peak of live activation tensors over the ONNX graph's node order",
        "host_latency_ms": f"measured: ONNX Runtime p50 on this machine, {threads} thread(s), "
        "batch 1",
    }


def sensitivity_table(handle: Any, dataset: Any) -> dict[str, Any] | None:
    """Per-layer channel-pruning sensitivity of a PyTorch baseline (cheap: three ratios)."""
    from edgeopt.errors import InputError
    from edgeopt.stages.prune.sensitivity import sensitivity

    if handle.module is None:
        return None
    try:
        table = sensitivity(handle, dataset, granularity="channel", ratios=SENSITIVITY_RATIOS)
    except InputError:
        return None
    return {
        "model": handle.spec,
        "ratios": list(table.ratios),
        "baseline_accuracy": table.baseline_accuracy,
        "layers": [
            {
                "name": _layer_label(handle.module, name),
                "accuracy": [None if math.isnan(v) else v for v in row],
            }
            for name, row in zip(table.layers, table.accuracy, strict=True)
        ],
    }


def _layer_label(module: Any, name: str) -> str:
    """``features.0 (Conv2d)``: a module path alone (``0.0``) says little in a plot legend."""
    try:
        kind = type(module.get_submodule(name)).__name__
    except AttributeError:
        return name
    return f"{name} ({kind})"


def write_report(rundir: Path, report: dict[str, Any]) -> tuple[Path, ...]:
    """Write report.json (stable keys) and the self-contained report.html."""
    from edgeopt.report import write_report as render

    return tuple(render(rundir, report))
