"""C for microcontrollers: parity with ONNX Runtime and build sizes of three int8 models.

    .venv/bin/python -m benchmarks.c_export

Exports LeNet-5 (trained on Fashion-MNIST by ``benchmarks.profile_lenet5``), DS-CNN-S (trained on
FSDD by ``benchmarks.kws``) and MobileNetV1-0.25 at 3x96x96 (the MLPerf Tiny VWW input; untrained,
PTQ'd on fixed random inputs, so only parity and sizes mean anything) as C libraries; compiles
each with the host gcc (``-std=c99 -Wall -Wextra -Werror -O2``) and runs it on the test split
against ONNX Runtime (top-1 agreement, largest int8 difference in LSBs); and reads the section
sizes of the object files with ``size -A``, for the host and, when Debian's
``gcc-arm-none-eabi`` is installed, for a Cortex-M4F (``-mcpu=cortex-m4 -mthumb
-mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2``). Flash is text + rodata + data; RAM is data + bss (the
arena). The trained models come from ``benchmarks/cache`` (run the two benchmarks above first).
Results: ``benchmarks/results/c_export.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result
from edgeopt.export.c import CORTEX_M4_FLAGS
from edgeopt.export.c import check_c
from edgeopt.export.c import export_c
from edgeopt.export.c import has_compiler
from edgeopt.export.c import measure_c
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import quantize

ARM_GCC = "arm-none-eabi-gcc"


def _lenet5(work: Path) -> tuple[Path, np.ndarray, str]:
    data = edgeopt.load_data(f"idx:{require_shared('fashion-mnist')}")
    fp32 = CACHE / "lenet5-fashion.onnx"
    if not fp32.exists():
        raise SystemExit(f"{fp32} is missing: run python -m benchmarks.profile_lenet5 first.")
    int8 = quantize(str(fp32), PTQConfig(), data=data, output=work / "lenet5.int8.onnx")
    return int8.model.onnx_path, data.arrays("test")[0], "Fashion-MNIST official 10k test split"


def _ds_cnn(work: Path) -> tuple[Path, np.ndarray, str]:
    int8 = CACHE / "kws-ds-cnn-s-int8.onnx"
    if not int8.exists():
        raise SystemExit(f"{int8} is missing: run python -m benchmarks.kws first.")
    folder = require_shared("fsdd") / "recordings"
    data = edgeopt.load_data(f"audio:{folder}?mfcc=10")
    return int8, data.arrays("test")[0], "FSDD test clips (takes 0-4), MFCC 49x10"


def _mobilenet(work: Path) -> tuple[Path, np.ndarray, str]:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((320, 3, 96, 96)), axis=-1).astype(np.float32) / 8
    np.savez(work / "random96.npz", x=x, y=np.arange(len(x)) % 2)
    data = edgeopt.load_data(f"npz:{work / 'random96.npz'}")
    spec = "zoo:mobilenet-v1?width=0.25&input=3x96x96&classes=2"
    int8 = quantize(spec, PTQConfig(), data=data, output=work / "mobilenet.int8.onnx")
    return int8.model.onnx_path, data.arrays("test")[0], "fixed random 3x96x96 inputs"


def _row(name: str, make: Any, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    onnx_path, samples, source = make(work)
    export = export_c(onnx_path, work / f"{name}-c", target="cortex-m4")
    parity = check_c(export, samples)
    host = measure_c(export)
    arm = (
        measure_c(export, compiler=ARM_GCC, flags=CORTEX_M4_FLAGS)
        if has_compiler(ARM_GCC)
        else None
    )
    return {
        "model": name,
        "samples": source,
        "layers": export.layers,
        "arena_bytes": export.arena_bytes,
        "liveness_peak_bytes": export.peak_ram_bytes,
        "weights_bytes": export.weights_bytes,
        "parity": parity.to_dict(),
        "host_build": host.to_dict(),
        "cortex_m4_build": arm.to_dict() if arm is not None else None,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-c-bench-") as folder:
        work = Path(folder)
        for name, make in (
            ("LeNet-5", _lenet5),
            ("DS-CNN-S", _ds_cnn),
            ("MobileNetV1-0.25 96x96", _mobilenet),
        ):
            rows.append(_row(name, make, work))
    summary = [
        {
            "model": r["model"],
            "samples": r["parity"]["samples"],
            "top1_agreement": r["parity"]["top1_agreement"],
            "max_int8_lsb": r["parity"]["max_tensor_lsb"],
            "arena_bytes": r["arena_bytes"],
            "host_flash_bytes": r["host_build"]["flash_bytes"],
            "host_ram_bytes": r["host_build"]["ram_bytes"],
            "m4_flash_bytes": (r["cortex_m4_build"] or {}).get("flash_bytes"),
            "m4_ram_bytes": (r["cortex_m4_build"] or {}).get("ram_bytes"),
        }
        for r in rows
    ]
    save_result("c_export", {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
