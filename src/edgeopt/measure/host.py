"""Measure this machine as a target profile: clock, memory, disk and op throughput.

The built-in ``host`` profile (``targets/host.yaml``) is marked ``is_measured``; loading it calls
:func:`measure_host`, which fills the profile with what this machine does: the clock from the
kernel, RAM from ``/proc/meminfo``, free disk space as the "flash", and cycles per MAC and per
element timed on small ONNX Runtime models built here (3x3 convolution, depthwise convolution,
fully connected layer, and an Add/Relu/MaxPool block), float32 and int8 QDQ, on one thread; the
fixed cost per layer comes from chains of tiny 1x1 convolutions.

Each cost is the slope between a chain of one layer and a chain of four, so the per-run overhead of
ONNX Runtime and the layout transposes around int8 kernels cancel out; cycles are seconds times the
clock read here, so ``Target.estimate`` gives back seconds on this machine. The result is cached in
the process and on disk (``~/.cache/edgeopt/host-<hash>.yaml``, keyed on the CPU model and the ONNX
Runtime version), so the next process does not time again. RAM, free disk and the RAPL check are
read fresh in every process because they are cheap and can change.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgeopt.errors import InputError
from edgeopt.graph import GraphEditor

CACHE_FORMAT = 1
THREADS = 1
WARMUP_RUNS = 3
TIMED_RUNS = 15
CHAIN_DEPTHS = (1, 4)
OVERHEAD_DEPTHS = (1, 17)
DEFAULT_CLOCK_HZ = 3.0e9
RAPL_ENERGY = Path("/sys/class/powercap/intel-rapl:0/energy_uj")

# Activations are uint8 and weights int8 (U8S8), a QDQ form ONNX Runtime's CPU provider fuses into
# QLinearConv, QGemm and QLinearAdd (the tests check the session profile). int8 activations fail to
# fuse around Add here. The scales only set the value range of the int8 data.
_ACT_SCALE = 0.05
_ACT_ZERO = 128
_WEIGHT_SCALE = 0.01


def measure_host(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a host profile mapping with this machine's measured values filled in.

    Args:
        raw: the profile as read from ``host.yaml`` (name, power, sources and fallbacks).

    Returns:
        A new mapping for :meth:`edgeopt.target.Target.from_dict` with ``clock_hz``, ``ram_bytes``,
        ``flash_bytes``, ``cycles_per_mac``, ``cycles_per_element``, ``layer_overhead_cycles`` and
        their ``sources`` replaced by measurements.

    Example:
        >>> profile = measure_host({"name": "host", "sources": {}})
        >>> profile["clock_hz"] > 0 and profile["cycles_per_mac"]["conv"]["int8"] > 0
        True
    """
    profile = copy.deepcopy(dict(raw))
    given = profile.get("sources") or {}
    if not isinstance(given, Mapping):
        raise InputError(
            f"target {str(raw.get('name', 'host'))[:40]!r}: sources must be a mapping of field to "
            f"source, not a {type(given).__name__}."
        )
    measured = _measure(str(raw.get("name", "host")))
    sources = {str(k): str(v) for k, v in given.items()}
    power = sources.get("active_power_mw", "assumption (no source given)")
    sources.update(measured["sources"])
    sources["active_power_mw"] = f"{power}; {measured['rapl']}"
    profile.update(copy.deepcopy(measured["fields"]))
    profile["sources"] = sources
    return profile


@functools.cache
def _measure(name: str) -> dict[str, Any]:
    """Measured fields and their sources, timed once per process (``name`` keys the cache)."""
    import onnxruntime

    cpu = _cpu_model()
    version = onnxruntime.__version__
    path = _cache_path(cpu, version)
    timed = _read_cache(path, cpu, version)
    if timed is None:
        timed = _time_host(cpu, version)
        _write_cache(path, timed)
    fields: dict[str, Any] = copy.deepcopy(timed["fields"])
    sources: dict[str, str] = dict(timed["sources"])
    ram_bytes, ram_how = _ram_bytes()
    fields["ram_bytes"] = ram_bytes
    sources["ram_bytes"] = f"measured on this machine by edgeopt.measure.host: {ram_how}"
    disk = Path.cwd()
    fields["flash_bytes"] = max(shutil.disk_usage(disk).free, 1)
    sources["flash_bytes"] = (
        f"measured on this machine by edgeopt.measure.host: free bytes of the disk holding the "
        f"working directory ({disk}) at load time, shutil.disk_usage"
    )
    found = "present (not read yet)" if RAPL_ENERGY.exists() else "absent on this machine"
    rapl = f"Linux RAPL energy counter {RAPL_ENERGY}: {found}"
    return {"fields": fields, "sources": sources, "rapl": rapl, "name": name}


