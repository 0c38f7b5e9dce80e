"""int8 on Arm: the same files measured on an emulated aarch64 host give the x86 host's numbers.

    .venv/bin/python -m benchmarks.int8_arm ROOTFS [--cpu max,cortex-a53]

ROOTFS is a Debian arm64 root file system with ONNX Runtime in ``/opt/venv``, run through QEMU's
user-mode emulator registered with binfmt_misc (Debian's qemu-user-static and binfmt-support).
Made once, as root::

    apt-get install debootstrap qemu-user-static binfmt-support
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,gcc,\\
        libc6-dev bookworm ROOTFS http://deb.debian.org/debian
    cp /etc/ssl/certs/ca-certificates.crt ROOTFS/etc/ssl/certs/ && cp /etc/resolv.conf ROOTFS/etc/
    chroot ROOTFS sh -c "python3 -m venv /opt/venv && /opt/venv/bin/pip install numpy==2.4.6 \\
        onnx==1.23.2 onnxruntime==1.32.0 ml_dtypes pyyaml"
    mount --bind /proc ROOTFS/proc   # not /sys: ONNX Runtime's cpuinfo crashes on the host's

Four int8 files are made here (cnn-s on digits from ``benchmarks.int8_hosts``'s cache; ResNet-8,
ResNet-8 with 4-bit weights and MobileNetV3-Small on fixed random inputs) with this host's
measured logits; then, in the chroot, under each emulated CPU (``QEMU_CPU``): the probe, the
logits edgeopt measures (compared bit for bit with this host's), those of the file as shipped,
and the C library (built by the chroot's gcc) against both. Results:
``benchmarks/results/int8_arm.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks._common is imported where the host runs, not in the chroot (which has no torch)
SRC = Path(__file__).resolve().parent.parent / "src"
RANDOM = {
    "ResNet-8": ("zoo:resnet8?classes=4&input=3x16x16", (3, 16, 16), 8),
    "ResNet-8 4-bit": ("zoo:resnet8?classes=4&input=3x16x16", (3, 16, 16), 4),
    "MobileNetV3-Small": (
        "zoo:mobilenet-v3-small?width=0.5&classes=4&input=3x32x32",
        (3, 32, 32),
        8,
    ),
}


def _prepare(work: Path) -> list[str]:
    """The int8 files, their inputs and this host's measured logits, into ``work``."""
    from benchmarks._common import CACHE
    from edgeopt.data import load_data
    from edgeopt.measure.int8 import make_exact_session
    from edgeopt.measure.runtime import predict
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    fp32 = CACHE / "cnn-s-digits.onnx"
    if not fp32.exists():
        raise SystemExit(f"{fp32} is missing: run python -m benchmarks.int8_hosts first.")
    digits = load_data("digits")
    quantize(str(fp32), PTQConfig(), data=digits, output=work / "cnn-s.onnx")
    x, y = digits.arrays("test")
    np.save(work / "cnn-s.x.npy", x)
    np.save(work / "cnn-s.y.npy", y)
    names = ["cnn-s"]
    for index, (spec, shape, bits) in enumerate(RANDOM.values()):
        stem = f"m{index}"
        rng = np.random.default_rng(7)
        samples = np.cumsum(rng.standard_normal((96, *shape)), axis=-1).astype(np.float32) / 4
        np.savez(work / f"{stem}.npz", x=samples, y=np.arange(96) % 4)
        config = PTQConfig(bits=bits, calibration="minmax")
        quantize(spec, config, data=f"npz:{work / stem}.npz", output=work / f"{stem}.onnx")
        np.save(work / f"{stem}.x.npy", samples[:48])
        names.append(stem)
    for stem in names:
        samples = np.load(work / f"{stem}.x.npy")
        logits = predict(make_exact_session(work / f"{stem}.onnx"), samples)
        np.save(work / f"{stem}.host.npy", logits)
    return names


def worker(work: Path, names: list[str]) -> list[dict[str, Any]]:
    """In the chroot: measure each file and check the C library against it."""
    from edgeopt.export.c import check_c
    from edgeopt.export.c import export_c
    from edgeopt.measure.int8 import host_int8
    from edgeopt.measure.int8 import make_exact_session
    from edgeopt.measure.runtime import predict

    rows = []
    for stem in names:
        start = time.perf_counter()
        samples, host = np.load(work / f"{stem}.x.npy"), np.load(work / f"{stem}.host.npy")
        session = make_exact_session(work / f"{stem}.onnx")
        measured = predict(session, samples)
        shipped = predict(make_exact_session(work / f"{stem}.onnx", path="as-shipped"), samples)
        assert session.arithmetic is not None
        row: dict[str, Any] = {
            "file": stem,
            "probe_is_saturating": host_int8().is_saturating,
            "path": session.arithmetic.path,
            "measured_equals_x86_bitwise": bool(np.array_equal(measured, host)),
            "as_shipped_max_diff_vs_x86": float(np.abs(shipped - host).max()),
        }
        if stem == "cnn-s":
            labels = np.load(work / "cnn-s.y.npy")
            row["accuracy_measured"] = float((measured.argmax(1) == labels).mean())
            row["accuracy_as_shipped"] = float((shipped.argmax(1) == labels).mean())
        export = export_c(work / f"{stem}.onnx", Path(tempfile.mkdtemp()) / "c")
        for path in ("auto", "as-shipped"):
            parity = check_c(export, samples[:32], path=path)
            row[f"c_vs_{path}"] = {"top1": parity.top1_agreement, "lsb": parity.max_tensor_lsb}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("--cpu", default="max,cortex-a53", help="QEMU_CPU values to run under")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker[0]), args.worker[1:])))
        return
    if not (args.rootfs / "opt/venv/bin/python").exists():
        raise SystemExit(f"{args.rootfs}: no /opt/venv/bin/python in it; see this script's help.")
    inside = Path("/opt/edgeopt-int8-arm")
    target = args.rootfs / inside.relative_to("/")
    shutil.rmtree(target, ignore_errors=True)
    (target / "work").mkdir(parents=True)
    shutil.copytree(SRC, target / "src")
    shutil.copytree(Path(__file__).resolve().parent, target / "benchmarks", dirs_exist_ok=True)
    names = _prepare(target / "work")
    runs = {}
    for cpu in args.cpu.split(","):
        command = (
            f"cd {inside} && QEMU_CPU={cpu} PYTHONPATH={inside / 'src'}:{inside} "
            f"/opt/venv/bin/python -m benchmarks.int8_arm / --worker {inside / 'work'} "
            + " ".join(names)
        )
        done = subprocess.run(
            ["chroot", str(args.rootfs), "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"the aarch64 run failed: {done.stderr[-1500:]}")
        runs[cpu] = json.loads(done.stdout.strip().splitlines()[-1])
    labels = dict(zip(names, ["cnn-s (digits)", *RANDOM], strict=True))
    for rows in runs.values():
        for row in rows:
            row["model"] = labels[row.pop("file")]
    summary = [
        {
            "cpu": cpu,
            **{key: row[key] for key in ("model", "path", "measured_equals_x86_bitwise")},
            "c_lsb_measured": row["c_vs_auto"]["lsb"],
            "c_lsb_as_shipped": row["c_vs_as-shipped"]["lsb"],
        }
        for cpu, rows in runs.items()
        for row in rows
    ]
    from benchmarks._common import save_result

    save_result(
        "int8_arm",
        {
            "emulator": "qemu-aarch64 (Debian qemu-user-static 7.2, binfmt_misc), QEMU_CPU per run",
            "summary": summary,
            "runs": runs,
        },
    )
    shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    main()
