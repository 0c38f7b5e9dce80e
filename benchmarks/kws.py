"""Keyword spotting on real recordings: DS-CNN-S on FSDD, int8, priced on microcontrollers.

    .venv/bin/python -m benchmarks.kws [--epochs 30]

The Free Spoken Digit Dataset (shared/data/fsdd: 3,000 8 kHz recordings of 10 digits by 6
speakers; takes 0-4 are the test split) through the ``audio:`` spec with the "Hello Edge" front
end: 1 s clips, 40 ms Hann frames every 20 ms, 512-point real FFT, 40 mel filters, log, 10 MFCCs
(49 x 10). ``zoo:ds-cnn-s`` is trained (Adam, cosine, seed 0), exported, quantized to int8 with
static PTQ (MSE calibration on the calibration split) and profiled: test accuracy measured on
both ONNX files, latency and energy estimated on ``cortex-m4`` (X-CUBE-AI), ``cortex-m4-tflm``
and ``cortex-m7``, each for the model alone and with the front end's cost added. Results:
``benchmarks/results/kws.json``.
"""

from __future__ import annotations

import argparse
import time

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import quantize

TARGETS = ("cortex-m4", "cortex-m4-tflm", "cortex-m7")
DATA = "audio:{folder}?mfcc=10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    folder = require_shared("fsdd") / "recordings"
    start = time.perf_counter()
    data = edgeopt.load_data(DATA.format(folder=folder))
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    result = edgeopt.train("zoo:ds-cnn-s", data, edgeopt.TrainConfig(epochs=args.epochs))
    train_s = time.perf_counter() - start
    files = edgeopt.save_trained(result, data, CACHE / "kws-ds-cnn-s.onnx")
    int8 = quantize(
        str(files.onnx_path), PTQConfig(), data=data, output=CACHE / "kws-ds-cnn-s-int8.onnx"
    )
    artifacts = {"fp32": files.onnx_path, "int8": int8.model.onnx_path}
    profiles: dict[str, dict[str, object]] = {}
    rows = []
    for precision, path in artifacts.items():
        for target in TARGETS:
            metrics = edgeopt.profile(str(path), data=data, target=target, threads=1)
            profiles[f"{precision}@{target}"] = metrics.to_dict()
            est = metrics.estimate
            assert est is not None and est.frontend_latency_ms is not None
            rows.append(
                {
                    "precision": precision,
                    "target": target,
                    "accuracy_onnx": metrics.accuracy,
                    "size_bytes": metrics.size_bytes,
                    "peak_ram_bytes": metrics.peak_ram_bytes,
                    "host_latency_ms_p50": metrics.latency_ms.p50 if metrics.latency_ms else None,
                    "model_latency_ms": est.model_latency_ms,
                    "frontend_latency_ms": est.frontend_latency_ms,
                    "total_latency_ms": est.latency_ms,
                    "model_energy_uj": est.model_energy_uj,
                    "frontend_energy_uj": est.frontend_energy_uj,
                    "total_energy_uj": est.energy_uj,
                    "frontend_cycles": dict(est.frontend_cycles),
                }
            )
            print(
                f"{precision:5s} {target:15s} acc {metrics.accuracy:.2%}  model "
                f"{est.model_latency_ms:7.2f} ms + front end {est.frontend_latency_ms:6.2f} ms = "
                f"{est.latency_ms:7.2f} ms, {est.energy_uj:8.1f} uJ (estimated)"
            )
    first = profiles[f"fp32@{TARGETS[0]}"]
    summary = {
        "model": "zoo:ds-cnn-s",
        "data": f"FSDD, {data.sizes()['test']} test clips (takes 0-4), MFCC 49x10",
        "epochs": args.epochs,
        "load_seconds": round(load_s, 1),
        "train_seconds": round(train_s, 1),
        "accuracy_fp32_onnx": files.onnx_test_accuracy,
        "accuracy_int8_onnx": rows[len(TARGETS)]["accuracy_onnx"],
        "params": first["params"],
        "macs": first["macs"],
        "frontend_ops": data.frontend["frontend_ops"],
        "estimates": [{key: row[key] for key in row if key != "frontend_cycles"} for row in rows],
    }
    save_result(
        "kws",
        {
            "summary": summary,
            "data": data.describe(),
            "history": [vars(record) for record in result.history],
            "rows": rows,
            "profiles": profiles,
        },
    )


if __name__ == "__main__":
    main()
