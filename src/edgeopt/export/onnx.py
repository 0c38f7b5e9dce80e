"""Export a PyTorch model to ONNX, atomically, and check the file against the module.

The exporter is PyTorch's ``torch.export``-based one (``dynamo=True``, the default since
PyTorch 2.9), with a dynamic batch dimension so the same file serves batch-1 latency and batched
accuracy. In eval mode it folds BatchNorm into the preceding convolution. After writing, the
file is run with ONNX Runtime on the example input and compared with the module's output: what
ships must compute what was trained.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt._io import atomic_path
from edgeopt.errors import EdgeoptError
from edgeopt.models import ModelHandle

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(EdgeoptError):
    """The model could not be exported, or the export does not compute what the model does."""


def strip_debug_info(model: Any) -> None:
    """Drop per-node debug metadata in place: the PyTorch exporter's stack traces (with local
    paths) and FX names took 10 KB of LeNet-5's file; a deployed artifact does not need them."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.ClearField("doc_string")


def save_onnx(model: Any, path: Path) -> Path:
    """Write an ONNX model atomically (weights inline; models here stay far below 2 GB)."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def export_onnx(
    model: ModelHandle,
    path: str | Path,
    *,
    metadata: Mapping[str, object] | None = None,
    atol: float = 1e-4,
) -> Path:
    """Write the model as an ONNX file with a dynamic batch dimension and check it.

    Args:
        model: a handle holding a PyTorch module and its input shape.
        path: where to write; the file appears only once complete (temp + rename).
        metadata: extra ``metadata_props`` (values JSON-encoded unless strings), e.g. the data's
            normalization, so later steps can fold it into the model.
        atol: largest absolute output difference accepted between ONNX Runtime and PyTorch.

    Returns:
        The written path.

    Raises:
        InputError: the handle holds no PyTorch module or no input shape.
        ExportError: the exporter failed or the file's outputs differ from the module's.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.models import load_model
        >>> out = export_onnx(load_model("zoo:cnn-s"), pathlib.Path(tempfile.mkdtemp()) / "m.onnx")
        >>> out.stat().st_size > 0
        True
    """
    import onnx
    import torch

    module = model.require_torch("ONNX export")
    shape = model.require_input_shape()
    path = Path(path)
    module = module.eval()
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter logs a warning per missing torchvision operator; torchvision is not used.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw_path = Path(scratch) / "model.onnx"
        try:
            torch.onnx.export(
                module,
                (example,),
                str(raw_path),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                verbose=False,
                report=False,
            )
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ExportError(f"{model.spec}: ONNX export failed ({detail}).") from exc
        proto = onnx.load(str(raw_path), load_external_data=True)
    props = {"edgeopt.history": json.dumps(list(model.history))}
    if "edgeopt.normalization" in model.metadata:  # the input contract of a model trained here
        props["edgeopt.normalization"] = model.metadata["edgeopt.normalization"]
    for key, value in (metadata or {}).items():
        props[f"edgeopt.{key}"] = value if isinstance(value, str) else json.dumps(value)
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "edgeopt"
    strip_debug_info(proto)
    _check_parity(module, proto, example.numpy(), atol=atol, spec=model.spec)
    return save_onnx(proto, path)


def _check_parity(
    module: object, proto: object, example: np.ndarray, *, atol: float, spec: str
) -> None:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(
        proto.SerializeToString(),  # type: ignore[attr-defined]
        providers=["CPUExecutionProvider"],
    )
    got = session.run(None, {session.get_inputs()[0].name: example})[0]
    with torch.no_grad():
        want = module(torch.from_numpy(example)).numpy()  # type: ignore[operator]
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    if not diff <= atol * max(1.0, float(np.max(np.abs(want)))):
        raise ExportError(
            f"{spec}: the exported ONNX differs from the PyTorch model (max |diff| {diff:.3g})."
        )
