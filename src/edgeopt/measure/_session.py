"""The one way edgeopt opens an ONNX Runtime session: the settings every latency is measured with.

Below :mod:`edgeopt.measure.int8` (its exact sessions are made here) and
:mod:`edgeopt.measure.runtime` (which imports :func:`make_session` from here, the name users
import).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.errors import InputError
from edgeopt.graph import runtime_detail

__all__ = ["make_session", "runtime_detail"]


def make_session(
    model: Path | bytes,
    *,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    is_cpu_behind: bool = False,
    source: str | None = None,
) -> Any:
    """An ONNX Runtime session (from a file or serialized bytes) with a fixed thread count, one
    inter-op thread, sequential execution and all graph optimizations: the settings every
    latency in edgeopt is measured with. ``is_cpu_behind`` puts the CPU provider behind another
    one, for the nodes that provider does not take (how ONNX Runtime deploys GPU providers);
    ``source`` names serialized bytes in the error (the file they were made from)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: every error ONNX Runtime logs is raised too, and becomes the one sentence.
    options.log_severity_level = 4
    source = model if isinstance(model, bytes) else str(model)
    try:
        providers = [provider]
        if is_cpu_behind and provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:
        first = runtime_detail(exc)
        name = source or ("the model" if isinstance(model, bytes) else str(model))
        raise InputError(f"{name}: ONNX Runtime cannot load the model ({first}).") from None
