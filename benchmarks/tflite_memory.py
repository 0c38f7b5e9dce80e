"""TFLite Micro beside edgeopt's C: arena and flash of the MLPerf Tiny reference models.

    .venv/bin/python -m benchmarks.tflite_memory

The four MLPerf Tiny reference architectures of the zoo, at their benchmark shapes: KWS
DS-CNN-S (1x49x10, 12 classes), VWW MobileNetV1-0.25 (3x96x96, 2 classes), IC ResNet-8
(3x32x32, 10 classes) and AD the dense autoencoder (640 inputs). Each is exported to fp32 ONNX
with its seeded initial weights, quantized by edgeopt's PTQ (default calibration) on 256 fixed
random inputs (smoothed along the last axis), then written twice from the same QDQ file:

- as a ``.tflite`` file (``edgeopt.export.tflite.write_tflite``): its size, and the arena
  TFLite Micro's interpreter allocates for it (its recording allocator's total, which is the
  smallest ``arena_size`` it runs with, to 16 bytes), with its head (activations and kernel
  scratch, planned to overlap) apart from its tail (persistent interpreter structures);
- as edgeopt's C library (``edgeopt.export.c.export_c``): its planned static arena, and its
  flash (text + rodata + data of the object files, ``size -A``) built for a Cortex-M4F with
  ``arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2`` (the
  host gcc where that compiler is missing).

The ``.tflite`` file is the model alone: TFLite Micro's interpreter and kernels (tens of KB of
code) come on top of it in flash; the C library's flash includes its kernels. Weights untrained:
sizes and arenas do not depend on the values. TFLite Micro's parity with the exact int8
reference on 64 of the inputs is recorded beside, and LiteRT's interpreter (the same file, its
optimized kernels) against TFLite Micro on them.
Results: ``benchmarks/results/tflite_memory.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import edgeopt
from benchmarks._common import save_result
from edgeopt.export.c import CORTEX_M4_FLAGS
from edgeopt.export.c import export_c
from edgeopt.export.c import has_compiler
from edgeopt.export.c import measure_c
from edgeopt.export.onnx import export_onnx
from edgeopt.export.tflite import check_tflite
from edgeopt.export.tflite import write_tflite
from edgeopt.models import load_model
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import quantize

ARM_GCC = "arm-none-eabi-gcc"

#: MLPerf Tiny task -> (zoo spec at the benchmark's shape, input shape, classes)
MODELS = {
    "KWS DS-CNN-S": ("zoo:ds-cnn-s?classes=12", (1, 49, 10), 12),
    "VWW MobileNetV1-0.25": ("zoo:mobilenet-v1?width=0.25&input=3x96x96&classes=2", (3, 96, 96), 2),
    "IC ResNet-8": ("zoo:resnet8?classes=10", (3, 32, 32), 10),
    "AD autoencoder": ("zoo:ad-autoencoder", (640,), 2),
}


def _litert_vs_tflm(tflite: Any, samples: np.ndarray) -> dict[str, Any]:
    """The same int8 file in LiteRT's interpreter (its optimized kernels) and TFLite Micro's:
    the largest output difference in LSBs and the share of outputs that differ."""
    from ai_edge_litert.interpreter import Interpreter
    from tflite_micro.python.tflite_micro import runtime

    litert = Interpreter(model_path=str(tflite.path), num_threads=1)
    litert.allocate_tensors()
    feed, fetch = litert.get_input_details()[0], litert.get_output_details()[0]
    micro = runtime.Interpreter.from_file(str(tflite.path), arena_size=4 << 20)
    scale, zero = tflite.input_quantization
    largest, differing, total = 0, 0, 0
    for sample in samples:
        stored = sample.transpose(1, 2, 0) if sample.ndim == 3 else sample
        q = np.clip(np.rint(stored / np.float32(scale)) + zero, -128, 127).astype(np.int8)[None]
        litert.set_tensor(feed["index"], q)
        litert.invoke()
        micro.set_input(q, 0)
        micro.invoke()
        a = litert.get_tensor(fetch["index"]).astype(np.int64)
        b = np.asarray(micro.get_output(0)).astype(np.int64)
        largest = max(largest, int(np.abs(a - b).max()))
        differing += int((a != b).sum())
        total += a.size
    return {"max_lsb": largest, "differing_fraction": differing / total}


def _row(name: str, spec: str, shape: tuple[int, ...], classes: int, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((256, *shape)), axis=-1).astype(np.float32) / 8
    data = work / f"{len(list(work.iterdir()))}.npz"
    np.savez(data, x=x, y=np.arange(len(x)) % classes)
    fp32 = export_onnx(load_model(spec), work / "fp32.onnx")
    int8 = quantize(
        str(fp32), PTQConfig(), data=edgeopt.load_data(f"npz:{data}"), output=work / "int8.onnx"
    ).model.onnx_path
    tflite = write_tflite(int8, work / "model.tflite", calibration=x[:192])
    parity = check_tflite(tflite, x[192:])
    litert = _litert_vs_tflm(tflite, x[192:])
    library = export_c(int8, work / f"c-{len(list(work.iterdir()))}")
    is_arm = has_compiler(ARM_GCC)
    size = measure_c(library, compiler=ARM_GCC, flags=CORTEX_M4_FLAGS) if is_arm else None
    size = size or measure_c(library)
    return {
        "model": name,
        "spec": spec,
        "tflm_arena_bytes": tflite.arena_bytes,
        "tflm_arena_planned_bytes": tflite.arena_planned_bytes,
        "c_arena_bytes": library.arena_bytes,
        "tflite_file_bytes": tflite.size_bytes,
        "c_flash_bytes": size.flash_bytes,
        "c_flash_build": size.to_dict(),
        "c_weights_bytes": library.weights_bytes,
        "tflite_operators": list(tflite.operators),
        "parity": parity.to_dict(),
        "litert_vs_tflm": litert,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-tflite-bench-") as folder:
        for name, (spec, shape, classes) in MODELS.items():
            work = Path(folder) / name.split()[0]
            work.mkdir()
            rows.append(_row(name, spec, shape, classes, work))
    summary = [
        {
            "model": r["model"],
            "tflm_arena_bytes": r["tflm_arena_bytes"],
            "tflm_arena_planned_bytes": r["tflm_arena_planned_bytes"],
            "c_arena_bytes": r["c_arena_bytes"],
            "tflite_file_bytes": r["tflite_file_bytes"],
            "c_flash_bytes": r["c_flash_bytes"],
            "c_flash_compiler": r["c_flash_build"]["compiler"],
            "tflm_max_lsb": r["parity"]["max_lsb"],
            "tflm_top1_agreement": r["parity"]["top1_agreement"],
            "litert_vs_tflm_max_lsb": r["litert_vs_tflm"]["max_lsb"],
        }
        for r in rows
    ]
    save_result("tflite_memory", {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
