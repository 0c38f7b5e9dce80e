"""Pruning on Fashion-MNIST: Deep Compression ratios, half the MACs, and pruning with int8.

    .venv/bin/python -m benchmarks.pruning [--only deep-compression|channel]

(a) Deep Compression (Han et al. 2016, arXiv 1510.00149, Table 1: LeNet-300-100 40x, LeNet-5
39x on MNIST). LeNet-300-100, the classic LeNet-5 (6-16-120-84, 61.7k weights) and Caffe's
LeNet (``lenet5-caffe``: 20-50-500, 431k weights, the network the paper calls LeNet-5) are
trained 10 epochs, pruned on Zhu & Gupta's gradual schedule during fine-tuning (12 epochs; 24
for Caffe's LeNet) with one global magnitude threshold (per-layer ratios from the sensitivity
analysis for the classic LeNet-5), then written as ``.edc`` files (k-means weight sharing,
relative indices, Huffman coding) through :func:`edgeopt.run` (a one-step prune recipe with
``compress``), the library call behind ``edgeopt prune --compress``. The ratio is the fp32
ONNX file over the ``.edc`` file; the accuracy is measured on the ONNX file that the ``.edc``
decodes to. Target: at least 50x at no more than 0.3 pp loss. Sparsities and bits come from
exploratory runs scored on the validation split, listed in BENCHMARKS.md.

(b) Channel pruning of ResNet-8 (the MLPerf Tiny image-classification network) at width 1.5
on 1x28x28: 24/48/96 channels, 20.9 M MACs. At width 1 it has 9.3 M MACs on 28x28, under the
10 M asked for; width 1.5 keeps every channel count a multiple of 8 (the block of ONNX
Runtime's AVX2 convolution kernels; 48 and 96 also of AVX-512's 16), so the dense model runs
at full speed and any speed-up comes from the pruning. Half its dense MACs are removed
(``ratio_of="macs"``, one channel ratio for every layer, counts kept rounded to multiples of
8), then it is fine-tuned. Targets: at most 1 pp loss, at least 1.5x lower latency (ONNX
Runtime, 1 thread, batch 1), measured in this run. The same pruning without rounding and with
multiples of 16 is timed too (architecture only: latency does not depend on the weights).

(c) The pruned ResNet-8 and the dense one quantized to int8 (static PTQ, MSE calibration).

All latencies of (b) and (c) are measured back to back: ``LATENCY_ROUNDS`` rounds over every
file, the median of each file's p50s reported. Trained baselines are cached in
``benchmarks/cache/`` (gitignored); delete them to train again. Results:
``benchmarks/results/pruning.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result
from edgeopt._io import write_json
from edgeopt.data import Dataset
from edgeopt.export.onnx import export_onnx
from edgeopt.measure import profile_onnx
from edgeopt.models import ModelHandle
from edgeopt.target import Target

OUT = CACHE / "pruning"
LATENCY_ROUNDS = 7
MAX_LOSS_DEEP_COMPRESSION = 0.003
MIN_RATIO = 50.0
MAX_LOSS_CHANNEL = 0.01
MIN_SPEEDUP = 1.5

#: row, cached baseline, spec, training epochs, sparsity, sensitivity-guided, fine-tuning epochs,
#: conv bits, fc bits. The settings were chosen on exploratory runs (BENCHMARKS.md says which).
DEEP_COMPRESSION = (
    ("lenet300", "lenet300", "zoo:lenet300", 10, 0.95, False, 12, 8, 5),
    ("lenet5", "lenet5", "zoo:lenet5", 10, 0.85, True, 12, 8, 5),
    ("lenet5-caffe", "lenet5-caffe", "zoo:lenet5-caffe", 10, 0.94, False, 24, 5, 4),
)
CHANNEL_SPEC = "zoo:resnet8?width=1.5"
CHANNEL_EPOCHS = 6
CHANNEL_FINETUNE_EPOCHS = 3


def baseline(
    name: str, spec: str, epochs: int, data: Dataset
) -> tuple[ModelHandle, dict[str, Any]]:
    """The trained model from the cache, or trained now and cached; how long training took."""
    path = CACHE / f"pruning-{name}.onnx"
    record_path = path.with_suffix(".json")
    if not path.with_suffix(".pt").exists():
        start = time.perf_counter()
        result = edgeopt.train(spec, data, edgeopt.TrainConfig(epochs=epochs))
        seconds = round(time.perf_counter() - start, 1)
        edgeopt.save_trained(result, data, path)
        record = json.loads(record_path.read_text())
        write_json(record_path, {**record, "train_seconds": seconds})
        return result.model, {"train_seconds": seconds, "is_cached": False}
    handle = edgeopt.load_model(spec, weights=path.with_suffix(".pt"), data=data)
    seconds = json.loads(record_path.read_text()).get("train_seconds")
    return handle, {"train_seconds": seconds, "is_cached": True}


def deep_compression(data: Dataset) -> list[dict[str, Any]]:
    rows = []
    for row, name, spec, epochs, sparsity, guided, finetune, bits_conv, bits_fc in DEEP_COMPRESSION:
        handle, training = baseline(name, spec, epochs, data)
        config = edgeopt.PruneConfig(
            ratio=sparsity,
            schedule="gradual",
            finetune_epochs=finetune,
            is_sensitivity_guided=guided,
        )
        start = time.perf_counter()
        report = edgeopt.run(
            handle,
            edgeopt.Recipe(steps=(edgeopt.Step(config),)),
            data=data,
            output=OUT / f"{row}.onnx",
            target="cortex-m4",
            compress=edgeopt.Compression(bits_conv=bits_conv, bits_fc=bits_fc),
        )
        seconds = time.perf_counter() - start
        assert report.before is not None and report.compressed is not None
        compression, pruning = report.compressed.report, report.output("prune")
        source, pruned, decoded = report.before, report.after, report.compressed.decoded
        loss = (source.accuracy or 0.0) - (decoded.accuracy or 0.0)
        ratio = source.size_bytes / max(1, compression.compressed_bytes)
        rows.append(
            {
                "row": row,
                "spec": spec,
                "params": source.params,
                "sparsity": pruning.sparsity,
                "is_sensitivity_guided": guided,
                "finetune_epochs": finetune,
                "bits_conv": bits_conv,
                "bits_fc": bits_fc,
                "size_bytes_fp32": source.size_bytes,
                "size_bytes_decoded": decoded.size_bytes,
                "compressed_bytes": compression.compressed_bytes,
                "graph_bytes": compression.graph_bytes,
                "compressed_bytes_unpruned": report.compressed.source_bytes,
                "ratio": ratio,
                "accuracy_fp32": source.accuracy,
                "accuracy_pruned": pruned.accuracy,
                "accuracy_decompressed": decoded.accuracy,
                "loss_pp": 100 * loss,
                "is_ratio_met": ratio >= MIN_RATIO,
                "is_loss_met": loss <= MAX_LOSS_DEEP_COMPRESSION,
                "layers": [layer.to_dict() for layer in pruning.layers],
                "tensors": [t.to_dict() for t in compression.tensors],
                "training": training,
                "prune_seconds": round(seconds, 1),
            }
        )
        print(
            f"{row}: {ratio:.1f}x, sparsity {pruning.sparsity:.3f}, accuracy "
            f"{source.accuracy:.4f} -> {decoded.accuracy:.4f}",
            flush=True,
        )
    return rows


def interleaved_latency(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each file's p50 in ``LATENCY_ROUNDS`` rounds over all files; the median of them."""
    p50s: dict[str, list[float]] = {key: [] for key in paths}
    for _ in range(LATENCY_ROUNDS):
        for key, path in paths.items():
            metrics = profile_onnx(path, threads=1)
            assert metrics.latency_ms is not None
            p50s[key].append(metrics.latency_ms.p50)
    return {
        key: {"p50_ms_median": statistics.median(values), "p50_ms_rounds": values}
        for key, values in p50s.items()
    }


