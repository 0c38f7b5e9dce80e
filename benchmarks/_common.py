"""What every benchmark shares: where the data is, the machine's description, result files."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeopt._io import write_json
from edgeopt.testing import shared_data_dir

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / "cache"


def require_shared(name: str) -> Path:
    """The shared data folder ``name``, or exit with a sentence saying it is missing."""
    folder = shared_data_dir(name)
    if folder is None:
        sys.exit(f"benchmark needs shared/data/{name} beside the checkout; it is not there.")
    return folder


def machine() -> dict[str, Any]:
    """CPU model and the features that decide its int8 kernels (with the probe's verdict on
    ONNX Runtime's U8S8 kernels), core count, memory and library versions, for the results
    file."""
    import numpy
    import onnx
    import onnxruntime
    import torch

    from edgeopt.measure.int8 import host_int8

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    host = host_int8()
    return {
        "cpu": cpu,
        "cpu_flags": list(host.cpu_flags),
        "int8_kernels": "saturating (U8S8, 16-bit sums)" if host.is_saturating else "exact",
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine description added."""
    path = write_json(RESULTS / f"{name}.json", {"machine": machine(), **payload})
    print(json.dumps(payload.get("summary", {}), indent=2))
    print(f"wrote {path}")
    return path