# -- machine facts ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    """The CPU model name, for the cache key and the description."""
    text = _cpuinfo()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    model = _lscpu().get("Model name", "")
    return model or platform.processor() or platform.machine() or "unknown CPU"


def _clock_hz() -> tuple[float, str]:
    """The core clock in Hz and where it was read, best source first."""
    max_khz = _read_text(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")).strip()
    if max_khz.isdigit() and int(max_khz) > 0:
        return int(max_khz) * 1e3, "cpufreq cpuinfo_max_freq of cpu0"
    mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", _cpuinfo(), re.MULTILINE)]
    if mhz and max(mhz) > 0:
        return max(mhz) * 1e6, "/proc/cpuinfo 'cpu MHz' (highest core)"
    lscpu_max = _lscpu().get("CPU max MHz", "")
    if re.fullmatch(r"[\d.]+", lscpu_max) and float(lscpu_max) > 0:
        return float(lscpu_max) * 1e6, "lscpu 'CPU max MHz'"
    return DEFAULT_CLOCK_HZ, f"no clock readable; default {DEFAULT_CLOCK_HZ / 1e9:.1f} GHz"


def _ram_bytes() -> tuple[int, str]:
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read_text(Path("/proc/meminfo")), re.MULTILINE)
    if match:
        return int(match.group(1)) * 1024, "/proc/meminfo MemTotal"
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages), "sysconf SC_PHYS_PAGES x SC_PAGE_SIZE"


def _cpuinfo() -> str:
    return _read_text(Path("/proc/cpuinfo"))


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# -- the disk cache --------------------------------------------------------------------------------
def _cache_path(cpu: str, version: str) -> Path:
    key = hashlib.sha256(f"{cpu}|onnxruntime {version}|format {CACHE_FORMAT}".encode()).hexdigest()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeopt" / f"host-{key[:16]}.yaml"


def _read_cache(path: Path, cpu: str, version: str) -> dict[str, Any] | None:
    """The cached timings, or None when the file is missing, stale or unreadable."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or (data.get("cpu"), data.get("onnxruntime")) != (cpu, version):
        return None
    if data.get("format") != CACHE_FORMAT or not isinstance(data.get("fields"), dict):
        return None
    if not isinstance(data.get("sources"), dict):
        return None
    return data


def _write_cache(path: Path, data: Mapping[str, Any]) -> None:
    """Write the timings atomically (temp file + rename); a read-only home only skips the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(handle, "w") as stream:
            yaml.safe_dump(dict(data), stream, sort_keys=False)
        os.replace(temp, path)
    except OSError:
        Path(temp).unlink(missing_ok=True)


