"""Bring an ONNX file from elsewhere into the form ONNX Runtime's quantizer takes (issue 14).

A file another tool wrote (a CNTK MNIST classifier: IR 3, opset 7, 0-255 pixels) is valid ONNX
that ONNX Runtime runs, yet its quantization tools fail on it, so :func:`legalize` rewrites an
in-memory copy before pre-processing (the file itself is never modified), and says what it did:

- **IR version.** Up to IR version 3 every initializer had to be listed among the graph's inputs
  as well; from IR version 4 (ONNX 1.3) an initializer need not be an input, and one that is
  becomes a default a caller may override (``docs/IR.md``, "Graphs" and "Names Within a
  Graph", and ``docs/Versioning.md`` in the onnx repository). ONNX Runtime's quantizer adds its
  scales and zero points as initializers only, so an IR-3 model it wrote is invalid ("in
  initializer but not in graph input"); and a weight that is also an input is not a constant
  to its optimizer. Such inputs are dropped (a quantized weight cannot be overridden anyway)
  and the IR version raised to the one the model's opset needs
  (``onnx.helper.find_min_ir_version_for``).
- **Opset.** ONNX Runtime's quantizer needs opset 10 or later and upgrades older models to 11
  itself (``onnxruntime.quantization.quant_utils.update_opset_version``, called by
  ``quantize_static``, not by the ``QDQQuantizer`` we drive); per-channel weight scales need
  the ``axis`` attribute of QuantizeLinear / DequantizeLinear, which opset 13 added
  (https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html). A model below
  :data:`QDQ_OPSET` is upgraded to it with :func:`edgeopt.models.upgrade.upgrade_onnx`.
- **Input shape.** Symbolic or unknown dimensions of the input other than the batch are bound
  to the data's sample shape, so that shape inference (ONNX Runtime's symbolic one, then
  ONNX's) can give every activation a shape: "a tensor with unknown shape can not be
  quantized" (``quant_pre_process``'s documentation).

A Gemm bias of shape ``[1, N]`` is reshaped after pre-processing, where ONNX Runtime's fusions
(MatMul + Add into Gemm) may have made one: :func:`edgeopt.stages.quantize.qdq.prepare`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeopt.errors import InputError

if TYPE_CHECKING:
    from pathlib import Path

    import onnx

__all__ = ["QDQ_OPSET", "legalize"]

#: The opset a model is upgraded to before quantization: per-channel Q/DQ (``axis``) begins here.
QDQ_OPSET = 13
#: The first IR version in which an initializer need not also be a graph input.
_IR_INITIALIZERS_APART = 4


def _drop_initializer_inputs(model: onnx.ModelProto) -> int:
    """Remove the graph inputs that are initializers too (IR 3 style); how many were removed."""
    constants = {init.name for init in model.graph.initializer}
    keep = [value for value in model.graph.input if value.name not in constants]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return dropped


def _bind_input(model: onnx.ModelProto, sample_shape: tuple[int, ...]) -> str | None:
    """Fix the input's non-batch dimensions that are symbolic or unknown to the data's sample
    shape; a note naming them, or None where none was (or the rank is not the data's)."""
    inputs = [value for value in model.graph.input]
    if len(inputs) != 1 or not inputs[0].type.HasField("tensor_type"):
        return None
    tensor = inputs[0].type.tensor_type
    if not tensor.HasField("shape") or len(tensor.shape.dim) != len(sample_shape) + 1:
        return None
    bound = []
    for dim, size in zip(list(tensor.shape.dim)[1:], sample_shape, strict=True):
        if dim.HasField("dim_value"):
            continue
        bound.append(dim.dim_param or "?")
        dim.Clear()
        dim.dim_value = int(size)
    if not bound:
        return None
    del model.graph.value_info[:]  # inferred at the old dimensions; inferred again from these
    shape = "x".join(str(d) for d in sample_shape)
    return (
        f"input dimensions {', '.join(bound)} bound to the data's {shape} for shape inference; "
        "the quantized file takes that shape"
    )


def legalize(
    model: onnx.ModelProto, source: str | Path, sample_shape: tuple[int, ...] | None = None
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """A copy of ``model`` that ONNX Runtime's quantizer takes, and a note per change made.

    Args:
        model: the loaded, checked fp32 model (not modified).
        source: where it came from, for the notes and messages.
        sample_shape: the data's shape of one sample, to bind the input's free dimensions.

    Returns:
        The model (the same object where nothing had to change) and the notes, in order.

    Raises:
        InputError: onnx's version converter cannot upgrade the model (one sentence).

    Example:
        >>> from onnx import TensorProto, helper, numpy_helper
        >>> import numpy as np
        >>> w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
        >>> graph = helper.make_graph(
        ...     [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
        ...      helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w])
        >>> old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
        >>> old.ir_version = 3
        >>> new, notes = legalize(old, "old.onnx")
        >>> new.ir_version, [i.name for i in new.graph.input], new.opset_import[0].version
        (7, ['x'], 13)
        >>> len(notes)
        2
    """
    import onnx
    from onnx import helper

    from edgeopt.models.upgrade import upgrade_onnx

    work = onnx.ModelProto()
    work.CopyFrom(model)
    notes: list[str] = []
    old_ir = work.ir_version
    # First the IR version that lets an initializer be no input (the converter checks the
    # model at its own IR version), then the inputs dropped, then the opset.
    work.ir_version = max(old_ir, _IR_INITIALIZERS_APART)
    dropped = _drop_initializer_inputs(work)
    work, upgraded = upgrade_onnx(
        work,
        source,
        min_opset=QDQ_OPSET,
        target_opset=QDQ_OPSET,
        why=f"ONNX Runtime's per-channel Q/DQ needs opset {QDQ_OPSET}",
    )
    if upgraded:
        notes.append(upgraded)
        for prop in model.metadata_props:  # the converter may not carry them
            if all(p.key != prop.key for p in work.metadata_props):
                work.metadata_props.add().CopyFrom(prop)
    needed = max(helper.find_min_ir_version_for(list(work.opset_import)), _IR_INITIALIZERS_APART)
    if old_ir < needed:
        work.ir_version = needed
        notes.append(
            f"IR version {old_ir} raised to {needed} in memory (its {dropped} initializers listed "
            "as graph inputs, IR 3 style, made constants)"
            if dropped
            else f"IR version {old_ir} raised to {needed} in memory"
        )
    elif dropped:
        notes.append(f"{dropped} initializers listed as graph inputs made constants")
    if sample_shape is not None:
        bound = _bind_input(work, tuple(sample_shape))
        notes += [bound] if bound else []
    if not notes:
        return model, ()
    try:
        onnx.checker.check_model(work, full_check=False)
    except Exception as exc:  # pragma: no cover - each edit keeps a checked model valid
        first = " ".join(str(exc).split())[:160]
        raise InputError(
            f"{source}: cannot prepare the model for quantization ({first})."
        ) from None
    return work, tuple(notes)
