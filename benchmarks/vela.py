"""The MLPerf Tiny reference models on the Ethos-U profiles, as Vela compiles them.

    .venv/bin/python -m benchmarks.vela                      # the four reference models
    .venv/bin/python -m benchmarks.vela --tflite FILE ...    # given .tflite files instead

Builds the four MLPerf Tiny reference models from the zoo (KWS DS-CNN-S, VWW MobileNetV1 0.25
at 96x96, IC ResNet-8, AD autoencoder), exports them, quantizes them to int8 with our PTQ
(:func:`edgeopt.measure.mlperf.reference_layers`, minmax calibration on Gaussian samples: Vela's
figures depend on shapes, not values), writes each int8 QDQ file as a full-int8 ``.tflite``
(:func:`edgeopt.measure.vela.onnx_to_tflite`, the TFLite writer) and compiles it with Vela for
every built-in Ethos-U profile: NPU cycles and time, SRAM, off-chip memory, the operators Vela
leaves on the CPU (priced on the host core's profile) and the total latency.
Results: ``benchmarks/results/vela.json`` (``vela-tflite.json`` with ``--tflite``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import save_result
from edgeopt.errors import InputError
from edgeopt.measure.mlperf import REFERENCE_MODELS
from edgeopt.measure.vela import VelaResult
from edgeopt.measure.vela import compile_tflite
from edgeopt.target import Target
from edgeopt.target import list_targets

NPU_TARGETS = [name for name in list_targets() if name.startswith("ethos-")]


def _row(result: VelaResult) -> dict[str, Any]:
    return {
        "cycles": result.cycles,
        "npu_latency_ms": result.npu_latency_ms,
        "cpu_latency_ms": result.cpu_latency_ms,
        "latency_ms": result.latency_ms,
        "sram_bytes": result.sram_bytes,
        "offchip_bytes": result.offchip_bytes,
        "offchip_memory": result.offchip_memory,
        "encoded_weights_bytes": result.encoded_weights_bytes,
        "npu_macs": sum(layer.macs for layer in result.layers if layer.is_npu),
        "cpu_operators": [op.to_dict() for op in result.cpu_operators],
    }


def _compile_all(models: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each model on each Ethos-U profile; a model Vela refuses gets its one sentence."""
    rows: dict[str, dict[str, Any]] = {}
    for key, path in models.items():
        rows[key] = {}
        for name in NPU_TARGETS:
            try:
                rows[key][name] = _row(compile_tflite(path, Target.from_name(name)))
            except InputError as exc:
                rows[key][name] = {"error": str(exc)}
            print(f"{key:>16} {name:>14}: {rows[key][name]}", flush=True)
    return rows


def _reference_tflites(folder: Path) -> dict[str, Path]:
    """The four reference models as int8 .tflite files written by edgeopt's TFLite writer."""
    from edgeopt.measure.mlperf import reference_layers
    from edgeopt.measure.vela import onnx_to_tflite

    models = {}
    for key in REFERENCE_MODELS:
        reference_layers(key, folder=folder)  # writes <key>.onnx and <key>-int8.onnx there
        models[key] = onnx_to_tflite(folder / f"{key}-int8.onnx", folder / f"{key}.tflite")
    return models


def _summary(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        key: {
            name: (
                f"{row['latency_ms']:.3f} ms, SRAM {row['sram_bytes'] / 1024:.1f} KiB, "
                f"{row['offchip_memory']} {row['offchip_bytes'] / 1024:.1f} KiB, "
                f"CPU ops {sum(op['count'] for op in row['cpu_operators'])}"
                if "error" not in row
                else row["error"]
            )
            for name, row in by_target.items()
        }
        for key, by_target in rows.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tflite", nargs="+", type=Path, help="compile these .tflite files")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-vela-") as scratch:
        if args.tflite:
            models = {path.stem: path for path in args.tflite}
        else:
            try:
                models = _reference_tflites(Path(scratch))
            except InputError as exc:
                sys.exit(f"benchmark needs the TFLite writer: {exc}")
        rows = _compile_all(models)
    import ethosu.vela

    save_result(
        "vela-tflite" if args.tflite else "vela",
        {
            "vela": ethosu.vela.__version__,
            "targets": {name: Target.from_name(name).to_dict()["npu"] for name in NPU_TARGETS},
            "models": {key: str(path) for key, path in models.items()}
            if args.tflite
            else dict(REFERENCE_MODELS),
            "results": rows,
            "summary": _summary(rows),
            "seconds": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
