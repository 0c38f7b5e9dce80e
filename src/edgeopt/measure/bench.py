"""Latency and throughput of an ONNX file per execution provider, batch size and thread count.

Each (provider, batch, threads) cell gets its own ONNX Runtime session, warm-up runs, then a timed
loop of at least ``min_runs`` runs and ``min_seconds``. Energy is read from a hardware counter
around that loop where the platform has one (RAPL on the CPU provider, NVML on CUDA/TensorRT, see
:mod:`edgeopt.measure.energy`) and labelled measured; otherwise it is the target's estimate,
labelled estimated, or left out when no target is given.

Execution providers (https://onnxruntime.ai/docs/execution-providers/): a provider that this
onnxruntime build does not have (``onnxruntime.get_available_providers()``) is reported as
unavailable. A provider that is built in but cannot start (no GPU, missing CUDA libraries) makes
ONNX Runtime fall back to the CPU silently; the session's ``get_providers()`` shows it, and the
cell is reported unavailable rather than timed on the wrong device.
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import numpy as np

from edgeopt.config import Config
from edgeopt.errors import InputError
from edgeopt.measure.energy import POWERCAP_ROOT
from edgeopt.measure.energy import EnergyMeter
from edgeopt.measure.energy import nvml_meter
from edgeopt.measure.energy import rapl_meter

if TYPE_CHECKING:
    from edgeopt.data import Dataset
    from edgeopt.measure.int8 import Int8Arithmetic
    from edgeopt.models import ModelHandle

__all__ = ["PROVIDERS", "BenchConfig", "BenchReport", "BenchRow", "bench"]

#: Short provider names and ONNX Runtime's names for them.
PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "qnn": "QNNExecutionProvider",
}
_GPU_PROVIDERS = frozenset({"cuda", "tensorrt"})
_INPUT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def provider_name(name: str) -> str:
    """The short name (``cpu``) of a short or ONNX Runtime provider name, case-insensitive.

    Raises:
        InputError: the name is none of :data:`PROVIDERS`, listing the known names.

    Example:
        >>> provider_name("CUDAExecutionProvider"), provider_name("OpenVINO")
        ('cuda', 'openvino')
    """
    key = name.strip().lower()
    for short, full in PROVIDERS.items():
        if key in (short, full.lower()):
            return short
    known = ", ".join(PROVIDERS)
    raise InputError(f"unknown execution provider {name!r}; known providers: {known}.")


def _whole_numbers(values: Any, what: str, *, most: int | None = None) -> tuple[int, ...]:
    items = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if not items:
        raise InputError(f"bench: give at least one {what}.")
    for value in items:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"bench: {what} {value!r} is not a whole number.")
        if value < 1:
            raise InputError(f"bench: {what} must be at least 1, got {value}.")
        if most is not None and value > most:
            raise InputError(f"bench: {what} {value} is more than this machine's {most} cores.")
    return tuple(dict.fromkeys(items))


#: A batch may take at most this fraction of the machine's memory (inputs plus activations).
MEMORY_FRACTION = 0.25


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def _check_batch_memory(path: Path, batches: tuple[int, ...], sample_bytes: int) -> None:
    """Refuse a batch whose inputs and activations would take more than ``MEMORY_FRACTION`` of
    the machine's memory, before anything is allocated."""
    from edgeopt.graph import read_graph
    from edgeopt.measure.memory import plan_memory
    from edgeopt.models import read_onnx

    memory = _physical_memory()
    if memory is None:
        return
    per_sample = sample_bytes + plan_memory(read_graph(read_onnx(path))).peak_bytes
    batch = max(batches)
    need = batch * per_sample
    if need > MEMORY_FRACTION * memory:
        raise InputError(
            f"bench: batch {batch} of {path} would take about {need / 2**30:,.1f} GiB (inputs "
            f"and activations), more than a quarter of this machine's {memory / 2**30:,.1f} "
            "GiB; give a smaller --batch."
        )


