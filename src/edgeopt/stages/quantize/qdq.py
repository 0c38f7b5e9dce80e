"""Write QuantizeLinear / DequantizeLinear into an fp32 ONNX graph with ranges we computed.

ONNX Runtime's ``QDQQuantizer`` (``onnxruntime.quantization.qdq_quantizer``, internal API, pinned
by ``tests/stages/test_qdq.py``) inserts the Q/DQ pairs; we hand it our own ranges as
``tensors_range`` and restrict it to the operators ONNX Runtime's CPU provider fuses into int8
kernels (``INT8_OP_TYPES``), so that nothing is wrapped in Q/DQ only to run in float between them.
Every other node is left in float and named in the returned list.

Activations are uint8, asymmetric; weights int8, symmetric (zero point 0), per output channel by
default (U8S8). ONNX Runtime's documentation recommends S8S8 for QDQ on x86, and on a plain chain
of layers both run equally fast here (ONNX Runtime 1.32, x86 with AVX-512 VNNI). But with int8
activations, a tensor read by two nodes (a residual connection, two branches) makes ONNX Runtime
run the Convs that read it in float between Q/DQ: a conv-conv residual block ran at fp32 speed
with S8S8 and 2.2x faster with U8S8, where every Conv became QLinearConv. Accuracy is the same
(both are asymmetric with 256 levels). On x86 without VNNI, ONNX Runtime's U8S8 kernels
saturate in VPMADDUBSW; the file stays U8S8, the same bytes whatever host writes it (no
``reduce_range``), and :mod:`edgeopt.measure.int8` measures its exact integers there through a
lossless uint8 re-encoding (``edgeopt export --weight-type uint8`` writes one as a file).
With ``weight_bits=4`` the weights are stored as INT4 (opset 21; the graph is upgraded with
``onnx.version_converter`` when older), two per byte, so the file shows the saving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.export.onnx import strip_debug_info
from edgeopt.graph import INT8_OP_TYPES
from edgeopt.graph import GraphEditor
from edgeopt.graph import attributes
from edgeopt.graph import constants

if TYPE_CHECKING:
    import onnx

__all__ = [
    "INT8_OP_TYPES",
    "executed_op_types",
    "prepare",
    "quantized_weights",
    "weight_scale",
    "write_qdq",
    "written_weight_scales",
]

#: Operators that compute nothing (shapes, casts of integers); never reported as float.
_NON_COMPUTE = frozenset({"Shape", "Size", "Constant", "ConstantOfShape", "Range", "Identity"})
_OPSET_INT4 = 21
_PREPARED_KEY = "onnx.quant.pre_process"


def _ort_quantization() -> Any:
    try:
        import onnxruntime.quantization as quantization
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        raise InputError("quantization needs onnxruntime (pip install onnxruntime).") from None
    return quantization


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _global_pool_rewrite(model: onnx.ModelProto) -> None:
    """Turn ``ReduceMean(axes=H,W)`` on NCHW tensors into ``GlobalAveragePool``.

    PyTorch exports ``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3), keepdim=True)`` as ReduceMean,
    which no int8 kernel covers; the two compute the same thing, and GlobalAveragePool has one.
    Without ``keepdim`` (``x.mean([2, 3])``, the head of torchvision's MNASNet and ShuffleNetV2)
    a Flatten after the pool drops the two unit dimensions.
    """
    import onnx

    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in list(model.graph.value_info) + list(model.graph.input)
        if v.type.tensor_type.HasField("shape")
    }
    stored = constants(model)
    names = {name for node in model.graph.node for name in node.output}
    flattens: dict[int, Any] = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attrs = attributes(node)
        keepdims = attrs.get("keepdims", 1) == 1
        if len(node.input) > 1 and node.input[1]:
            axes = stored.get(node.input[1])
            if axes is None:
                continue
            axes_list = sorted(int(a) % 4 for a in np.asarray(axes).ravel())
        else:
            axes_list = sorted(int(a) % 4 for a in attrs.get("axes", []))
        if axes_list != [2, 3]:
            continue
        del node.input[1:]
        del node.attribute[:]
        node.op_type = "GlobalAveragePool"
        if not keepdims:
            flat, pooled = node.output[0], f"{node.output[0]}_pooled"
            while pooled in names:
                pooled += "_"
            names.add(pooled)
            node.output[0] = pooled
            flattens[index] = onnx.helper.make_node(
                "Flatten", [pooled], [flat], name=f"{node.name or flat}_flatten", axis=1
            )
    if flattens:
        nodes = [onnx.NodeProto() for _ in model.graph.node]
        for copy, node in zip(nodes, model.graph.node, strict=True):
            copy.CopyFrom(node)
        del model.graph.node[:]
        for index, node in enumerate(nodes):
            model.graph.node.append(node)
            if index in flattens:
                model.graph.node.append(flattens[index])


#: ``quant_pre_process`` options tried in turn (see :func:`prepare`).
_PRE_PROCESS_ATTEMPTS: tuple[dict[str, bool], ...] = (
    {},
    {"auto_merge": True},
    {"skip_symbolic_shape": True},
)
#: The loggers of ONNX Runtime's quantization tools (pre-processing, symbolic shape inference).
_ORT_TOOL_LOGGERS = ("onnxruntime.quantization", "onnxruntime.tools")
#: What ONNX Runtime's symbolic shape inference saves into the working directory when it stops.
_SYMBOLIC_LEFTOVER = "sym_shape_infer_temp.onnx"


@contextlib.contextmanager
def ort_scratch(prefix: str) -> Iterator[Path]:
    """A scratch folder that is also the working directory while ONNX Runtime's quantization
    tools run, removed after: they write files of their own into the working directory
    (symbolic shape inference's ``sym_shape_infer_temp.onnx`` and its ``<uuid>.data``). Their
    loggers are quietened meanwhile: ``quant_pre_process`` logs the traceback of an
    optimization it skips (a model without initializers makes ONNX Runtime's own
    ``extract_raw_data_from_model`` fail), which is no error of the user's; what does fail is
    raised and becomes one sentence."""
    loggers = [logging.getLogger(name) for name in _ORT_TOOL_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # they log tracebacks of failures they recover from, on stderr
        logger.setLevel(logging.CRITICAL)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as scratch, contextlib.chdir(scratch):
            yield Path(scratch).resolve()
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _label(node: onnx.NodeProto) -> str:
    name = node.name or (node.output[0] if node.output else "")
    return f"node {' '.join(name.split())[:80]!r} ({node.op_type})"


def _unshaped_node(path: Path) -> onnx.NodeProto | None:
    """The first node symbolic shape inference left without an output shape, read from the
    model it saved where it stopped (None where it saved none)."""
    import onnx

    if not path.is_file():
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # a partial file: the message names no node then
        return None
    graph = model.graph
    known = {  # a value it could not infer is listed with an empty type
        v.name
        for v in (*graph.value_info, *graph.input, *graph.output)
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    }
    known |= {init.name for init in graph.initializer}
    for node in graph.node:
        if any(name and name not in known for name in node.output):
            return node
    return None


def _pre_process_failure(source: str, scratch: Path, failures: list[str]) -> str:
    """One sentence for a model that ``quant_pre_process`` failed on with every option."""
    stopped = _unshaped_node(scratch / _SYMBOLIC_LEFTOVER)
    if stopped is None:
        return (
            f"{source}: ONNX Runtime cannot pre-process the model for quantization ({failures[0]})."
        )
    return (
        f"{source}: ONNX Runtime cannot pre-process the model for quantization: its symbolic "
        f"shape inference stops at {_label(stopped)} ({failures[0]}) and ONNX's shape inference "
        f"alone fails too ({failures[-1]})."
    )


def _vector_gemm_bias(model: onnx.ModelProto) -> None:
    """Reshape a constant Gemm bias of shape ``[1, N]`` (or one value) to ``[N]``.

    Gemm's C broadcasts to its (M, N) output either way, so the function is the same; ONNX
    Runtime's quantizer computes the int32 bias's scale as input scale x weight scale, one
    per output channel, and compares it with the bias element-wise: a ``[1, N]`` bias (CNTK
    writes them, and MatMul + Add fuses into one) makes that comparison fail with "The truth
    value of an array with more than one element is ambiguous".
    """
    import onnx

    inits = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    editor: GraphEditor | None = None
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        if node.input[1] not in inits:
            continue
        weight_dims = list(inits[node.input[1]].dims)
        if len(weight_dims) != 2:
            continue
        outputs = weight_dims[0] if attributes(node).get("transB", 0) else weight_dims[1]
        bias = onnx.numpy_helper.to_array(inits[node.input[2]])
        if bias.shape not in ((1, outputs), (1, 1), (1,), ()) or bias.shape == (outputs,):
            continue
        vector = np.broadcast_to(bias.reshape(-1), (outputs,)).copy()
        if uses[node.input[2]] == 1:
            inits[node.input[2]].CopyFrom(onnx.numpy_helper.from_array(vector, node.input[2]))
            continue
        editor = editor or GraphEditor(model)
        node.input[2] = editor.constant(vector, f"{node.input[2]}_vector")
    if editor is not None:
        model.graph.initializer.extend(editor.initializers)


def prepare(model: onnx.ModelProto, *, source: str = "the model") -> onnx.ModelProto:
    """ONNX Runtime's quantization pre-processing plus our int8-friendly rewrites.

    ``quant_pre_process`` runs symbolic shape inference, ONNX Runtime's basic graph optimizations
    (constant folding, Conv+BatchNorm folding: our exporter already folds BN in eval mode) and
    ONNX shape inference; node names survive. Where symbolic shape inference stops (two
    symbolic dimensions it cannot prove equal, e.g. the batch of a Resize's output and of the
    skip it is concatenated with) it is retried with ``auto_merge`` ("automatically merge
    symbolic dims when conflict happens", its documentation), then skipped (ONNX's shape
    inference alone: symbolic inference "is most effective with transformer based models").
    It runs inside a scratch folder: symbolic shape inference saves ``sym_shape_infer_temp.onnx``
    and its external ``.data`` into the working directory when it stops, and that file names
    the node it stopped at. Then ReduceMean over H, W becomes GlobalAveragePool and a Gemm bias
    of shape ``[1, N]`` becomes ``[N]``. A model already prepared is returned as a copy.

    Args:
        model: the fp32 model (not modified).
        source: the model's name for messages (its file or spec).

    Returns:
        A new, prepared fp32 model computing the same function.

    Raises:
        InputError: ONNX Runtime cannot pre-process the model (naming the node shape inference
            stopped at, where it says).

    Example:
        >>> import onnx
        >>> from onnx import helper, TensorProto
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        >>> [n.op_type for n in prepare(model).graph.node]
        ['Relu']
    """
    import onnx

    if any(p.key == _PREPARED_KEY for p in model.metadata_props):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    quantization = _ort_quantization()
    with ort_scratch("edgeopt-prepare-") as scratch:
        out = scratch / "prepared.onnx"
        failures: list[str] = []
        for options in _PRE_PROCESS_ATTEMPTS:
            try:
                quantization.shape_inference.quant_pre_process(model, str(out), **options)
                break
            except Exception as exc:  # ONNX Runtime raises Exception, ValueError, ...
                failures.append(" ".join(str(exc).split())[:160] or type(exc).__name__)
        else:
            raise InputError(_pre_process_failure(source, scratch, failures)) from None
        prepared = onnx.load(str(out), load_external_data=True)
    _global_pool_rewrite(prepared)
    _vector_gemm_bias(prepared)
    _drop_unused_initializers(prepared)
    _drop_unused_opsets(prepared)
    return prepared


def weight_scale(weights: np.ndarray, *, bits: int = 8, axis: int | None = 0) -> np.ndarray:
    """The max-abs scale ONNX Runtime gives a signed symmetric weight tensor.

    ``2 * max|w| / (qmax - qmin)`` per channel along ``axis`` (None: one for the tensor), with
    int8's symmetric range -127..127 and int4's full range -8..7 (ONNX Runtime 1.32 has no
    symmetric int4 range), computed in float64 and stored as float32; a scale below the
    smallest normal float becomes 1. Zero points are 0.
    """
    span = 254.0 if bits == 8 else 15.0
    w = np.asarray(weights, dtype=np.float32)
    if axis is None:
        absmax = np.asarray(np.abs(w).max(), dtype=np.float64)
    else:
        absmax = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1).max(axis=1)
        absmax = absmax.astype(np.float64)
    scale = 2.0 * absmax / span
    return np.where(scale < np.finfo(np.float32).tiny, 1.0, scale).astype(np.float32)


def weight_axis(node: onnx.NodeProto) -> int:
    """Output-channel axis of a Conv / ConvTranspose / Gemm / MatMul weight (what per-channel
    scales follow): a ConvTranspose weight is (C_in, C_out / group, kernel...)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1  # MatMul: (K, N)


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def _constant_names(model: onnx.ModelProto) -> set[str]:
    constants = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constants for name in inputs)):
            constants.update(node.output)
    return constants


