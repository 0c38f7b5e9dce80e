"""Quantization benchmark: our PTQ, QAT, 4-bit and mixed precision against ONNX Runtime and NNCF.

    .venv/bin/python -m benchmarks.quantization [--mobilenet-epochs 2] [--qat-steps 300]

Fashion-MNIST (the official 60k / 10k split, 1x28x28) with two networks: ``zoo:lenet5``
(0.42 M MACs) and ``zoo:mobilenet-v2-cifar`` (MobileNetV2, width 1.0, stride-1 stem: 18.7 M
MACs on 1x28x28). The fp32 baselines are trained once and cached in ``benchmarks/cache/``
(LeNet-5's is the one ``benchmarks.profile_lenet5`` trains); reruns skip training. Every row is
a file: quantized here from the cached fp32 ONNX (QAT from its PyTorch weights), then measured
with the ``profile`` code: test accuracy on the 10,000 test images, size on disk, estimated
energy on ``cortex-m4``; latency p50 (ONNX Runtime, 1 thread, batch 1) is measured for all
files of a model in interleaved rounds, so every speed-up is a ratio taken within the run.

Peers, on the same fp32 file and the same 512 calibration samples (the data's calibration
split): ONNX Runtime's ``quantize_static`` with its default settings, and NNCF's
``nncf.quantize`` with its defaults, run from ``benchmarks/.venv-peers`` (installed here on
first use: NNCF is not an edgeopt dependency). Results: ``benchmarks/results/quantization.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result
from edgeopt.measure import profile_onnx
from edgeopt.measure.runtime import make_session
from edgeopt.measure.runtime import measure_latency
from edgeopt.stages.quantize.calibrate import CALIBRATION_METHODS

PEERS_VENV = Path(__file__).resolve().parent / ".venv-peers"
RUNS = Path(__file__).resolve().parent / "cache" / "quantization"
LATENCY_ROUNDS = 5
TARGET = "cortex-m4"


@dataclass
class Row:
    model: str
    method: str
    path: Path | None
    seconds: float = 0.0
    note: str = ""
    extra: dict[str, Any] | None = None
    error: str = ""


def _baseline(name: str, spec: str, epochs: int, data: edgeopt.Dataset) -> Path:
    """The cached fp32 ONNX file (and ``.pt`` weights beside it), trained when missing."""
    path = CACHE / f"{name}-fashion.onnx"
    record = path.with_suffix(".json")
    if path.exists() and path.with_suffix(".pt").exists() and record.exists():
        if json.loads(record.read_text())["config"]["epochs"] == epochs:
            print(f"{name}: cached fp32 baseline {path}", flush=True)
            return path
    print(f"{name}: training the fp32 baseline ({epochs} epochs)", flush=True)
    start = time.perf_counter()
    result = edgeopt.train(spec, data, edgeopt.TrainConfig(epochs=epochs))
    edgeopt.save_trained(result, data, path)
    print(f"{name}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def _ours(row: Row, model: Any, config: Any, data: edgeopt.Dataset) -> Row:
    start = time.perf_counter()
    try:
        result = edgeopt.quantize(model, config, data=data, output=row.path)
    except edgeopt.EdgeoptError as exc:
        row.error, row.path = str(exc), None
        return row
    row.seconds = time.perf_counter() - start
    row.extra = {"config": config.to_dict(), "float_nodes": list(result.float_nodes)}
    if result.qat_accuracy is not None:
        row.extra["qat_pytorch_accuracy"] = result.qat_accuracy
        row.extra["qat_history"] = [vars(r) for r in result.history]
    if result.plan is not None:
        row.extra["mixed"] = result.plan.to_dict()
    return row


class _Reader:
    """ONNX Runtime's calibration reader over the calibration split, in batches of 64."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.batches = iter([{name: x[i : i + 64]} for i in range(0, len(x), 64)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def _onnxruntime_peer(row: Row, fp32: Path, x_calib: np.ndarray) -> Row:
    import onnx
    from onnxruntime.quantization import quantize_static

    start = time.perf_counter()
    name = onnx.load(str(fp32)).graph.input[0].name
    try:
        quantize_static(str(fp32), str(row.path), _Reader(name, x_calib))
    except Exception as exc:  # a peer's failure is a result, not a crash
        row.error, row.path = " ".join(str(exc).split())[:300], None
        return row
    row.seconds = time.perf_counter() - start
    row.note = "defaults: QDQ, int8 activations and weights, per-tensor, MinMax"
    return row


