"""Measure an exported artifact: counts, memory, latency, accuracy, and the target's estimate."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.graph import analyse
from edgeopt.graph import with_live_bytes
from edgeopt.measure.int8 import int8_arithmetic
from edgeopt.measure.int8 import make_exact_session
from edgeopt.measure.memory import plan_memory
from edgeopt.measure.runtime import make_session
from edgeopt.measure.runtime import measure_latency
from edgeopt.measure.runtime import predict
from edgeopt.measure.runtime import top1
from edgeopt.measure.size import artifact_size
from edgeopt.metrics import Metrics
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.models import read_onnx

if TYPE_CHECKING:
    from edgeopt.data import Dataset
    from edgeopt.target import Target

__all__ = ["profile", "profile_onnx"]


#: ONNX element types of a graph input that takes raw samples (``edgeopt export --raw-input``).
_RAW_INPUT_TYPES = {2: np.uint8, 3: np.int8, 5: np.int16}


def _raw_dtype(proto: Any) -> Any:
    """The numpy dtype of a raw-input (folded) model's graph input, or None for float input."""
    elem_type = proto.graph.input[0].type.tensor_type.elem_type if proto.graph.input else 0
    return _RAW_INPUT_TYPES.get(elem_type)


def _check_input(path: Path, model_shape: tuple[int, ...] | None, data: Dataset) -> None:
    if model_shape is not None and tuple(model_shape) != tuple(data.input_shape):
        want = "x".join(str(d) for d in model_shape)
        got = "x".join(str(d) for d in data.input_shape)
        raise InputError(f"{path}: the model takes input {want} but {data.spec} gives {got}.")


