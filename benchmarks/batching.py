"""Batching and threads: latency and throughput of LeNet-5 and MobileNetV2, fp32 and int8.

    .venv/bin/python -m benchmarks.batching

Benches the two Fashion-MNIST baselines of ``benchmarks.quantization`` (``benchmarks/cache/
lenet5-fashion.onnx``, ``mobilenet-v2-cifar-fashion.onnx``) and their default int8 PTQ files
(``benchmarks/cache/quantization/*-PTQ-int8-mse-(default).onnx``; quantized here with
``PTQConfig()`` on the 512-image calibration split when that cache is missing) with
:func:`edgeopt.bench` on the CPU provider, batch 1, 8 and 32, 1 and 2 intra-op threads, fed the
official Fashion-MNIST test images. Each cell is timed ``ROUNDS`` times, the rounds interleaved
over all files (so load changes hit every file alike), each round at least 50 runs and 1 s after
10 warm-up runs; the table reports the median over rounds of p50, p99 and throughput
(samples over the timed loop's total time, so slow stragglers count, unlike in p50). The load
average (``os.getloadavg``, what ``uptime`` prints) is recorded before and after: the machine's
two cores are shared with other jobs. Results: ``benchmarks/results/batching.json``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result
from edgeopt.measure.bench import BenchConfig
from edgeopt.measure.bench import bench
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import quantize

ROUNDS = 3
BATCHES = (1, 8, 32)
THREADS = (1, 2)
MODELS = {
    "LeNet-5": ("lenet5-fashion.onnx", "lenet5-PTQ-int8-mse-(default).onnx"),
    "MobileNetV2": (
        "mobilenet-v2-cifar-fashion.onnx",
        "mobilenet-v2-cifar-PTQ-int8-mse-(default).onnx",
    ),
}


def _files(data: edgeopt.Dataset, work: Path) -> dict[tuple[str, str], Path]:
    files = {}
    for model, (fp32_name, int8_name) in MODELS.items():
        fp32 = CACHE / fp32_name
        if not fp32.exists():
            raise SystemExit(f"{fp32} is missing: run python -m benchmarks.quantization first.")
        int8 = CACHE / "quantization" / int8_name
        if not int8.exists():
            int8 = quantize(str(fp32), PTQConfig(), data=data, output=work / int8_name).model
            int8 = int8.onnx_path
        files[(model, "fp32")] = fp32
        files[(model, "int8")] = int8
    return files


def _uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def main() -> None:
    data = edgeopt.load_data(f"idx:{require_shared('fashion-mnist')}")
    config = BenchConfig(
        batches=BATCHES, threads=THREADS, providers=("cpu",), min_runs=50, min_seconds=1.0
    )
    load_before, uptime_before = os.getloadavg(), _uptime()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeopt-batching-") as scratch:
        files = _files(data, Path(scratch))
        rounds: dict[tuple[str, str], list[Any]] = {key: [] for key in files}
        for _ in range(ROUNDS):
            for key, path in files.items():
                rounds[key].append(bench(path, config, data=data))
    load_after, uptime_after = os.getloadavg(), _uptime()
    rows, summary = [], []
    for (model, dtype), reports in rounds.items():
        for threads in THREADS:
            for batch in BATCHES:
                cells = [report.row("cpu", batch, threads) for report in reports]
                p50 = statistics.median(c.p50_ms for c in cells)
                p99 = statistics.median(c.p99_ms for c in cells)
                throughput = statistics.median(c.throughput_per_s for c in cells)
                rows.append(
                    {
                        "model": model,
                        "dtype": dtype,
                        "file": str(files[(model, dtype)].relative_to(CACHE.parent.parent)),
                        "threads": threads,
                        "batch": batch,
                        "p50_ms_median": p50,
                        "p99_ms_median": p99,
                        "throughput_per_s_median": throughput,
                        "rounds": [c.to_dict() for c in cells],
                    }
                )
                summary.append(
                    {
                        "model": model,
                        "dtype": dtype,
                        "threads": threads,
                        "batch": batch,
                        "p50_ms": round(p50, 4),
                        "p99_ms": round(p99, 4),
                        "per_sample_us": round(p50 * 1e3 / batch, 2),
                        "throughput_per_s": round(throughput),
                    }
                )
    save_result(
        "batching",
        {
            "config": config.to_dict(),
            "rounds": ROUNDS,
            "input": rounds[next(iter(rounds))][0].input,
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
            "uptime_before": uptime_before,
            "uptime_after": uptime_after,
            "environment": rounds[next(iter(rounds))][0].environment,
            "seconds": round(time.perf_counter() - started, 1),
            "summary": summary,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