def _peers_python() -> Path | str:
    """The peers' interpreter with NNCF, installed on first use; or why it is not there."""
    python = PEERS_VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run([python, "-c", "import nncf"], capture_output=True, text=True)
        if check.returncode == 0:
            return python
    steps = [
        [sys.executable, "-m", "venv", str(PEERS_VENV)],
        # torch first and pinned, as in the Makefile: unpinned it pulls the CUDA packages.
        [python, "-m", "pip", "install", "--quiet", "torch==2.13.0"],
        [python, "-m", "pip", "install", "--quiet", "nncf", "onnx", "onnxruntime"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return f"installing NNCF failed: {lines[-1] if lines else done.returncode}"
    return python


def _nncf_peer(row: Row, fp32: Path, x_calib: np.ndarray) -> Row:
    python = _peers_python()
    if isinstance(python, str):
        row.error, row.path = python, None
        return row
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        calib = Path(scratch) / "calib.npy"
        np.save(calib, x_calib)
        script = Path(__file__).resolve().parent / "_nncf_peer.py"
        done = subprocess.run(
            [python, str(script), str(fp32), str(calib), str(row.path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        row.error, row.path = f"nncf.quantize failed: {lines[-1] if lines else '?'}", None
        return row
    row.seconds = time.perf_counter() - start
    version = next((ln for ln in done.stdout.splitlines() if ln.startswith("nncf ")), "nncf")
    row.note = f"{version}, defaults (mixed preset, MinMax, fast bias correction)"
    return row


def _latencies(paths: dict[str, Path], sample: np.ndarray) -> dict[str, float]:
    """Median over interleaved rounds of each file's p50 (``measure_latency``, 1 thread)."""
    sessions = {key: make_session(path, threads=1) for key, path in paths.items()}
    found: dict[str, list[float]] = {key: [] for key in paths}
    for _ in range(LATENCY_ROUNDS):
        for key, session in sessions.items():
            found[key].append(measure_latency(session, sample, threads=1).p50)
    return {key: statistics.median(values) for key, values in found.items()}


def _measure(rows: list[Row], data: edgeopt.Dataset) -> list[dict[str, Any]]:
    fp32 = rows[0]
    assert fp32.path is not None
    sample = data.arrays("test")[0][:1]
    paths = {row.method: row.path for row in rows if row.path is not None}
    latency = _latencies(paths, sample)
    target = edgeopt.Target.from_name(TARGET)
    base = profile_onnx(fp32.path, data=data, target=target, is_latency_measured=False)
    out = []
    for row in rows:
        entry: dict[str, Any] = {"model": row.model, "method": row.method, "note": row.note}
        if row.path is None:
            entry["error"] = row.error
            out.append(entry)
            continue
        metrics = profile_onnx(row.path, data=data, target=target, is_latency_measured=False)
        assert metrics.accuracy is not None and base.accuracy is not None
        assert metrics.estimate is not None
        entry.update(
            accuracy=metrics.accuracy,
            drop_pp=100 * (base.accuracy - metrics.accuracy),
            size_bytes=metrics.size_bytes,
            size_ratio=base.size_bytes / metrics.size_bytes,
            latency_ms_p50=latency[row.method],
            speedup=latency[fp32.method] / latency[row.method],
            energy_uj=metrics.estimate.energy_uj,
            macs=metrics.macs,
            seconds=round(row.seconds, 1),
            **(row.extra or {}),
        )
        out.append(entry)
        print(
            f"{row.model:>20} {row.method:<34} {entry['accuracy']:.2%} "
            f"{entry['drop_pp']:+.2f} pp {entry['size_bytes']:>9,} B "
            f"{entry['latency_ms_p50']:.4f} ms x{entry['speedup']:.2f}",
            flush=True,
        )
    return out


def _run_model(
    name: str,
    spec: str,
    fp32: Path,
    data: edgeopt.Dataset,
    *,
    qat: dict[str, Any],
    is_adarounded: bool,
    is_mixed: bool,
    folder: Path,
) -> list[dict[str, Any]]:
    weights = fp32.with_suffix(".pt")
    torch_model = edgeopt.load_model(spec, weights=weights, data=data)
    x_calib = data.arrays("calib")[0]
    rows = [Row(name, "fp32", fp32, note="trained fp32 baseline (BatchNorm folded at export)")]

    def file(method: str) -> Path:
        return folder / f"{name}-{method.replace(' ', '-').replace('/', '-')}.onnx"

    for calibration in CALIBRATION_METHODS:
        method = f"PTQ int8 {calibration}" + (" (default)" if calibration == "mse" else "")
        config = edgeopt.PTQConfig(calibration=calibration)
        rows.append(_ours(Row(name, method, file(method)), str(fp32), config, data))
    method = "PTQ int8 mse + CLE + bias corr."
    config = edgeopt.PTQConfig(is_equalized=True, is_bias_corrected=True)
    rows.append(_ours(Row(name, method, file(method)), str(fp32), config, data))
    if is_adarounded:
        method = "PTQ int8 mse + AdaRound"
        config = edgeopt.PTQConfig(is_adarounded=True)
        rows.append(_ours(Row(name, method, file(method)), str(fp32), config, data))
    for bits in (8, 4):
        label = "int8" if bits == 8 else "4-bit weights"
        method = f"QAT {label}"
        config = edgeopt.QATConfig(bits=bits, **qat)
        print(f"{name}: {method} ...", flush=True)
        rows.append(_ours(Row(name, method, file(method)), torch_model, config, data))
        if bits == 4:
            method = "PTQ 4-bit weights mse"
            config = edgeopt.PTQConfig(bits=4)
            rows.append(_ours(Row(name, method, file(method)), str(fp32), config, data))
    if is_mixed:
        sizes = [r.path.stat().st_size for r in rows if r.path and r.method.startswith("PTQ ")]
        budget = (max(sizes) + min(sizes)) // 2
        method = f"mixed precision <= {budget:,} B"
        config = edgeopt.MixedPrecisionConfig(max_flash_bytes=budget)
        rows.append(_ours(Row(name, method, file("mixed")), str(fp32), config, data))
    method = "ONNX Runtime quantize_static"
    rows.append(_onnxruntime_peer(Row(name, method, file(method)), fp32, x_calib))
    method = "NNCF nncf.quantize"
    print(f"{name}: {method} ...", flush=True)
    rows.append(_nncf_peer(Row(name, method, file(method)), fp32, x_calib))
    return _measure(rows, data)


def _targets(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / missed."""
    found = []
    for model, rows in results.items():
        by = {row["method"]: row for row in rows}
        ptq = by["PTQ int8 mse (default)"]
        peers = [by[m] for m in ("ONNX Runtime quantize_static", "NNCF nncf.quantize")]
        best_peer = max((p["accuracy"] for p in peers if "accuracy" in p), default=None)
        found += [
            {
                "model": model,
                "target": "int8 PTQ drop <= 0.3 pp",
                "value": ptq["drop_pp"],
                "met": ptq["drop_pp"] <= 0.3,
            },
            {
                "model": model,
                "target": "int8 PTQ no worse than either peer",
                "value": ptq["accuracy"],
                "best_peer": best_peer,
                "met": best_peer is None or ptq["accuracy"] >= best_peer,
            },
            {
                "model": model,
                "target": "QAT drop <= 0.2 pp",
                "value": by["QAT int8"].get("drop_pp"),
                "met": by["QAT int8"].get("drop_pp", 99.0) <= 0.2,
            },
            {
                "model": model,
                "target": "int8 file >= 3.5x smaller",
                "value": ptq["size_ratio"],
                "met": ptq["size_ratio"] >= 3.5,
            },
        ]
        if ptq["macs"] >= 10_000_000:
            found.append(
                {
                    "model": model,
                    "target": "int8 >= 2.0x faster (10 M-MAC model)",
                    "value": ptq["speedup"],
                    "met": ptq["speedup"] >= 2.0,
                }
            )
    return found


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    """The BENCHMARKS.md table of one run."""
    lines = [
        "| model | method | accuracy | drop | size (B) | smaller | latency p50 | speed-up "
        "| energy cortex-m4 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        for row in rows:
            if "accuracy" not in row:
                lines.append(f"| {model} | {row['method']} | not run: {row['error']} |||||||")
                continue
            lines.append(
                f"| {model} | {row['method']} | {row['accuracy']:.2%} | {row['drop_pp']:+.2f} pp "
                f"| {row['size_bytes']:,} | {row['size_ratio']:.2f}x "
                f"| {1000 * row['latency_ms_p50']:.1f} us | {row['speedup']:.2f}x "
                f"| {row['energy_uj']:,.0f} uJ |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lenet-epochs", type=int, default=10)
    parser.add_argument("--mobilenet-epochs", type=int, default=2)
    parser.add_argument("--qat-steps", type=int, default=300, help="MobileNet QAT steps/epoch")
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    data = edgeopt.load_data(f"idx:{require_shared('fashion-mnist')}")
    RUNS.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    setups = [
        (
            "lenet5",
            "zoo:lenet5",
            args.lenet_epochs,
            {"epochs": 2},
            True,
            True,
        ),
    ]
    if not args.skip_mobilenet:
        setups.append(
            (
                "mobilenet-v2-cifar",
                "zoo:mobilenet-v2-cifar",
                args.mobilenet_epochs,
                {"epochs": 1, "steps_per_epoch": args.qat_steps},
                False,
                False,
            )
        )
    for name, spec, epochs, qat, is_adarounded, is_mixed in setups:
        fp32 = _baseline(name, spec, epochs, data)
        results[name] = _run_model(
            name,
            spec,
            fp32,
            data,
            qat=qat,
            is_adarounded=is_adarounded,
            is_mixed=is_mixed,
            folder=RUNS,
        )
    targets = _targets(results)
    summary = {
        "data": "Fashion-MNIST (official 60k train pool / 10k test; calib 512 of train)",
        "target": TARGET,
        "seconds": round(time.perf_counter() - start),
        "load_average_at_end": os.getloadavg(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "targets": targets,
    }
    save_result("quantization", {"summary": summary, "results": results})
    print(markdown(results))


if __name__ == "__main__":
    main()