def _test_split(path: Path, proto: Any, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The test split as the model takes it, and its labels: normalized floats, or the raw
    samples of a model whose normalization (and audio front end) is folded in: uint8 pixels,
    int16 PCM clips."""
    from edgeopt.models import onnx_input_shape

    dtype = _raw_dtype(proto)
    model_shape = onnx_input_shape(proto)
    if dtype is None:
        _check_input(path, model_shape, data)
        return data.arrays("test")
    if data.test_signals is not None and model_shape is not None and len(model_shape) == 1:
        raw = data.test_signals  # the audio front end is in the graph: it takes PCM
    else:
        _check_input(path, model_shape, data)
        raw = data.raw["test"]
    if model_shape is not None and tuple(raw.shape[1:]) != tuple(model_shape):
        want = "x".join(str(d) for d in model_shape)
        got = "x".join(str(d) for d in raw.shape[1:])
        raise InputError(f"{path}: the model takes raw input {want} but {data.spec} gives {got}.")
    return raw.astype(dtype), data.labels["test"]


def _counted_shape(path: Path, proto: Any, x_test: np.ndarray | None) -> tuple[int, ...] | None:
    """The sample shape MACs and memory are counted at: the file's own, or, where its input
    has symbolic dimensions (``N x 1 x H x W``), the data's; without data, refused (counting
    them as 1 gave a convolution 152 MACs instead of 4,688)."""
    from edgeopt.models import onnx_input_shape

    if onnx_input_shape(proto) is not None:
        return None
    if x_test is not None:
        return tuple(int(d) for d in x_test.shape[1:])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    shown = "x".join(d.dim_param or str(d.dim_value or "?") for d in dims)
    raise InputError(
        f"{path}: the model's input {shown} has symbolic dimensions; give --data so that MACs "
        "and memory are counted at the data's shape."
    )


def estimate_on_target(target: Target, layers: list[Any], data: Dataset | None) -> tuple[Any, str]:
    """The target's estimate of one inference (latency, energy) and how it was made: the one
    place it is computed, for ``profile``, the search and ``bench``.

    An audio model's input is made on the device by a front end: it is priced too where the
    profile can (and reported apart), and the sentence says so either way.
    """
    frontend = data.frontend if data is not None else {}
    ops = frontend.get("frontend_ops")
    priced_ops = ops if isinstance(ops, dict) and target.frontend else None
    estimate = target.estimate(layers, frontend_ops=priced_ops)
    how = f"estimated from the {target.name} profile (cycles model)"
    if priced_ops is not None:
        how += (
            f"; includes the {frontend.get('features', 'audio')} front end (framing, "
            "window, FFT, power, mel, log, DCT) priced by the profile's frontend costs, "
            "also reported apart"
        )
    elif ops is not None:
        how += f"; the model only: the {target.name} profile prices no audio front end"
    if estimate.uncounted_ops:  # operators of unknown cost priced at their outputs only
        how += f"; a lower bound: unknown cost of {', '.join(estimate.uncounted_ops)}"
    return estimate, how


def profile_onnx(
    path: Path,
    *,
    data: Dataset | None = None,
    target: Target | None = None,
    threads: int = 1,
    is_latency_measured: bool = True,
) -> Metrics:
    """Measure one ONNX file: see :func:`profile`."""
    import onnxruntime

    proto = read_onnx(path)
    x_test, y_test = _test_split(path, proto, data) if data is not None else (None, None)
    graph, layers = analyse(proto, _counted_shape(path, proto, x_test))
    plan = plan_memory(graph)
    layers = with_live_bytes(layers, dict(zip(plan.step_names, plan.step_bytes, strict=True)))
    size_bytes = artifact_size(path)
    provenance = {
        "params": "counted on the ONNX file (stored weight elements)",
        "macs": "counted on the ONNX file (Conv/Gemm/MatMul, batch 1)",
        "size_bytes": "measured: bytes on disk, external data included",
        "peak_ram_bytes": "counted: peak of live activation tensors over the graph's node order",
    }
    latency = accuracy = int8 = None
    if is_latency_measured:
        session = make_session(path, threads=threads)  # the file as shipped is what is timed
        if x_test is not None:
            sample = x_test[:1]
        else:
            arg = session.get_inputs()[0]
            shape = [1] + [d if isinstance(d, int) else 1 for d in arg.shape[1:]]
            rng = np.random.default_rng(0)
            dtype = _raw_dtype(proto)
            if dtype is None:
                sample = rng.standard_normal(shape).astype(np.float32)
            else:
                info = np.iinfo(dtype)
                sample = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
        latency = measure_latency(session, sample, threads=threads)
        provenance["latency_ms"] = (
            f"measured: ONNX Runtime {onnxruntime.__version__} {latency.provider}, "
            f"{threads} thread(s), batch 1, {latency.runs} runs after warm-up, on "
            f"{platform.machine()} {platform.processor() or platform.system()}"
        )
    if data is not None and x_test is not None and y_test is not None:
        exact = make_exact_session(path, threads=os.cpu_count() or 1)
        accuracy = top1(predict(exact, x_test), y_test)
        provenance["accuracy"] = f"measured: top-1 on the test split of {data.spec} ({len(y_test)})"
        int8 = exact.arithmetic
    elif is_latency_measured:
        _, int8 = int8_arithmetic(proto)  # the file was only timed: say how this host runs it
    if int8 is not None:
        provenance["int8"] = int8.describe()
    estimate = fits = None
    if target is not None:
        estimate, provenance["estimate"] = estimate_on_target(target, layers, data)
        fits = {
            "flash": size_bytes <= target.flash_bytes,
            "ram": plan.peak_bytes <= target.ram_bytes,
        }
        provenance["fits"] = "size_bytes vs flash_bytes, peak_ram_bytes vs ram_bytes of the target"
    return Metrics(
        model=str(path),
        params=sum(layer.params for layer in layers),
        macs=sum(layer.macs for layer in layers),
        size_bytes=size_bytes,
        peak_ram_bytes=plan.peak_bytes,
        layers=tuple(layers),
        latency_ms=latency,
        accuracy=accuracy,
        estimate=estimate,
        target=target.name if target else None,
        fits=fits,
        memory_schedule=tuple(int(b) for b in plan.step_bytes),
        memory_steps=tuple(plan.step_names),
        provenance=provenance,
        int8=int8,
    )


def profile(
    model: str | ModelHandle,
    *,
    data: str | Dataset | None = None,
    target: str | Target | None = None,
    threads: int = 1,
    weights: str | Path | None = None,
    is_latency_measured: bool = True,
) -> Metrics:
    """Measure a model on its exported ONNX artifact.

    A PyTorch model is exported to ONNX first (into a temporary folder); an ONNX model is measured
    as it is. Nothing is taken from the PyTorch side.

    Args:
        model: a model spec (see :func:`edgeopt.load_model`) or a handle.
        data: when given, accuracy on its test split is measured and latency uses a real sample.
        target: a profile name, YAML path or :class:`Target`; adds the estimate and the fits.
        threads: ONNX Runtime intra-op threads for the latency measurement.
        weights: state dict for a zoo or factory spec.
        is_latency_measured: time the file with ONNX Runtime (off for quick counts only).

    Returns:
        The :class:`Metrics` record.

    Raises:
        InputError: bad model or data spec, an input shape the data does not match, an unknown
            target.

    Example:
        >>> m = profile("zoo:lenet5", target="cortex-m4", is_latency_measured=False)
        >>> m.params, m.macs
        (61706, 416520)
    """
    from edgeopt.data import load_data
    from edgeopt.target import Target

    if not 1 <= threads <= (os.cpu_count() or 1):
        raise InputError(
            f"threads must be at least 1 and at most this machine's {os.cpu_count() or 1} "
            f"cores, got {threads}."
        )
    dataset = load_data(data) if data is not None else None
    resolved = Target.from_name(target) if isinstance(target, str) else target
    handle = load_model(model, weights=weights, data=dataset)
    kwargs = {
        "data": dataset,
        "target": resolved,
        "threads": threads,
        "is_latency_measured": is_latency_measured,
    }
    if handle.onnx_path is not None:
        return profile_onnx(handle.onnx_path, **kwargs)  # type: ignore[arg-type]
    from edgeopt.export.onnx import export_onnx

    if dataset is not None:
        _check_input(Path(handle.spec), handle.input_shape, dataset)
    with tempfile.TemporaryDirectory(prefix="edgeopt-profile-") as scratch:
        path = export_onnx(handle, Path(scratch) / f"{handle.name}.onnx")
        metrics = profile_onnx(path, **kwargs)  # type: ignore[arg-type]
    return metrics
