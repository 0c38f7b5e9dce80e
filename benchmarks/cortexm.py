"""Instructions of edgeopt's C library on emulated Cortex-M cores: the MLPerf Tiny reference models.

    .venv/bin/python -m benchmarks.cortexm

Builds the four MLPerf Tiny reference models from the zoo (KWS DS-CNN-S 1x49x10, VWW
MobileNetV1 0.25 at 3x96x96, IC ResNet-8 3x32x32, AD autoencoder 640) as
:func:`edgeopt.measure.mlperf.reference_layers` does (BatchNorm statistics that look trained,
PTQ with minmax calibration on Gaussian samples: the counts do not depend on the weights'
values), exports each as a C library and runs it with
:func:`edgeopt.measure.cortexm.measure_cortexm` on the emulated Cortex-M4 (QEMU mps2-an386),
Cortex-M7 (mps2-an500), Cortex-M33 (mps2-an505) and Cortex-M55 (mps3-an547) under
``-icount shift=7``, on two seeded random inputs, outputs checked byte for byte against the
host build. Instructions are measured (emulated); cycles and milliseconds are estimates
(instructions x the core's cycles per instruction / the target profile's clock). Needs
Debian's gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm.
Results: ``benchmarks/results/cortexm.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import save_result
from edgeopt.export.c import export_c
from edgeopt.measure.cortexm import CORES
from edgeopt.measure.cortexm import fixed_inputs
from edgeopt.measure.cortexm import measure_cortexm
from edgeopt.measure.cortexm import require_cortexm_tools
from edgeopt.measure.mlperf import PUBLISHED
from edgeopt.measure.mlperf import REFERENCE_MODELS
from edgeopt.measure.mlperf import reference_layers

NAMES = {
    "kws": "DS-CNN-S (KWS)",
    "vww": "MobileNetV1 0.25 96x96 (VWW)",
    "ic": "ResNet-8 (IC)",
    "ad": "AD autoencoder (AD)",
}


def _row(benchmark: str, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    folder = work / benchmark
    folder.mkdir()
    layers = reference_layers(benchmark, folder=folder)
    export = export_c(folder / f"{benchmark}-int8.onnx", folder / "c")
    x = fixed_inputs(export, samples=2)
    runs = {
        core: measure_cortexm(export, x, core=core, inputs_source="2 seeded random inputs")
        for core in CORES
    }
    m4 = runs["cortex-m4"]
    macs = sum(layer.macs for layer in layers)
    return {
        "benchmark": benchmark,
        "model": NAMES[benchmark],
        "spec": REFERENCE_MODELS[benchmark],
        "macs": macs,
        "layers": export.layers,
        "arena_bytes": export.arena_bytes,
        "weights_bytes": export.weights_bytes,
        "instructions_per_inference": {
            core: run.instructions_per_inference for core, run in runs.items()
        },
        "instructions_per_mac_m4": m4.instructions_per_inference / macs,
        "m4_by_kernel": m4.by_function(),
        "estimated_ms": {core: run.estimated_ms for core, run in runs.items()},
        "published_ms_cortex_m4_120mhz": {
            runtime: PUBLISHED[runtime][benchmark].latency_ms for runtime in PUBLISHED
        },
        "runs": {core: run.to_dict() for core, run in runs.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    require_cortexm_tools(tuple(CORES))
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-cortexm-bench-") as folder:
        for benchmark in REFERENCE_MODELS:
            rows.append(_row(benchmark, Path(folder)))
            print(benchmark, rows[-1]["instructions_per_inference"], f"{rows[-1]['seconds']} s")
    summary = [
        {
            "model": r["model"],
            "macs": r["macs"],
            **{f"{core}_instructions": n for core, n in r["instructions_per_inference"].items()},
            "m4_instructions_per_mac": round(r["instructions_per_mac_m4"], 2),
            "m4_estimated_ms_120mhz": round(r["estimated_ms"]["cortex-m4"], 1),
            "m7_estimated_ms_480mhz": round(r["estimated_ms"]["cortex-m7"], 2),
        }
        for r in rows
    ]
    save_result(
        "cortexm",
        {
            "summary": summary,
            "cores": {name: core.to_dict() for name, core in CORES.items()},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