def _float_inputs(node: onnx.NodeProto, types: dict[str, int], constants: set[str]) -> list[str]:
    import onnx

    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return [
        name
        for name in node.input
        if name and name not in constants and types.get(name, onnx.TensorProto.FLOAT) in floats
    ]


def _float_nodes(
    prepared: onnx.ModelProto, quantized: onnx.ModelProto, excluded: Collection[str]
) -> list[str]:
    """Nodes of ``prepared`` that still compute in float in ``quantized``, as "name (Op)".

    A node computes in float when it is excluded, when its operator has no int8 kernel, or when
    the quantizer left one of its float inputs without a DequantizeLinear in front.
    """
    types, constants = _value_types(prepared), _constant_names(prepared)
    after_types, after_constants = _value_types(quantized), _constant_names(quantized)
    producers = {out: node for node in quantized.graph.node for out in node.output}
    by_name = {node.name: node for node in quantized.graph.node}
    found = []
    for node in prepared.graph.node:
        if node.op_type in _NON_COMPUTE or not _float_inputs(node, types, constants):
            continue
        label = f"{node.name or node.output[0]} ({node.op_type})"
        if node.name in excluded or node.op_type not in INT8_OP_TYPES:
            found.append(label)
            continue
        after = by_name.get(node.name)
        if after is None:
            continue  # folded away by the quantizer (a ReLU absorbed into its input's range)
        sources = _float_inputs(after, after_types, after_constants)
        if any(
            producers.get(name) is None or producers[name].op_type != "DequantizeLinear"
            for name in sources
        ):
            found.append(label)
    return found