# -- timing ----------------------------------------------------------------------------------------
def _time_host(cpu: str, version: str) -> dict[str, Any]:
    """Time every workload and turn seconds into cycles at this machine's clock."""
    clock_hz, clock_how = _clock_hz()
    where = f"measured on this machine by edgeopt.measure.host (ONNX Runtime {version}, 1 thread)"
    cycles_per_mac: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    for kind, (build, units, what) in _MAC_WORKLOADS.items():
        row = cycles_per_mac.setdefault(kind, {})
        for dtype in ("int8", "float32"):
            seconds = _slope(build, dtype == "int8")
            row[dtype] = _round(seconds * clock_hz / units)
            sources[f"cycles_per_mac.{kind}.{dtype}"] = f"{where}: {what}, {dtype}{_METHOD}"
    cycles_per_element: dict[str, float] = {}
    build, units, what = _ELEMENT_WORKLOAD
    for dtype in ("int8", "float32"):
        seconds = _slope(build, dtype == "int8")
        cycles_per_element[dtype] = _round(seconds * clock_hz / units)
        sources[f"cycles_per_element.{dtype}"] = f"{where}: {what}, {dtype}{_METHOD}"
    overhead = statistics.mean(
        _slope(_tiny_conv_chain, is_int8, depths=OVERHEAD_DEPTHS) for is_int8 in (False, True)
    )
    sources["layer_overhead_cycles"] = (
        f"{where}: fixed cost per layer, from chains of 1x1 Conv 4->4 on 2x2 (float32 and int8, "
        f"mean), slope between {OVERHEAD_DEPTHS[0]} and {OVERHEAD_DEPTHS[1]} layers, median of "
        f"{TIMED_RUNS} runs"
    )
    sources["clock_hz"] = f"measured on this machine by edgeopt.measure.host: {clock_how}"
    fields = {
        "description": f"this machine ({cpu}), measured with ONNX Runtime {version} on 1 thread",
        "clock_hz": clock_hz,
        "cycles_per_mac": cycles_per_mac,
        "cycles_per_element": cycles_per_element,
        "layer_overhead_cycles": _round(max(overhead, 0.0) * clock_hz),
        "runtime": f"ONNX Runtime {version} CPUExecutionProvider, 1 intra-op thread, int8 as QDQ",
    }
    return {
        "format": CACHE_FORMAT,
        "cpu": cpu,
        "onnxruntime": version,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fields": fields,
        "sources": sources,
    }


_METHOD = (
    f"; slope between chains of {CHAIN_DEPTHS[0]} and {CHAIN_DEPTHS[1]} layers, median of "
    f"{TIMED_RUNS} runs after {WARMUP_RUNS} warm-up runs; cycles = seconds x clock_hz"
)


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _slope(
    build: Callable[[int, bool], tuple[Any, list[int]]],
    is_int8: bool,
    *,
    depths: tuple[int, int] = CHAIN_DEPTHS,
) -> float:
    """Seconds one more layer costs: (t(deep) - t(shallow)) / (deep - shallow)."""
    shallow, deep = (_median_run(*build(depth, is_int8)) for depth in depths)
    slope = (deep - shallow) / (depths[1] - depths[0])
    # Timer noise can swamp a tiny difference; fall back to the deep chain's average per layer.
    return slope if slope > 0 else deep / depths[1]


def _median_run(model: Any, shape: list[int]) -> float:
    """Median wall time of one run of ``model`` on one thread, after warm-up."""
    from edgeopt.measure._session import make_session

    session = make_session(model.SerializeToString(), threads=THREADS)
    feed = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(WARMUP_RUNS):
        session.run(None, feed)
    times = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- the timing models -----------------------------------------------------------------------------
