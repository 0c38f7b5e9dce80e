"""Foundation benchmark: LeNet-5 trained on Fashion-MNIST, profiled on its exported ONNX file.

    .venv/bin/python -m benchmarks.profile_lenet5 [--epochs 10]

Trains ``zoo:lenet5`` on the full Fashion-MNIST training set (official 10k test split), saves
the artifact under ``benchmarks/cache/``, and profiles it on ``cortex-m4`` (estimate) and on
this machine (measured latency, 1 thread). Results: ``benchmarks/results/profile_lenet5.json``.
"""

from __future__ import annotations

import argparse
import time

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    data = edgeopt.load_data(f"idx:{require_shared('fashion-mnist')}")
    start = time.perf_counter()
    result = edgeopt.train("zoo:lenet5", data, edgeopt.TrainConfig(epochs=args.epochs))
    train_s = time.perf_counter() - start
    files = edgeopt.save_trained(result, data, CACHE / "lenet5-fashion.onnx")
    profiles = {}
    for target in ("cortex-m4", "host"):
        metrics = edgeopt.profile(str(files.onnx_path), data=data, target=target, threads=1)
        profiles[target] = metrics.to_dict()
    m4 = profiles["cortex-m4"]
    summary = {
        "model": "zoo:lenet5",
        "data": "Fashion-MNIST (60k train pool, official 10k test)",
        "epochs": args.epochs,
        "train_seconds": round(train_s, 1),
        "accuracy_onnx": m4["accuracy"],
        "accuracy_pytorch": result.test_accuracy,
        "params": m4["params"],
        "macs": m4["macs"],
        "size_bytes": m4["size_bytes"],
        "peak_ram_bytes": m4["peak_ram_bytes"],
        "host_latency_ms_p50": profiles["host"]["latency_ms"]["p50"],
        "host_latency_ms_p99": profiles["host"]["latency_ms"]["p99"],
        "cortex_m4_latency_ms_estimated": m4["estimate"]["latency_ms"],
        "cortex_m4_energy_uj_estimated": m4["estimate"]["energy_uj"],
        "fits_cortex_m4": m4["fits"],
    }
    save_result("profile_lenet5", {"summary": summary, "profiles": profiles})


if __name__ == "__main__":
    main()