def _upgrade_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    import onnx

    if _opset(model) >= version:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, version)
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise InputError(
            f"cannot upgrade the model to opset {version} for 4-bit weights ({first})."
        ) from None
    for prop in model.metadata_props:
        if all(p.key != prop.key for p in upgraded.metadata_props):
            upgraded.metadata_props.add().CopyFrom(prop)
    return upgraded


def _scale_overrides(
    model: onnx.ModelProto,
    scales: Mapping[str, np.ndarray],
    bits: Mapping[str, int] | None = None,
    *,
    per_channel: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """ONNX Runtime's ``TensorQuantOverrides`` fixing the scale (zero point 0) of some weights,
    and the integer type (int8 / int4) of others, both keyed by weight name.

    A type override must name the channel axis too: without it ONNX Runtime quantizes that
    weight per tensor, even with ``per_channel``.
    """
    quant_type = _ort_quantization().QuantType
    axes = {
        node.input[1]: weight_axis(node)
        for node in model.graph.node
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1
    }
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name, scale in scales.items():
        values = np.asarray(scale, dtype=np.float32).ravel()
        if name not in axes:
            raise InputError(f"weight_scales names {name!r}, which is no Conv/Gemm/MatMul weight.")
        if values.size == 1:
            overrides[name] = [{"scale": float(values[0]), "zero_point": 0}]
        else:
            overrides[name] = [{"scale": float(v), "zero_point": 0} for v in values]
            overrides[name][0]["axis"] = axes[name]
    for name, weight_bits in (bits or {}).items():
        entry = overrides.setdefault(name, [{}])[0]
        entry["quant_type"] = quant_type.QInt4 if weight_bits == 4 else quant_type.QInt8
        if per_channel and "scale" not in entry:
            entry["axis"] = axes[name]
    return overrides


def _float_graph_outputs(model: onnx.ModelProto) -> None:
    """Let a Gemm / MatMul that produces a graph output write it in float (drop its Q/DQ).

    ONNX Runtime still runs the layer with int8 kernels (QGemm / MatMulIntegerToFloat with a
    float output); quantizing the logits would only add error at no saving.
    """
    outputs = {o.name for o in model.graph.output}
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        if dq.output[0] not in outputs:
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or consumers.get(q.output[0]) != 1:
            continue
        layer = producers.get(q.input[0])
        if layer is None or layer.op_type not in ("Gemm", "MatMul"):
            continue
        if consumers.get(q.input[0]) != 1:
            continue
        layer.output[list(layer.output).index(q.input[0])] = dq.output[0]
        model.graph.node.remove(dq)
        model.graph.node.remove(q)


def _drop_zero_constant_zero_points(model: onnx.ModelProto) -> None:
    """Drop the all-zero zero points of DequantizeLinear on constants (weights, int32 biases).

    The operator's zero point defaults to 0 of the input's type, and per channel these cost a
    byte (int8) or four (int32 bias) per output channel: 90 KB of MobileNetV2's 2.6 MB int8
    file. ONNX Runtime (1.32) still fuses Conv into QLinearConv without them, but fuses Gemm /
    MatMul into QGemm only with them, so the DequantizeLinears feeding those keep theirs.
    """
    import onnx

    inits = {init.name: init for init in model.graph.initializer}
    keep = {
        name
        for node in model.graph.node
        if node.op_type in ("Gemm", "MatMul")
        for name in node.input
    }
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3 or node.output[0] in keep:
            continue
        if node.input[0] not in inits or node.input[2] not in inits:
            continue
        if not onnx.numpy_helper.to_array(inits[node.input[2]]).any():
            del node.input[2]


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Remove opset imports no node uses (ONNX Runtime's optimizer adds every domain it knows)."""
    used = {node.domain or "" for node in model.graph.node} | {""}
    keep = [o for o in model.opset_import if (o.domain or "") in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _run_quantizer(quantizer: Any) -> onnx.ModelProto:
    """Run ONNX Runtime's ``QDQQuantizer`` in a scratch working directory; the QDQ model."""
    with ort_scratch("edgeopt-qdq-"):
        quantizer.quantize_model()
        quantizer.model.topological_sort()  # new Q/DQ nodes were appended at the end
        return quantizer.model.model


def _failing_node(exc: BaseException, model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The node ONNX Runtime's quantizer was on when it raised ``exc``, where it can be found.

    Its messages rarely name one ("The truth value of an array with more than one element is
    ambiguous" for a ``[1, N]`` bias), but its frames hold it: a ``node`` local, or the name of
    a tensor (a weight, a bias) whose consumer is the node. Frames are read innermost first;
    then node names quoted in the message.
    """
    import onnx

    by_name = {node.name: node for node in model.graph.node if node.name}
    consumers: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, node)
    frames = []
    trace = exc.__traceback__
    while trace is not None:
        if str(trace.tb_frame.f_globals.get("__name__", "")).startswith("onnxruntime"):
            frames.append(trace.tb_frame)
        trace = trace.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, onnx.NodeProto) and value.op_type:
                return by_name.get(value.name, value)
            if isinstance(value, str) and value in consumers:
                return consumers[value]
    text = str(exc)
    return next((node for name, node in by_name.items() if repr(name) in text), None)


def _quantizer_failure(exc: BaseException, model: onnx.ModelProto, source: str) -> str:
    """One sentence for an exception of ONNX Runtime's quantizer: the node and op, else the
    model and the step."""
    text = " ".join(str(exc).split())
    missing = re.search(r"not specified for param (.+?)\. In static mode", text)
    if missing:
        return (
            f"{source}: no calibration range for tensor {missing.group(1)!r}; calibrate the "
            "prepared model."
        )
    detail = text[:160] or type(exc).__name__
    node = _failing_node(exc, model)
    where = f"on {_label(node)}" if node is not None else "while inserting Q/DQ pairs"
    return f"{source}: ONNX Runtime's quantizer fails {where} ({detail})."


def write_qdq(
    fp32: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    *,
    per_channel: bool = True,
    weight_bits: int = 8,
    exclude_nodes: Collection[str] = (),
    activation_type: str = "uint8",
    weight_scales: Mapping[str, np.ndarray] | None = None,
    node_weight_bits: Mapping[str, int] | None = None,
    source: str = "the model",
) -> tuple[onnx.ModelProto, list[str]]:
    """Insert Q/DQ pairs into a copy of ``fp32`` using the given activation ranges.

    Args:
        fp32: the fp32 model (not modified); it is pre-processed first (see :func:`prepare`).
        ranges: ``{tensor: (lo, hi)}`` for the activations, from the prepared model's tensors
            (see :mod:`edgeopt.stages.quantize.calibrate`).
        per_channel: one weight scale per output channel (else one per tensor).
        weight_bits: 8 (int8 weights) or 4 (int4 weights in opset 21 Q/DQ).
        exclude_nodes: node names kept in float.
        activation_type: ``uint8`` (the default, U8S8) or ``int8`` (S8S8).
        weight_scales: ``{weight: scale}`` to use instead of the max-abs scale (one per output
            channel, or a scalar), e.g. the scales AdaRound rounded the weights on; with
            weights that are exact multiples of their scale the file holds exactly those
            integers.
        node_weight_bits: ``{node name: 4 or 8}``, the weight bits of these Conv / Gemm /
            MatMul nodes, overriding ``weight_bits`` (mixed precision); any 4-bit weight
            upgrades the graph to opset 21.
        source: the model's name for messages (its file or spec).

    Returns:
        The QDQ model, and every node left computing in float as ``"name (OpType)"``.

    Raises:
        InputError: bits other than 4 or 8, an unknown node name in ``exclude_nodes`` or
            ``node_weight_bits`` (or one with no weight), a range missing for a tensor that
            must be quantized, ONNX Runtime's quantizer failing (naming the node it was on).

    Example:
        >>> import onnx
        >>> from onnx import helper, numpy_helper, TensorProto
        >>> w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1),
        ...      helper.make_node("Erf", ["y"], ["z"], name="act")], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        ...     [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3])], [w])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        >>> qdq, floats = write_qdq(model, {"x": (-1.0, 1.0), "y": (-4.0, 4.0), "z": (-1.0, 1.0)})
        >>> floats
        ['act (Erf)']
    """
    import onnx

    quantization = _ort_quantization()
    from onnxruntime.quantization.calibrate import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData
    from onnxruntime.quantization.calibrate import TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    layer_bits = dict(node_weight_bits or {})
    for bits in (weight_bits, *layer_bits.values()):
        if isinstance(bits, bool) or bits not in (4, 8):
            raise InputError(f"weight bits must be 4 or 8, got {bits}.")
    if activation_type not in ("int8", "uint8"):
        raise InputError(f"activation type must be int8 or uint8, got {activation_type!r}.")
    prepared = prepare(fp32, source=source)
    names = {node.name for node in prepared.graph.node}
    unknown = [name for name in exclude_nodes if name not in names]
    if unknown:
        raise InputError(f"exclude names node {unknown[0]!r}, which is not in the model.")
    weights = {
        node.name: node.input[1]
        for node in prepared.graph.node
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1
    }
    unweighted = [name for name in layer_bits if name not in weights]
    if unweighted:
        raise InputError(
            f"node_weight_bits names {unweighted[0]!r}, which is no Conv/Gemm/MatMul of the model."
        )
    if weight_bits == 4 or 4 in layer_bits.values():
        prepared = _upgrade_opset(prepared, _OPSET_INT4)
    quant_type = quantization.QuantType
    weight_type = quant_type.QInt4 if weight_bits == 4 else quant_type.QInt8
    act_type = quant_type.QInt8 if activation_type == "int8" else quant_type.QUInt8
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {
            name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
            for name, (lo, hi) in ranges.items()
        },
    )
    op_types = sorted(INT8_OP_TYPES)
    quantizable = [
        node.name
        for node in prepared.graph.node
        if node.op_type in INT8_OP_TYPES and node.name not in set(exclude_nodes)
    ]
    options: dict[str, Any] = {
        "ActivationSymmetric": False,
        "WeightSymmetric": True,
        # Quantize data movement (Reshape, Flatten, MaxPool, ...) even where its input is not
        # quantized yet, sharing the input's scale: otherwise a Flatten right after the graph
        # input stays float and the next layer quantizes its output with a range of its own.
        "ForceQuantizeNoInputCheck": True,
        "TensorQuantOverrides": _scale_overrides(
            prepared,
            weight_scales or {},
            {weights[name]: bits for name, bits in layer_bits.items()},
            per_channel=per_channel,
        ),
    }
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a warning per op it leaves alone
    work = onnx.ModelProto()
    work.CopyFrom(prepared)  # the quantizer edits the model it is given in place
    try:
        quantized = _run_quantizer(
            QDQQuantizer(
                work,
                per_channel,
                False,  # reduce_range (7-bit weights) would change the file; see measure.int8
                weight_type,
                act_type,
                tensors,
                quantizable,
                list(exclude_nodes),
                op_types,
                options,
            )
        )
    except Exception as exc:  # ONNX Runtime's quantizer raises ValueError, KeyError, ...
        raise InputError(_quantizer_failure(exc, prepared, source)) from None
    finally:
        root.setLevel(level)
    _float_graph_outputs(quantized)
    _drop_zero_constant_zero_points(quantized)
    _drop_unused_initializers(quantized)
    _drop_unused_opsets(quantized)
    strip_debug_info(quantized)
    # The PyTorch exporter's graph signature (23 KB on MobileNetV2) describes the fp32 program,
    # not this file; the opset-21 converter drops it too.
    del quantized.graph.metadata_props[:]
    quantized.producer_name = "edgeopt"
    return quantized, _float_nodes(prepared, quantized, set(exclude_nodes))


def written_weight_scales(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The weight scales a QDQ model holds: ``{fp32 weight name: scale}`` (array or scalar).

    Run the writer once on the fp32 model and read these to learn the exact scales it picks
    (ONNX Runtime raises a weight's scale where the int32 bias would overflow otherwise).
    """
    import onnx

    inits = {init.name: init for init in model.graph.initializer}
    found: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        if inits[node.input[0]].data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.INT4):
            continue
        name = node.input[0].removesuffix("_quantized")
        found[name] = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    return found