def channel(data: Dataset) -> dict[str, Any]:
    handle, training = baseline("resnet8-w1.5", CHANNEL_SPEC, CHANNEL_EPOCHS, data)
    start = time.perf_counter()
    config = edgeopt.PruneConfig(
        granularity="channel",
        ratio=0.5,
        ratio_of="macs",
        scope="layer",
        channel_multiple=8,
        finetune_epochs=CHANNEL_FINETUNE_EPOCHS,
    )
    report = edgeopt.run(
        handle,
        edgeopt.Recipe(steps=(edgeopt.Step(config),)),
        data=data,
        output=OUT / "resnet8.onnx",
        target="cortex-m4",
    )
    pruning = report.output("prune")
    prune_s = time.perf_counter() - start
    dense_onnx = export_onnx(handle, OUT / "resnet8-dense.onnx")
    paths = {"dense fp32": dense_onnx, "pruned fp32": report.path}
    widths = {"pruned fp32": [layer.remaining for layer in pruning.layers]}
    for multiple in (1, 16):  # the architecture alone: latency does not depend on the weights
        shape_only = edgeopt.prune(
            handle,
            edgeopt.PruneConfig(
                granularity="channel",
                ratio=0.5,
                ratio_of="macs",
                scope="layer",
                channel_multiple=multiple,
                finetune_epochs=0,
            ),
            data=data,
        )
        key = f"pruned fp32, channels x{multiple} (not fine-tuned)"
        paths[key] = export_onnx(shape_only.model, OUT / f"resnet8-x{multiple}.onnx")
        widths[key] = [layer.remaining for layer in shape_only.layers]
    start = time.perf_counter()
    for key, source in (("dense int8", dense_onnx), ("pruned int8", report.path)):
        out = OUT / f"{source.stem}-int8.onnx"
        edgeopt.quantize(str(source), edgeopt.PTQConfig(), data=data, output=out)
        paths[key] = out
    quantize_s = time.perf_counter() - start
    latency = interleaved_latency(paths)
    m4 = Target.from_name("cortex-m4")
    rows = {}
    for key, path in paths.items():
        is_tuned = "not fine-tuned" not in key
        metrics = profile_onnx(path, data=data if is_tuned else None, target=m4, threads=1)
        assert metrics.estimate is not None
        rows[key] = {
            "file": path.name,
            "accuracy": metrics.accuracy,
            "params": metrics.params,
            "macs": metrics.macs,
            "size_bytes": metrics.size_bytes,
            "latency_p50_ms": latency[key]["p50_ms_median"],
            "latency_p50_ms_rounds": latency[key]["p50_ms_rounds"],
            "cortex_m4_latency_ms_estimated": metrics.estimate.latency_ms,
            "cortex_m4_energy_uj_estimated": metrics.estimate.energy_uj,
            "channels": widths.get(key),
        }
    dense, pruned = rows["dense fp32"], rows["pruned fp32"]
    loss = dense["accuracy"] - pruned["accuracy"]
    speedup = dense["latency_p50_ms"] / pruned["latency_p50_ms"]
    return {
        "model": CHANNEL_SPEC,
        "config": config.to_dict(),
        "mac_reduction": 1 - pruned["macs"] / dense["macs"],
        "loss_pp": 100 * loss,
        "speedup": speedup,
        "is_loss_met": loss <= MAX_LOSS_CHANNEL,
        "is_speedup_met": speedup >= MIN_SPEEDUP,
        "rows": rows,
        "notes": list(pruning.notes),
        "history": [vars(record) for record in pruning.history],
        "training": training,
        "prune_seconds": round(prune_s, 1),
        "quantize_seconds": round(quantize_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=("deep-compression", "channel"), default=None)
    args = parser.parse_args()
    data = edgeopt.load_data(f"idx:{require_shared('fashion-mnist')}")
    start = time.perf_counter()
    payload: dict[str, Any] = {}
    if args.only in (None, "deep-compression"):
        payload["deep_compression"] = deep_compression(data)
    if args.only in (None, "channel"):
        payload["channel"] = channel(data)
    summary: dict[str, Any] = {"seconds": round(time.perf_counter() - start, 1)}
    for row in payload.get("deep_compression", []):
        summary[row["row"]] = {
            key: row[key] for key in ("ratio", "sparsity", "loss_pp", "is_ratio_met", "is_loss_met")
        }
    if "channel" in payload:
        result = payload["channel"]
        summary["channel"] = {
            key: result[key]
            for key in ("mac_reduction", "loss_pp", "speedup", "is_loss_met", "is_speedup_met")
        }
    name = "pruning" if args.only is None else f"pruning-{args.only}"
    save_result(name, {"summary": summary, **payload})


if __name__ == "__main__":
    main()
