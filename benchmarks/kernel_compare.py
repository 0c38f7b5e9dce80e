"""edgeopt's C kernels beside TFLite Micro's reference kernels, layer by layer, on the emulated M4.

    PYTHONPATH=src .venv/bin/python -m benchmarks.kernel_compare

For each MLPerf Tiny reference model (KWS DS-CNN-S, VWW MobileNetV1 0.25, IC ResNet-8, AD
autoencoder; built as :func:`edgeopt.measure.mlperf.reference_layers` builds them) the script
exports edgeopt's C library and counts, on the same emulated Cortex-M4 (QEMU mps2-an386,
``-icount shift=7``, arm-none-eabi-gcc -O2 -mcpu=cortex-m4 -mthumb -mfloat-abi=hard
-mfpu=fpv4-sp-d16, the CMSDK timer read after each layer):

- measured (instructions, emulated): edgeopt's own library,
  :func:`edgeopt.measure.cortexm.measure_cortexm` on two seeded random inputs, per layer;
- measured (instructions, emulated): TFLite Micro's reference int8 kernels
  (``benchmarks/tflm_reference``, edgeopt's own C implementation of their arithmetic and loop
  structure, written from the documented behaviour and checked byte for byte against TFLite
  Micro's interpreter by ``tests/measure/test_tflm_reference.py``) on the same layers: the same
  shapes, strides, fused activation and weights (TFLite's layouts), one seeded random input;
  per layer, :mod:`benchmarks.tflm_reference.emulate`. The count covers the kernel and the
  building of its shapes and params, not TFLM's interpreter (tensor lookups, the invoke loop).
- estimated (cycles): instructions x 1.4 cycles per instruction (the assumed Cortex-M4 figure
  of :data:`edgeopt.measure.cortexm.CORES`), beside the published MLPerf Tiny latencies of the
  NUCLEO-L4R5ZI (v0.5 reference TFLM, v1.1 X-CUBE-AI; :data:`edgeopt.measure.mlperf.PUBLISHED`)
  x its 120 MHz clock. The v0.5 reference submission built TFLM v2.3.1 with ``TAGS=cmsis-nn``
  (mlcommons/tiny v0.5/reference_submissions/person_detection/setup_example.sh and the v0.1
  keyword_spotting / image_classification scripts: ``TF_MAKE_TAGS="cmsis-nn"``), so its
  published latencies are TFLM with CMSIS-NN kernels, not the reference kernels counted here.

Layer kinds: conv (k x k), depthwise, pointwise (1x1 convolutions), fc, avgpool, maxpool, add;
edgeopt's input conversion (``edgeopt_from_u8``) has no TFLM counterpart and is left out of the
kind totals. Results: ``benchmarks/results/kernel_compare.json``; the per-kind TFLM reference
counts also go to ``/tmp/tflm_ref_counts.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks._common import save_result
from benchmarks.tflm_reference.emulate import kind_of
from benchmarks.tflm_reference.emulate import layers_of_export
from benchmarks.tflm_reference.emulate import measure_layers
from edgeopt.export.c import export_c
from edgeopt.measure.cortexm import CORES
from edgeopt.measure.cortexm import fixed_inputs
from edgeopt.measure.cortexm import measure_cortexm
from edgeopt.measure.cortexm import require_cortexm_tools
from edgeopt.measure.cortexm import step_macs
from edgeopt.measure.mlperf import PUBLISHED
from edgeopt.measure.mlperf import REFERENCE_MODELS
from edgeopt.measure.mlperf import reference_layers
from edgeopt.target import Target

KIND_ORDER = ("conv", "depthwise", "pointwise", "fc", "avgpool", "maxpool", "add")
COUNTS_FILE = Path("/tmp/tflm_ref_counts.json")


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def compare_model(benchmark: str, folder: Path) -> dict[str, Any]:
    """Per-layer and per-kind instructions of edgeopt's library and TFLM's reference kernels."""
    folder.mkdir(parents=True, exist_ok=True)
    reference_layers(benchmark, folder=folder)
    export = export_c(folder / f"{benchmark}-int8.onnx", folder / "c", is_forced=True)
    assert export.program is not None
    run = measure_cortexm(
        export, fixed_inputs(export, samples=2), core="cortex-m4", inputs_source="2 seeded inputs"
    )
    found = layers_of_export(export)
    tflm = dict(
        zip(
            [index for index, _, _ in found],
            measure_layers([lay for _, _, lay in found]),
            strict=True,
        )
    )
    layers = []
    kinds: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"layers": 0, "macs": 0, "outputs": 0, "edgeopt": 0, "tflm_reference": 0}
    )
    sizes = {index: layer.output_size for index, _, layer in found}
    for index, step in enumerate(export.program.steps):
        kind = kind_of(step)
        edgeopt = run.layers[index].instructions
        row: dict[str, Any] = {
            "index": index,
            "node": run.layers[index].node,
            "function": step.function,
            "kind": kind,
            "macs": step_macs(step) or 0,
            "edgeopt_instructions": edgeopt,
        }
        if index in tflm:
            row["outputs"] = sizes[index]
            row["tflm_reference_instructions"] = tflm[index]
            row["ratio"] = _ratio(edgeopt, tflm[index])
            total = kinds[kind]
            total["layers"] += 1
            total["macs"] += row["macs"]
            total["outputs"] += sizes[index]
            total["edgeopt"] += edgeopt
            total["tflm_reference"] += tflm[index]
        layers.append(row)
    by_kind = {}
    for kind in KIND_ORDER:
        if kind not in kinds:
            continue
        total = kinds[kind]
        by_kind[kind] = {
            **total,
            "ratio": _ratio(total["edgeopt"], total["tflm_reference"]),
            "edgeopt_per_mac": _ratio(total["edgeopt"], total["macs"]),
            "tflm_reference_per_mac": _ratio(total["tflm_reference"], total["macs"]),
            "edgeopt_per_output": _ratio(total["edgeopt"], total["outputs"]),
            "tflm_reference_per_output": _ratio(total["tflm_reference"], total["outputs"]),
        }
    core = CORES["cortex-m4"]
    clock_hz = float(Target.from_name("cortex-m4").clock_hz)
    tflm_total = sum(tflm.values())
    compared = sum(total["edgeopt"] for total in kinds.values())
    return {
        "benchmark": benchmark,
        "spec": REFERENCE_MODELS[benchmark],
        "macs": sum(row["macs"] for row in layers),
        "edgeopt_instructions": run.instructions_per_inference,
        "edgeopt_instructions_compared_layers": compared,
        "tflm_reference_instructions": tflm_total,
        "ratio_compared_layers": _ratio(compared, tflm_total),
        "estimated_cycles": {
            "edgeopt": round(run.instructions_per_inference * core.cpi),
            "tflm_reference": round(tflm_total * core.cpi),
        },
        "published_cycles": {
            runtime: round(PUBLISHED[runtime][benchmark].latency_ms * 1e-3 * clock_hz)
            for runtime in PUBLISHED
        },
        "published_ms": {
            runtime: PUBLISHED[runtime][benchmark].latency_ms for runtime in PUBLISHED
        },
        "by_kind": by_kind,
        "layers": layers,
        "edgeopt_run": run.to_dict(),
    }


def tflm_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The TFLM reference counts per model and kind (for ``/tmp/tflm_ref_counts.json``)."""
    return {
        "method": "measured (instructions, emulated): TFLM reference int8 kernels as "
        "implemented in C in benchmarks/tflm_reference, arm-none-eabi-gcc -O2 Cortex-M4F, "
        "QEMU mps2-an386 -icount shift=7, the timer read after each layer",
        "models": {
            row["benchmark"]: {
                "total_instructions": row["tflm_reference_instructions"],
                "by_kind": {
                    kind: {
                        "instructions": total["tflm_reference"],
                        "macs": total["macs"],
                        "outputs": total["outputs"],
                        "layers": total["layers"],
                        "instructions_per_mac": total["tflm_reference_per_mac"],
                        "instructions_per_output": total["tflm_reference_per_output"],
                        "edgeopt_instructions": total["edgeopt"],
                    }
                    for kind, total in row["by_kind"].items()
                },
                "layers": [
                    {k: layer[k] for k in layer if k != "function"}
                    for layer in row["layers"]
                    if "tflm_reference_instructions" in layer
                ],
            }
            for row in rows
        },
    }


