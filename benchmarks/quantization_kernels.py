"""Where MobileNetV2's int8 time goes: ONNX Runtime's kernels by convolution kind, fp32 vs int8.

    .venv/bin/python -m benchmarks.quantization_kernels

Needs the fp32 MobileNetV2 that ``benchmarks.quantization`` caches. Writes the int8 file (our
default PTQ) and two variants (per-tensor weights; the stem convolution left in float), times
all of them interleaved (``measure_latency``, 1 thread, batch 1), and profiles the fp32 and the
int8 session (ONNX Runtime's per-kernel timings, 1 thread) to sum the convolutions' time by kind:
the stem (1 input channel), depthwise 3x3 and pointwise 1x1. Results:
``benchmarks/results/quantization_kernels.json``.
"""

from __future__ import annotations

import collections
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import require_shared
from benchmarks._common import save_result
from edgeopt.measure.runtime import make_session
from edgeopt.measure.runtime import measure_latency

PROFILE_RUNS = 300
ROUNDS = 5


def _conv_kinds(model: Any) -> dict[str, str]:
    """``{tensor a convolution (with its Clip) writes: kind}``."""
    kinds = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: a for a in node.attribute}
        group = attrs["group"].i if "group" in attrs else 1
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
        kind = "depthwise 3x3" if group > 1 else ("pointwise 1x1" if kernel == [1, 1] else "stem")
        out = node.output[0]
        users = [u for u in model.graph.node if out in u.input]
        if len(users) == 1 and users[0].op_type == "Clip":
            out = users[0].output[0]
        kinds[out] = kind
        kinds[node.name] = kind
    return kinds


def _kernel_times(path: Path, sample: np.ndarray) -> dict[str, float]:
    """Mean microseconds per run of every kernel, from an ONNX Runtime session profile."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as scratch:
        options.profile_file_prefix = str(Path(scratch) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: sample}
        for _ in range(PROFILE_RUNS):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    times: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"].removesuffix("_kernel_time")] += event["dur"] / PROFILE_RUNS
    return dict(times)


def _by_kind(times: dict[str, float], kinds: dict[str, str]) -> dict[str, float]:
    found: dict[str, float] = collections.defaultdict(float)
    for name, us in times.items():
        for key in (name, name.removesuffix("_nchwc"), name.split("_token_")[0]):
            if key in kinds:
                found[kinds[key]] += us
                break
        else:
            found["other"] += us
    return dict(found)


def main() -> None:
    import onnx

    fp32_path = CACHE / "mobilenet-v2-cifar-fashion.onnx"
    if not fp32_path.exists():
        raise SystemExit("run benchmarks.quantization first: it trains the fp32 MobileNetV2.")
    data = edgeopt.load_data(f"idx:{require_shared('fashion-mnist')}")
    fp32 = onnx.load(str(fp32_path))
    kinds = _conv_kinds(fp32)
    stem = next(node.name for node in fp32.graph.node if node.op_type == "Conv")
    sample = data.arrays("test")[0][:1]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        configs = {
            "int8 (default PTQ)": edgeopt.PTQConfig(),
            "int8, per-tensor weights": edgeopt.PTQConfig(is_per_channel=False),
            "int8, stem conv in float": edgeopt.PTQConfig(exclude=(stem,)),
        }
        paths = {"fp32": fp32_path}
        accuracy = {}
        for name, config in configs.items():
            out = folder / f"{len(paths)}.onnx"
            edgeopt.quantize(str(fp32_path), config, data=data, output=out)
            paths[name] = out
        for name, path in paths.items():
            metrics = edgeopt.profile(str(path), data=data, is_latency_measured=False)
            accuracy[name] = metrics.accuracy
        sessions = {name: make_session(path, threads=1) for name, path in paths.items()}
        p50s: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(ROUNDS):
            for name, session in sessions.items():
                p50s[name].append(measure_latency(session, sample, threads=1).p50)
        latency = {name: statistics.median(values) for name, values in p50s.items()}
        kernels = {
            name: _by_kind(_kernel_times(paths[name], sample), kinds)
            for name in ("fp32", "int8 (default PTQ)")
        }
    summary = {
        "latency_ms_p50": latency,
        "speedup": {name: latency["fp32"] / value for name, value in latency.items()},
        "accuracy": accuracy,
        "kernel_us_by_kind": kernels,
        "kernel_speedup_by_kind": {
            kind: kernels["fp32"].get(kind, 0.0) / us
            for kind, us in kernels["int8 (default PTQ)"].items()
            if us > 0
        },
    }
    save_result("quantization_kernels", {"summary": summary})


if __name__ == "__main__":
    main()