def quantized_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The integer weights of a QDQ model: ``{fp32 weight name: int array}`` (int4 unpacked)."""
    import onnx

    inits = {init.name: init for init in model.graph.initializer}
    found: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        init = inits[node.input[0]]
        if init.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.INT4):
            continue
        values = onnx.numpy_helper.to_array(init).astype(np.int64)
        name = init.name.removesuffix("_quantized")
        found[name] = values
    return found


def executed_op_types(path: str | os.PathLike[str], sample: np.ndarray) -> list[str]:
    """The kernels ONNX Runtime runs for one inference of ``path``, by op type, in order.

    Read from a session profile (all graph optimizations on, as in measurement), so a QDQ
    model shows whether its layers became int8 kernels (QLinearConv, QGemm, ...) or stayed
    float Conv / Gemm between DequantizeLinear and QuantizeLinear.

    Args:
        path: the ONNX file.
        sample: one input batch.

    Returns:
        Op types of the executed kernels.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.export.onnx import export_onnx
        >>> from edgeopt.models import load_model
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.onnx"
        >>> out = export_onnx(load_model("zoo:lenet300"), path)
        >>> sorted(set(executed_op_types(out, np.zeros((1, 1, 28, 28), np.float32))))
        ['FusedGemm', 'Gemm', 'Reshape']
    """
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="edgeopt-profile-") as scratch:
        options.profile_file_prefix = str(Path(scratch) / "ort")
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        session.run(None, {session.get_inputs()[0].name: sample})
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    return [
        e["args"]["op_name"]
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
    ]
