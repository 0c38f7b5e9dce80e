"""Measure an exported artifact: counts, memory, latency, accuracy, and the target's estimate."""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.feed import InputBinding
from edgeopt.feed import bind_inputs
from edgeopt.feed import generated_feeds
from edgeopt.graph import analyse
from edgeopt.graph import with_live_bytes
from edgeopt.measure._session import runtime_detail
from edgeopt.measure.int8 import int8_arithmetic
from edgeopt.measure.int8 import make_exact_session
from edgeopt.measure.memory import plan_memory
from edgeopt.measure.runtime import Latency
from edgeopt.measure.runtime import make_session
from edgeopt.measure.runtime import measure_feed_latency
from edgeopt.measure.runtime import predict
from edgeopt.measure.runtime import top1
from edgeopt.measure.size import artifact_size
from edgeopt.metrics import Metrics
from edgeopt.models import ModelHandle
from edgeopt.models import bind_data
from edgeopt.models import load_model
from edgeopt.models import read_onnx

if TYPE_CHECKING:
    from edgeopt.data import Dataset
    from edgeopt.target import Target

__all__ = ["profile", "profile_onnx"]


#: ONNX element types of a graph input that takes raw samples (``edgeopt export --raw-input``).
_RAW_INPUT_TYPES = {2: np.uint8, 3: np.int8, 5: np.int16}


def _first_input(proto: Any) -> Any:
    """The first graph input that is not an initializer (IR < 4 files list weights as inputs)."""
    initializers = {init.name for init in proto.graph.initializer}
    return next((i for i in proto.graph.input if i.name not in initializers), None)


def _raw_dtype(proto: Any) -> Any:
    """The numpy dtype of a raw-input (folded) model's graph input, or None for float input."""
    first = _first_input(proto)
    return _RAW_INPUT_TYPES.get(first.type.tensor_type.elem_type) if first is not None else None


def _check_input(path: Path, model_shape: tuple[int, ...] | None, data: Dataset) -> None:
    if model_shape is not None and tuple(model_shape) != tuple(data.input_shape):
        want = "x".join(str(d) for d in model_shape)
        got = "x".join(str(d) for d in data.input_shape)
        raise InputError(f"{path}: the model takes input {want} but {data.spec} gives {got}.")