@dataclass(frozen=True)
class BenchConfig(Config):
    """What to bench: batch sizes, thread counts and providers, and how long to time each cell.

    ``threads`` is ONNX Runtime's intra-op thread count (one inter-op thread, sequential
    execution, all graph optimizations: the settings of every edgeopt latency). ``target`` (a
    profile name or YAML file) gives the energy estimate where no counter can be read.
    """

    kind: ClassVar[str] = "bench"
    batches: tuple[int, ...] = (1, 8, 32)
    threads: tuple[int, ...] = (1,)
    providers: tuple[str, ...] = ("cpu",)
    warmup_runs: int = 10
    min_runs: int = 50
    min_seconds: float = 0.5
    max_seconds: float = 5.0
    target: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize lists from YAML/JSON into tuples
        set_(self, "batches", _whole_numbers(self.batches, "batch size"))
        set_(self, "threads", _whole_numbers(self.threads, "thread count", most=os.cpu_count()))
        providers = self.providers if isinstance(self.providers, (list, tuple)) else ()
        if not providers:
            raise InputError("bench: give at least one execution provider.")
        set_(self, "providers", tuple(dict.fromkeys(provider_name(p) for p in providers)))
        if self.warmup_runs < 0 or self.min_runs < 1:
            raise InputError("bench: warmup_runs must be 0 or more and min_runs at least 1.")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise InputError("bench: need 0 <= min_seconds <= max_seconds.")


@dataclass(frozen=True)
class BenchRow:
    """One (provider, batch, threads) cell; ``batch``/``threads`` are None for a provider that
    could not run at all. Latencies are of one run of the whole batch (ms); throughput is samples
    per second over the timed loop; energy is per sample (uJ)."""

    provider: str
    batch: int | None
    threads: int | None
    status: str  # "ok" | "unavailable: <why>" | "skipped: <why>"
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    runs: int = 0
    throughput_per_s: float | None = None
    energy_uj: float | None = None
    energy_method: str | None = None
    energy_note: str | None = None

    @property
    def is_ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "ort_provider": PROVIDERS[self.provider],
            "batch": self.batch,
            "threads": self.threads,
            "status": self.status,
            "latency_ms": None
            if self.p50_ms is None
            else {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms, "runs": self.runs},
            "throughput_per_s": self.throughput_per_s,
            "energy_uj_per_sample": self.energy_uj,
            "energy_method": self.energy_method,
            "energy_note": self.energy_note,
        }


@dataclass(frozen=True)
class BenchReport:
    """Every cell of a bench run, the input it was fed and the environment it ran in."""

    model: str
    config: BenchConfig
    rows: tuple[BenchRow, ...]
    input: str
    environment: dict[str, Any] = field(default_factory=dict)
    #: How this host's ONNX Runtime computes the file as shipped (the file that is timed):
    #: ``is_exact`` False means its int8 outputs here differ from a device's. None: float.
    int8: Int8Arithmetic | None = None

    def row(self, provider: str, batch: int, threads: int) -> BenchRow:
        """The cell of one provider, batch size and thread count."""
        for row in self.rows:
            if (row.provider, row.batch, row.threads) == (provider, batch, threads):
                return row
        raise KeyError((provider, batch, threads))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config.to_dict(),
            "input": self.input,
            "environment": dict(self.environment),
            "rows": [row.to_dict() for row in self.rows],
            "int8": self.int8.to_dict() if self.int8 is not None else None,
        }


def _samples(session: Any, data: Dataset | None, count: int, path: Path) -> tuple[np.ndarray, str]:
    """``count`` inputs for the session: the test split of ``data`` (raw values when the model
    takes integers, i.e. its normalization is folded in), or seeded random values."""
    arg = session.get_inputs()[0]
    dtype = _INPUT_DTYPES.get(arg.type)
    if dtype is None:
        raise InputError(f"{path}: bench cannot feed an input of type {arg.type}.")
    shape = list(arg.shape[1:])
    if data is not None:
        is_raw = np.issubdtype(dtype, np.integer)
        x = data.raw["test"] if is_raw else data.arrays("test")[0]
        fixed = [d if isinstance(d, int) else None for d in shape]
        if len(fixed) != x.ndim - 1 or any(
            d is not None and d != s for d, s in zip(fixed, x.shape[1:], strict=False)
        ):
            want = "x".join(str(d) for d in shape)
            got = "x".join(str(d) for d in x.shape[1:])
            raise InputError(f"{path}: the model takes input {want} but {data.spec} gives {got}.")
        x = np.resize(x, (count, *x.shape[1:])).astype(dtype)  # repeats a small split
        what = "raw" if is_raw else "normalized"
        return x, f"{what} test split of {data.spec} ({len(data.labels['test'])} samples, cycled)"
    rng = np.random.default_rng(0)
    dims = [count] + [d if isinstance(d, int) else 1 for d in shape]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = rng.integers(info.min, int(info.max) + 1, size=dims).astype(dtype)
        return x, f"random {np.dtype(dtype).name} over its full range (seed 0)"
    return rng.standard_normal(dims).astype(dtype), "random standard normal float (seed 0)"