def main() -> None:
    require_cortexm_tools(["cortex-m4"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-kernel-compare-") as folder:
        for benchmark in REFERENCE_MODELS:
            start = time.perf_counter()
            rows.append(compare_model(benchmark, Path(folder) / benchmark))
            row = rows[-1]
            row["seconds"] = round(time.perf_counter() - start, 1)
            print(
                benchmark,
                f"edgeopt {row['edgeopt_instructions']:,}",
                f"tflm-reference {row['tflm_reference_instructions']:,}",
                {k: v["ratio"] for k, v in row["by_kind"].items()},
                f"{row['seconds']} s",
                flush=True,
            )
    COUNTS_FILE.write_text(json.dumps(tflm_counts(rows), indent=1))
    summary = [
        {
            "model": r["benchmark"],
            "edgeopt_instructions": r["edgeopt_instructions"],
            "tflm_reference_instructions": r["tflm_reference_instructions"],
            "ratio_compared_layers": r["ratio_compared_layers"],
            "estimated_mcycles_edgeopt": round(r["estimated_cycles"]["edgeopt"] / 1e6, 2),
            "estimated_mcycles_tflm_reference": round(
                r["estimated_cycles"]["tflm_reference"] / 1e6, 2
            ),
            "published_mcycles": {k: round(v / 1e6, 2) for k, v in r["published_cycles"].items()},
            "ratio_by_kind": {k: v["ratio"] for k, v in r["by_kind"].items()},
        }
        for r in rows
    ]
    save_result(
        "kernel_compare",
        {
            "summary": summary,
            "core": CORES["cortex-m4"].to_dict(),
            "published_runs": {
                "tflm": "MLPerf Tiny v0.5 closed, reference submission, NUCLEO-L4R5ZI 120 MHz: "
                "TFLM v2.3.1 built with TAGS=cmsis-nn (CMSIS-NN kernels), mbed-os bare-metal, "
                "GCC-ARM 6-2017-q2 (mlcommons/tiny_results_v0.5 closed/reference/systems; "
                "mlcommons/tiny v0.5/reference_submissions/person_detection/setup_example.sh)",
                "xcubeai": "MLPerf Tiny v1.1 closed, STMicroelectronics, NUCLEO-L4R5ZI 120 MHz, "
                "X-CUBE-AI",
            },
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
