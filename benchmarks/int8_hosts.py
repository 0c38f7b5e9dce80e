"""int8 on a host without VNNI: the same file, and the device's integers measured, on both.

    .venv/bin/python -m benchmarks.int8_hosts

Three int8 models: cnn-s on digits (trained here, 20 epochs, as ``make demo`` does), LeNet-5 on
Fashion-MNIST (``benchmarks.profile_lenet5``'s model) and DS-CNN-S on FSDD
(``benchmarks.kws``'s model), each quantized with ``quantize`` (PTQ, defaults). The host without
VNNI is this machine's CPU emulated by QEMU's user-mode emulator as a Haswell (AVX2, no AVX-512,
no VNNI: ``qemu-x86_64 -cpu Haswell``), on which ONNX Runtime dispatches its AVX2 U8S8 kernels,
whose 16-bit pair sums saturate: the code paths of a real AVX2-only CPU, run instruction by
instruction (times under emulation mean nothing, so none is taken there). Per model:

- the int8 file written natively and again under emulation: the sha256 of both;
- on the emulated host: the probe's verdict; test accuracy of the file as shipped in ONNX Runtime
  (what edgeopt reported on such a host before this change: "before"); the accuracy edgeopt
  measures ("after": the rewritten copy, :mod:`edgeopt.measure.int8`); the C library's parity
  check (``check_c``, what ``edgeopt export --format c --data`` runs) on the whole test split;
- natively: the accuracy edgeopt measures, and the U8U8 file of ``export --weight-type uint8``
  against the default one: accuracy, and latency on this host (1 thread, batch 1).

Results: ``benchmarks/results/int8_hosts.json``. Needs ``qemu-x86_64`` (Debian: qemu-user) and
gcc, an x86-64 host, and the cached models of the two benchmarks named above.

``--families``: instead, one small member of every other zoo family (LeNet-5, DS-CNN-S,
ResNet-8, MobileNet V1 / V2 / V3-Small, SqueezeNet, ShuffleNetV2) at 8 and 4 bits, PTQ'd here on
fixed random inputs, and on the emulated host the C library against ONNX Runtime on edgeopt's
path and on the file as shipped (``benchmarks/results/int8_hosts_families.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result

QEMU_HASWELL = ("qemu-x86_64", "-cpu", "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _models() -> dict[str, tuple[Path, str, str]]:
    """name -> (fp32 ONNX file, data spec, what its test split is)."""
    lenet5 = CACHE / "lenet5-fashion.onnx"
    ds_cnn = CACHE / "kws-ds-cnn-s.onnx"
    for path, bench in ((lenet5, "profile_lenet5"), (ds_cnn, "kws")):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run python -m benchmarks.{bench} first.")
    cnn_s = CACHE / "cnn-s-digits.onnx"
    if not cnn_s.exists():
        trained = edgeopt.train("zoo:cnn-s", "digits", edgeopt.TrainConfig(epochs=20))
        edgeopt.save_trained(trained, edgeopt.load_data("digits"), cnn_s)
    fsdd = require_shared("fsdd") / "recordings"
    return {
        "cnn-s": (cnn_s, "digits", "digits test split (359)"),
        "LeNet-5": (
            lenet5,
            f"idx:{require_shared('fashion-mnist')}",
            "Fashion-MNIST official test split (10,000)",
        ),
        "DS-CNN-S": (ds_cnn, f"audio:{fsdd}?mfcc=10", "FSDD takes 0-4 (300 clips), MFCC 49x10"),
    }


def _quantize(fp32: Path, data: str, out: Path) -> Path:
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    return quantize(str(fp32), PTQConfig(), data=data, output=out).model.onnx_path


def worker(fp32: Path, int8: Path, data_spec: str, work: Path) -> dict[str, Any]:
    """What runs on the emulated host: quantize again, then measure the native file."""
    from edgeopt.export.c import check_c
    from edgeopt.export.c import export_c
    from edgeopt.measure import profile_onnx
    from edgeopt.measure.int8 import host_int8
    from edgeopt.measure.int8 import make_exact_session
    from edgeopt.measure.runtime import predict
    from edgeopt.measure.runtime import top1

    start = time.perf_counter()
    written = _quantize(fp32, data_spec, work / "emulated.int8.onnx")
    quantize_s = time.perf_counter() - start
    data = edgeopt.load_data(data_spec)
    x, y = data.arrays("test")
    shipped = top1(predict(make_exact_session(int8, path="as-shipped"), x), y)
    metrics = profile_onnx(int8, data=data, is_latency_measured=False)
    parity = check_c(export_c(int8, work / "c"), x)
    assert metrics.int8 is not None and parity.arithmetic is not None
    return {
        "host": host_int8().to_dict(),
        "sha256_written_here": _sha256(written),
        "quantize_seconds": round(quantize_s, 1),
        "accuracy_as_shipped": shipped,
        "accuracy_measured": metrics.accuracy,
        "int8": metrics.int8.to_dict(),
        "c_parity": {
            "samples": parity.samples,
            "top1_agreement": parity.top1_agreement,
            "max_int8_lsb": parity.max_tensor_lsb,
            "path": parity.arithmetic.path,
        },
        "seconds": round(time.perf_counter() - start, 1),
    }


def _emulated(fp32: Path, int8: Path, data: str, work: Path) -> dict[str, Any]:
    command = [
        *QEMU_HASWELL,
        sys.executable,
        "-m",
        "benchmarks.int8_hosts",
        "--worker",
        str(fp32),
        str(int8),
        data,
        str(work),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the emulated run failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _native(int8: Path, data: str, work: Path) -> dict[str, Any]:
    from edgeopt.export.uint8 import write_uint8

    done = write_uint8(int8, output=work / "u8u8.onnx", data=data)
    assert done.source_metrics is not None and done.metrics is not None
    default, u8u8 = done.source_metrics, done.metrics
    assert default.latency_ms is not None and u8u8.latency_ms is not None
    assert default.int8 is not None
    return {
        "accuracy_measured": default.accuracy,
        "int8": default.int8.to_dict(),
        "u8u8": {
            "accuracy": u8u8.accuracy,
            "latency_ms_p50": u8u8.latency_ms.p50,
            "default_latency_ms_p50": default.latency_ms.p50,
            "size_bytes": u8u8.size_bytes,
            "default_size_bytes": default.size_bytes,
        },
    }


FAMILIES = {
    "LeNet-5": "zoo:lenet5?classes=4",
    "DS-CNN-S": "zoo:ds-cnn-s?classes=4",
    "ResNet-8": "zoo:resnet8?classes=4&input=3x16x16",
    "MobileNetV1-0.25": "zoo:mobilenet-v1?width=0.25&classes=4&input=3x32x32",
    "MobileNetV2-0.35": "zoo:mobilenet-v2?width=0.35&classes=4&input=3x32x32",
    "MobileNetV3-Small-0.5": "zoo:mobilenet-v3-small?width=0.5&classes=4&input=3x32x32",
    "SqueezeNet1.1-0.5": "zoo:squeezenet1.1?width=0.5&classes=4&input=3x32x32",
    "ShuffleNetV2-0.5": "zoo:shufflenet-v2?width=0.5&classes=4&input=3x32x32",
}


def family_worker(work: Path) -> list[dict[str, Any]]:
    """On the emulated host: every file of ``work`` checked on both paths."""
    import numpy as np

    from edgeopt.export.c import check_c
    from edgeopt.export.c import export_c

    rows = []
    for path in sorted(work.glob("*.onnx")):
        x = np.load(path.with_suffix(".npy"))
        export = export_c(path, work / f"{path.stem}-c")
        parity = {p: check_c(export, x, path=p) for p in ("auto", "as-shipped")}
        assert parity["auto"].arithmetic is not None
        rows.append(
            {
                "file": path.stem,
                "path": parity["auto"].arithmetic.path,
                **{
                    key: {"top1": p.top1_agreement, "max_int8_lsb": p.max_tensor_lsb}
                    for key, p in parity.items()
                },
            }
        )
    return rows


def families() -> None:
    import numpy as np

    from edgeopt.models import load_model
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    with tempfile.TemporaryDirectory(prefix="edgeopt-int8-families-") as folder:
        work = Path(folder)
        names = {}
        for index, (name, spec) in enumerate(FAMILIES.items()):
            shape = load_model(spec).input_shape
            rng = np.random.default_rng(3)
            x = np.cumsum(rng.standard_normal((96, *shape)), axis=-1).astype(np.float32) / 4
            np.savez(work / f"f{index}.npz", x=x, y=np.arange(96) % 4)
            for bits in (8, 4):
                stem = f"f{index}-{bits}"
                config = PTQConfig(bits=bits)
                quantize(
                    spec, config, data=f"npz:{work}/f{index}.npz", output=work / f"{stem}.onnx"
                )
                np.save(work / f"{stem}.npy", x[:32])
                names[stem] = f"{name} {bits}-bit"
        command = [
            *QEMU_HASWELL,
            sys.executable,
            "-m",
            "benchmarks.int8_hosts",
            "--families-worker",
        ]
        done = subprocess.run([*command, str(work)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the emulated run failed: {done.stderr[-1500:]}")
        rows = json.loads(done.stdout.strip().splitlines()[-1])
    for row in rows:
        row["model"] = names[row.pop("file")]
    save_result(
        "int8_hosts_families",
        {
            "emulator": " ".join(QEMU_HASWELL),
            "inputs": "fixed random (smoothed) inputs, 32 per file; PTQ defaults",
            "summary": [
                {
                    "model": r["model"],
                    "path": r["path"],
                    "measured_vs_c_lsb": r["auto"]["max_int8_lsb"],
                    "measured_vs_c_top1": r["auto"]["top1"],
                    "as_shipped_vs_c_lsb": r["as-shipped"]["max_int8_lsb"],
                }
                for r in rows
            ],
            "rows": rows,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=4, metavar=("FP32", "INT8", "DATA", "WORK"))
    parser.add_argument("--families", action="store_true")
    parser.add_argument("--families-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fp32, int8, data, work = args.worker
        print(json.dumps(worker(Path(fp32), Path(int8), data, Path(work))))
        return
    if args.families_worker:
        print(json.dumps(family_worker(args.families_worker)))
        return
    if platform.machine() != "x86_64" or shutil.which(QEMU_HASWELL[0]) is None:
        raise SystemExit("needs an x86-64 host with qemu-x86_64 (Debian: qemu-user).")
    if args.families:
        families()
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-int8-hosts-") as folder:
        for name, (fp32, data, split) in _models().items():
            work = Path(folder) / name
            work.mkdir()
            int8 = _quantize(fp32, data, work / "int8.onnx")
            emulated = _emulated(fp32, int8, data, work)
            native = _native(int8, data, work)
            row = {
                "model": name,
                "test_split": split,
                "sha256_native": _sha256(int8),
                "native": native,
                "emulated_avx2": emulated,
            }
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("model", "sha256_native")}), flush=True)
    summary = [
        {
            "model": r["model"],
            "same_file": r["sha256_native"] == r["emulated_avx2"]["sha256_written_here"],
            "sha256": r["sha256_native"],
            "avx2_saturates": r["emulated_avx2"]["host"]["is_saturating"],
            "avx2_accuracy_before": r["emulated_avx2"]["accuracy_as_shipped"],
            "avx2_accuracy_after": r["emulated_avx2"]["accuracy_measured"],
            "native_accuracy": r["native"]["accuracy_measured"],
            "avx2_c_top1_agreement": r["emulated_avx2"]["c_parity"]["top1_agreement"],
            "avx2_c_max_int8_lsb": r["emulated_avx2"]["c_parity"]["max_int8_lsb"],
            "u8u8_accuracy": r["native"]["u8u8"]["accuracy"],
            "u8u8_latency_ms_p50": r["native"]["u8u8"]["latency_ms_p50"],
            "default_latency_ms_p50": r["native"]["u8u8"]["default_latency_ms_p50"],
        }
        for r in rows
    ]
    save_result(
        "int8_hosts",
        {
            "emulator": " ".join(QEMU_HASWELL),
            "note": "under qemu-user, /proc/cpuinfo (cpu_flags) is the real host's; the probe "
            "is what the emulated CPU does",
            "summary": summary,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