def _meter(provider: str, powercap_root: Path) -> tuple[EnergyMeter | None, str]:
    if provider == "cpu":
        return rapl_meter(powercap_root)
    if provider in _GPU_PROVIDERS:
        return nvml_meter()
    return None, f"no energy counter is read for the {provider} provider"


def _time_cell(
    session: Any, feed: dict[str, np.ndarray], config: BenchConfig, meter: EnergyMeter | None
) -> tuple[np.ndarray, float | None]:
    """Run times (s) of the timed loop and the energy the meter saw over it (uJ)."""
    from edgeopt.measure.runtime import time_runs

    for _ in range(config.warmup_runs):
        session.run(None, feed)
    before = meter.read() if meter is not None else ()
    times = time_runs(
        session,
        feed,
        min_runs=config.min_runs,
        min_seconds=config.min_seconds,
        max_runs=1 << 62,  # bench bounds the loop by time alone
        max_seconds=config.max_seconds,
    )
    energy = meter.energy_uj(before, meter.read()) if meter is not None else None
    return times, energy


def _estimate_uj(
    path: Path, target: str | None, data: Dataset | None
) -> tuple[float | None, str | None]:
    """The target's energy estimate per inference, as ``profile`` computes it (the audio front
    end included where the profile prices it)."""
    if target is None:
        return None, None
    from edgeopt.graph import analyse
    from edgeopt.measure import estimate_on_target
    from edgeopt.models import read_onnx
    from edgeopt.target import Target

    resolved = Target.from_name(target)
    _, layers = analyse(read_onnx(path), data.input_shape if data is not None else None)
    estimate, how = estimate_on_target(resolved, layers, data, model=path)
    with_frontend = ", audio front end included" if "includes the" in how else ""
    return estimate.energy_uj, f"estimated ({resolved.name}{with_frontend})"