def _test_split(path: Path, proto: Any, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The test split as the model takes it, and its labels: normalized floats, or the raw
    samples of a model whose normalization (and audio front end) is folded in: uint8 pixels,
    int16 PCM clips."""
    import onnx

    from edgeopt.models import onnx_input_shape

    dtype = _raw_dtype(proto)
    model_shape = onnx_input_shape(proto)
    if dtype is None:
        first = _first_input(proto)
        elem_type = first.type.tensor_type.elem_type
        if elem_type != onnx.TensorProto.FLOAT:
            name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in range(27) else "?"
            raise InputError(
                f"{path}: input {first.name[:80]!r} takes {name} tensors, not the float "
                f"samples of {data.spec}; profile it without --data (edgeopt then makes inputs "
                "of its type)."
            )
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


def _is_runtime_error(exc: BaseException) -> bool:
    """An ONNX Runtime failure (its exceptions share no base class but their module)."""
    return type(exc).__module__.startswith("onnxruntime")


def _time_file(
    path: Path,
    source: Path | bytes,
    binding: InputBinding,
    x_test: np.ndarray | None,
    *,
    threads: int,
    upgrade_note: str | None,
) -> tuple[Latency, str | None]:
    """Latency of one run at the bound batch, and a note where the inputs were generated.

    With data, its first ``batch`` test samples (repeated where the split has fewer); without,
    :func:`edgeopt.feed.generated_feeds`. A failure of ONNX Runtime on those inputs is the
    file's (a Split whose sizes do not sum to the bound dimension, ...): one sentence.
    """
    session = make_session(source, threads=threads, source=str(path))
    note = None
    if x_test is not None:
        first = binding.inputs[0]
        sample = np.resize(x_test, (binding.batch, *x_test.shape[1:])).reshape(first.shape)
        feed = {first.name: np.ascontiguousarray(sample.astype(first.dtype))}
    else:
        feed = generated_feeds(binding.inputs)
        if binding.inputs:
            shown = ", ".join(item.describe() for item in binding.inputs[:4])
            more = f" and {len(binding.inputs) - 4} more" if len(binding.inputs) > 4 else ""
            note = (
                f"no data: timed on generated inputs ({shown}{more}; floats standard normal, "
                "8/16-bit integers uniform, wider integers ones, booleans false)"
            )
    try:
        latency = measure_feed_latency(session, feed, threads=threads, batch=binding.batch)
    except Exception as exc:
        if not _is_runtime_error(exc):
            raise
        detail = runtime_detail(exc)
        given = "the data's samples" if x_test is not None else "generated inputs"
        if x_test is None and binding.inputs:
            given += " (" + ", ".join(item.describe() for item in binding.inputs[:4]) + ")"
        upgraded = ""
        if upgrade_note is not None:  # the converter's output, not the file, is what failed
            versions = upgrade_note.split(" with ")[0].removeprefix("upgraded in memory ")
            upgraded = (
                f"; onnx.version_converter had upgraded it in memory {versions}: re-export "
                "it at a current opset"
            )
        raise InputError(
            f"{path}: ONNX Runtime cannot run the model on {given} ({detail}){upgraded}."
        ) from None
    return latency, note


def estimate_on_target(
    target: Target, layers: list[Any], data: Dataset | None, *, model: Path | None = None
) -> tuple[Any, str]:
    """The target's estimate of one inference (latency, energy) and how it was made: the one
    place it is computed, for ``profile``, the search and ``bench``.

    An audio model's input is made on the device by a front end: it is priced too where the
    profile can (and reported apart), and the sentence says so either way. An Ethos-U profile
    has Vela compile ``model`` (a ``.tflite``, or an int8 ONNX file written as one) instead of
    pricing ``layers``: :func:`edgeopt.measure.vela.estimate_npu`.
    """
    if target.npu is not None:
        estimate, how = _estimate_on_npu(target, layers, model)
        return estimate, f"{how}; error {target.error_label}"
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
    # Every estimate carries the error its profile was validated to (or says it was not).
    return estimate, f"{how}; error {target.error_label}"


def _estimate_on_npu(target: Target, layers: list[Any], model: Path | None) -> tuple[Any, str]:
    """Vela's estimate on an Ethos-U profile, and the sentence that says how it was made.

    An ONNX model without int8 layers (the float baseline of a search, a pruned float trial)
    has nothing the NPU runs (Ethos-U: int8 and int16 only): it is priced whole on the host
    core's profile, and the sentence says so.
    """
    from dataclasses import replace

    from edgeopt.measure.vela import estimate_npu
    from edgeopt.target import Target

    assert target.npu is not None
    is_onnx = model is not None and model.suffix.lower() != ".tflite"
    if is_onnx and layers and not any(getattr(layer, "dtype", "") == "int8" for layer in layers):
        host = Target.from_name(target.npu.host_target)
        how = (
            f"estimated on the {host.name} host core profile (cycles model): the model has no "
            f"int8 layers, and the {target.npu.accelerator} NPU runs int8 and int16 only"
        )
        return replace(host.estimate(layers), target=target.name, source=how.split(":")[0]), how
    if model is None:
        raise InputError(f"target {target.name!r} is an Ethos-U NPU: Vela needs the model file.")
    estimate, result = estimate_npu(model, target)
    cpu = ", ".join(f"{op.count} {op.op_type}" for op in result.cpu_operators)
    on_cpu = (
        f"; left on the CPU and priced on the {result.host_target} profile: {cpu}"
        if cpu
        else "; every operator on the NPU"
    )
    how = (
        f"{result.label} ({result.accelerator}, {result.system_config}, {result.memory_mode}): "
        f"NPU cycles at {result.clock_hz / 1e6:g} MHz, SRAM and {result.offchip_memory} "
        f"from Vela{on_cpu}; energy {estimate.detail['energy']}"
    )
    return estimate, how


def profile_onnx(  # noqa: C901  (one measurement per branch: counts, latency, accuracy, target; each is a few lines)
    path: Path,
    *,
    data: Dataset | None = None,
    target: Target | None = None,
    threads: int = 1,
    is_latency_measured: bool = True,
    npu_model: Path | None = None,
) -> Metrics:
    """Measure one ONNX file: see :func:`profile`. ``npu_model``: the file an Ethos-U target's
    Vela compiles when it is not ``path`` itself (the ``.tflite`` an ONNX file was read from)."""
    import onnxruntime

    from edgeopt.models.upgrade import upgrade_onnx

    proto = read_onnx(path, is_one_input_required=data is not None)
    proto, upgrade_note = upgrade_onnx(proto, path)  # in memory: the file stays as it is
    x_test, y_test = _test_split(path, proto, data) if data is not None else (None, None)
    sample_shape = tuple(int(d) for d in x_test.shape[1:]) if x_test is not None else None
    binding = bind_inputs(proto, path, sample_shape)
    if sample_shape is not None and data is not None:
        bound = binding.inputs[0].shape[1:]
        if tuple(bound) != sample_shape:  # a rank the data's samples do not have
            want = "x".join(str(d) for d in binding.inputs[0].shape) or "a scalar"
            got = "x".join(str(d) for d in sample_shape)
            raise InputError(
                f"{path}: the model takes input {want} but {data.spec} gives samples of {got}."
            )
    graph, layers = analyse(proto, inputs=binding.inputs, source=str(path))
    plan = plan_memory(graph)
    layers = with_live_bytes(layers, dict(zip(plan.step_names, plan.step_bytes, strict=True)))
    size_bytes = artifact_size(path)
    batch = binding.batch
    notes = [note for note in (upgrade_note, *binding.notes) if note]
    provenance = {
        "batch": f"{batch}: {binding.batch_how}; counts, memory and latency are of one run",
        "params": "counted on the ONNX file (stored weight elements)",
        "macs": f"counted on the ONNX file (Conv/Gemm/MatMul, batch {batch})",
        "size_bytes": "measured: bytes on disk, external data included",
        "peak_ram_bytes": (
            f"counted: peak of live activation tensors over the graph's node order, batch {batch}"
        ),
    }
    # ONNX Runtime runs the file as shipped; an upgraded copy where it cannot load the file.
    runnable: Path | bytes = proto.SerializeToString() if upgrade_note else path
    latency = accuracy = int8 = None
    if is_latency_measured:
        latency, fed_note = _time_file(
            path, runnable, binding, x_test, threads=threads, upgrade_note=upgrade_note
        )
        notes += [fed_note] if fed_note else []
        provenance["latency_ms"] = (
            f"measured: ONNX Runtime {onnxruntime.__version__} {latency.provider}, "
            f"{threads} thread(s), batch {batch}, {latency.runs} runs after warm-up, on "
            f"{platform.machine()} {platform.processor() or platform.system()}"
        )
    if data is not None and x_test is not None and y_test is not None:
        exact = make_exact_session(proto if upgrade_note else path, threads=os.cpu_count() or 1)
        accuracy = top1(predict(exact, x_test), y_test)
        provenance["accuracy"] = (
            f"measured: top-1 on the test split of {data.spec} ({len(y_test)}), fed "
            f"{data.input_rule}"
        )
        int8 = exact.arithmetic
    elif is_latency_measured:
        _, int8 = int8_arithmetic(proto)  # the file was only timed: say how this host runs it
    if int8 is not None:
        provenance["int8"] = int8.describe()
    if notes:
        provenance["notes"] = "; ".join(notes)
    estimate = fits = None
    if target is not None:
        estimate, provenance["estimate"] = estimate_on_target(
            target, layers, data, model=npu_model or path
        )
        fits = {
            "flash": size_bytes <= target.flash_bytes,
            "ram": plan.peak_bytes <= target.ram_bytes,
        }
        provenance["fits"] = "size_bytes vs flash_bytes, peak_ram_bytes vs ram_bytes of the target"
        if "offchip_bytes" in estimate.detail:  # Vela placed it: model off chip, arena in SRAM
            fits = {
                "flash": estimate.detail["offchip_bytes"] <= target.flash_bytes,
                "ram": estimate.detail["sram_bytes"] <= target.ram_bytes,
            }
            provenance["fits"] = (
                f"Vela's {estimate.detail['offchip_memory']} used vs flash_bytes, its SRAM used "
                "vs ram_bytes of the target"
            )
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
        batch=batch,
        notes=tuple(notes),
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

    Any ONNX file: counts, memory and latency are of one run at the batch the file fixes (1
    where it is symbolic; ``Metrics.batch``); a symbolic dimension takes the data's size, or
    without data 1; a file older than opset 7 is upgraded in memory
    (:func:`edgeopt.models.upgrade.upgrade_onnx`); without data every input is made of its
    declared type (:func:`edgeopt.feed.generated_feeds`), so models with several, integer or
    no inputs are profiled too. ``Metrics.notes`` says which of these happened.

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
            target, an opset the converter cannot upgrade, inputs that cannot be made (strings)
            or on which ONNX Runtime fails.

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
    # Without data every input is made (edgeopt.feed): any number of them can be profiled.
    handle = load_model(
        model, weights=weights, data=dataset, is_one_input_required=data is not None
    )
    if dataset is not None:
        dataset = bind_data(handle, dataset)
    kwargs = {
        "data": dataset,
        "target": resolved,
        "threads": threads,
        "is_latency_measured": is_latency_measured,
    }
    if handle.onnx_path is not None:
        # Hook for .tflite specs: an Ethos-U target compiles the user's own file with Vela,
        # not one written back from the ONNX it was read as.
        is_tflite = isinstance(model, str) and model.lower().endswith(".tflite")
        npu_model = Path(model) if is_tflite and resolved is not None and resolved.npu else None
        metrics = profile_onnx(handle.onnx_path, npu_model=npu_model, **kwargs)  # type: ignore[arg-type]
        if handle.history and handle.history[0].startswith("tflite:"):
            # an imported .tflite is profiled through its private ONNX: name the user's file
            metrics = dataclasses.replace(metrics, model=handle.spec)
        return metrics
    from edgeopt.export.onnx import export_onnx

    if dataset is not None:
        _check_input(Path(handle.spec), handle.input_shape, dataset)
    with tempfile.TemporaryDirectory(prefix="edgeopt-profile-") as scratch:
        path = export_onnx(handle, Path(scratch) / f"{handle.name}.onnx")
        metrics = profile_onnx(path, **kwargs)  # type: ignore[arg-type]
    return metrics