class _Graph(GraphEditor):
    """A tiny ONNX graph builder for the timing models: float input ``x``, float output ``y``."""

    def __init__(self) -> None:
        super().__init__()
        self.names |= {"x", "y"}
        self.rng = np.random.default_rng(0)

    def qdq(self, x: str, zero: int = _ACT_ZERO) -> str:
        """Quantize then dequantize an activation (uint8), the QDQ pair ONNX Runtime fuses."""
        scale = self.constant(np.array(_ACT_SCALE, np.float32))
        point = self.constant(np.array(zero, np.uint8))
        return self.node(
            "DequantizeLinear", [self.node("QuantizeLinear", [x, scale, point]), scale, point]
        )

    def weight(self, shape: tuple[int, ...], is_int8: bool) -> str:
        value = (self.rng.standard_normal(shape) * 0.1).astype(np.float32)
        if not is_int8:
            return self.constant(value)
        quantized = np.clip(np.round(value / _WEIGHT_SCALE), -127, 127).astype(np.int8)
        scale = self.constant(np.array(_WEIGHT_SCALE, np.float32))
        return self.node(
            "DequantizeLinear",
            [self.constant(quantized), scale, self.constant(np.array(0, np.int8))],
        )

    def bias(self, size: int, is_int8: bool) -> str:
        if not is_int8:
            return self.constant(np.zeros(size, np.float32))
        scale = self.constant(np.array(_ACT_SCALE * _WEIGHT_SCALE, np.float32))
        zeros = self.constant(np.zeros(size, np.int32))
        return self.node("DequantizeLinear", [zeros, scale, self.constant(np.array(0, np.int32))])

    def model(self, shape: list[int], y: str) -> Any:
        from onnx import TensorProto
        from onnx import helper

        self.nodes.append(helper.make_node("Identity", [y], ["y"]))
        graph = helper.make_graph(
            self.nodes,
            "edgeopt-host",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def _conv_chain(depth: int, is_int8: bool, *, channels: int, groups: int) -> tuple[Any, list[int]]:
    graph, side = _Graph(), 28
    x = graph.qdq("x") if is_int8 else "x"
    for _ in range(depth):
        w = graph.weight((channels, channels // groups, 3, 3), is_int8)
        b = graph.bias(channels, is_int8)
        x = graph.node("Conv", [x, w, b], pads=[1, 1, 1, 1], group=groups)
        x = graph.qdq(x) if is_int8 else x
    shape = [1, channels, side, side]
    return graph.model(shape, x), shape


def _fc_chain(depth: int, is_int8: bool, *, width: int = 512) -> tuple[Any, list[int]]:
    graph = _Graph()
    x = graph.qdq("x") if is_int8 else "x"
    for _ in range(depth):
        w, b = graph.weight((width, width), is_int8), graph.bias(width, is_int8)
        x = graph.node("Gemm", [x, w, b], transB=1)
        x = graph.qdq(x) if is_int8 else x
    return graph.model([1, width], x), [1, width]


def _element_chain(depth: int, is_int8: bool) -> tuple[Any, list[int]]:
    """Add(x, x) -> Relu -> MaxPool 3x3; int8 outputs share one scale with zero point 0 (post-Relu),
    so ONNX Runtime runs QLinearAdd, drops the Relu into the quantization and pools uint8."""
    graph, shape = _Graph(), [1, 32, 28, 28]
    x = graph.qdq("x") if is_int8 else "x"
    for _ in range(depth):
        x = graph.node("Add", [x, x])
        x = graph.qdq(x, zero=0) if is_int8 else x
        x = graph.node("Relu", [x])
        x = graph.qdq(x, zero=0) if is_int8 else x
        x = graph.node("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        x = graph.qdq(x, zero=0) if is_int8 else x
    return graph.model(shape, x), shape


def _tiny_conv_chain(depth: int, is_int8: bool) -> tuple[Any, list[int]]:
    """1x1 Conv 4->4 on 2x2: almost no arithmetic, so a layer costs its fixed set-up only."""
    graph, shape = _Graph(), [1, 4, 2, 2]
    x = graph.qdq("x") if is_int8 else "x"
    for _ in range(depth):
        x = graph.node("Conv", [x, graph.weight((4, 4, 1, 1), is_int8), graph.bias(4, is_int8)])
        x = graph.qdq(x) if is_int8 else x
    return graph.model(shape, x), shape


_MAC_WORKLOADS: dict[str, tuple[Callable[[int, bool], tuple[Any, list[int]]], int, str]] = {
    "conv": (
        functools.partial(_conv_chain, channels=64, groups=1),
        28 * 28 * 64 * 64 * 9,
        "3x3 Conv 64->64 channels on 28x28, pad 1",
    ),
    "depthwise": (
        functools.partial(_conv_chain, channels=128, groups=128),
        28 * 28 * 128 * 9,
        "3x3 depthwise Conv, 128 channels on 28x28, pad 1",
    ),
    "fc": (_fc_chain, 512 * 512, "Gemm 512->512, batch 1"),
}
_ELEMENT_WORKLOAD: tuple[Callable[[int, bool], tuple[Any, list[int]]], int, str] = (
    _element_chain,
    3 * 32 * 28 * 28,
    "Add -> Relu -> MaxPool 3x3 on 32x28x28, per output element of the three ops",
)