def bench_onnx(
    path: Path,
    config: BenchConfig,
    *,
    data: Dataset | None = None,
    powercap_root: Path = POWERCAP_ROOT,
) -> BenchReport:
    """Bench one ONNX file: see :func:`bench`."""
    import onnxruntime as ort

    from edgeopt.measure.int8 import int8_arithmetic
    from edgeopt.measure.runtime import make_session
    from edgeopt.models import read_onnx

    probe = make_session(path, threads=1)  # a file ORT cannot load is bad input, not a row
    arg = probe.get_inputs()[0]
    fixed_batch = arg.shape[0] if isinstance(arg.shape[0], int) else None
    dtype = np.dtype(_INPUT_DTYPES.get(arg.type, np.float32))
    sample_bytes = dtype.itemsize * int(
        np.prod([d if isinstance(d, int) else 1 for d in arg.shape[1:]])
    )
    _check_batch_memory(path, config.batches, sample_bytes)
    x, source = _samples(probe, data, max(config.batches), path)
    del probe
    estimate_uj, estimate_method = _estimate_uj(path, config.target, data)
    available = set(ort.get_available_providers())
    rows: list[BenchRow] = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for provider in config.providers:
        ort_name = PROVIDERS[provider]
        if ort_name not in available:
            why = f"{ort_name} is not in this onnxruntime build ({ort.__version__})"
            rows.append(BenchRow(provider, None, None, f"unavailable: {why}"))
            continue
        meter, meter_why = _meter(provider, powercap_root)
        for threads in config.threads:
            try:
                session = make_session(path, threads=threads, provider=ort_name, is_cpu_behind=True)
            except Exception as exc:  # a provider's own start-up failure, not the model's
                why = " ".join(str(exc).split())[:160]
                rows.append(BenchRow(provider, None, threads, f"unavailable: {why}"))
                continue
            if session.get_providers()[0] != ort_name:
                why = f"ONNX Runtime fell back to {session.get_providers()[0]}"
                rows.append(BenchRow(provider, None, threads, f"unavailable: {why}"))
                continue
            for batch in config.batches:
                if fixed_batch is not None and batch != fixed_batch:
                    why = (
                        f"the model's batch dimension is fixed at {fixed_batch}; export it "
                        "with a dynamic batch (edgeopt's ONNX export does) to bench others"
                    )
                    rows.append(BenchRow(provider, batch, threads, f"skipped: {why}"))
                    continue
                feed = {arg.name: np.ascontiguousarray(x[:batch])}
                times, measured = _time_cell(session, feed, config, meter)
                ms = times * 1e3
                p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
                samples = len(times) * batch
                if measured is not None and meter is not None:
                    energy, method, note = measured / samples, meter.method, None
                else:
                    energy, method, note = estimate_uj, estimate_method, meter_why or None
                rows.append(
                    BenchRow(
                        provider,
                        batch,
                        threads,
                        "ok",
                        p50_ms=p50,
                        p90_ms=p90,
                        p99_ms=p99,
                        runs=len(times),
                        throughput_per_s=samples / float(times.sum()),
                        energy_uj=energy,
                        energy_method=method,
                        energy_note=note,
                    )
                )
    environment = {
        "onnxruntime": ort.__version__,
        "available_providers": sorted(available),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "cores": os.cpu_count(),
        "load_average_1m_before": load,
        "load_average_1m_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "timing": (
            f"{config.warmup_runs} warm-up runs, then at least {config.min_runs} runs and "
            f"{config.min_seconds} s (at most {config.max_seconds} s) per cell; latency is one "
            "run of the whole batch, throughput is samples over the loop's total time"
        ),
    }
    _, int8 = int8_arithmetic(read_onnx(path), path="as-shipped")
    return BenchReport(str(path), config, tuple(rows), source, environment, int8)


def bench(
    model: str | Path | ModelHandle,
    config: BenchConfig | None = None,
    *,
    data: str | Dataset | None = None,
    weights: str | Path | None = None,
    powercap_root: Path = POWERCAP_ROOT,
) -> BenchReport:
    """Time a model's ONNX artifact per provider, batch size and thread count.

    A PyTorch model is exported to ONNX first (into a temporary folder, dynamic batch); an ONNX
    file is benched as it is.

    Args:
        model: a model spec (see :func:`edgeopt.load_model`), an ONNX path or a handle.
        config: batches, threads, providers, timing and the target of the energy estimate.
        data: its test split is the input (raw values for a model that takes integers); without
            it, seeded random values of the model's input shape and type.
        weights: state dict for a zoo or factory spec.
        powercap_root: where the RAPL counters are read (a test points it at its own folder).

    Returns:
        The :class:`BenchReport`: one row per (provider, threads, batch), or one row per
        provider that cannot run here.

    Raises:
        InputError: an unknown provider, bad batch or thread lists, a model ONNX Runtime
            cannot load, data whose shape the model does not take, an unknown target.

    Example:
        >>> report = bench("zoo:cnn-s", BenchConfig(batches=(1, 4), min_runs=3, min_seconds=0))
        >>> [(row.batch, row.status) for row in report.rows]
        [(1, 'ok'), (4, 'ok')]
    """
    from edgeopt.data import load_data
    from edgeopt.models import bind_data
    from edgeopt.models import load_model

    config = config or BenchConfig()
    dataset = load_data(data) if data is not None else None
    handle = load_model(model, weights=weights, data=dataset)
    if dataset is not None:
        dataset = bind_data(handle, dataset)
    if handle.onnx_path is not None:
        return bench_onnx(handle.onnx_path, config, data=dataset, powercap_root=powercap_root)
    from edgeopt.export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-") as scratch:
        path = export_onnx(handle, Path(scratch) / f"{handle.name}.onnx")
        return bench_onnx(path, config, data=dataset, powercap_root=powercap_root)
