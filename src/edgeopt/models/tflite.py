"""Import a ``.tflite`` file as an ONNX model: float stays float, int8 becomes QDQ with the
file's own scales and zero points.

The flatbuffer is read with the schema bindings LiteRT ships (``ai_edge_litert``'s
``schema_py_generated``, generated from TensorFlow Lite's ``schema.fbs``), never with
TensorFlow. Each operator becomes the ONNX operators that compute what TensorFlow Lite Micro's
reference kernels compute (``tensorflow/lite/kernels/internal/reference/``, the integer ones in
``reference/integer_ops/``), in the QDQ form edgeopt's own quantizer writes (see
:mod:`edgeopt.stages.quantize.qdq`), so profiling, the exact int8 session
(:mod:`edgeopt.measure.int8`) and the C export read an imported file as one of edgeopt's own:

- every int8 activation is a ``QuantizeLinear -> DequantizeLinear`` pair with the tensor's
  scale and zero point, the operator between in float (the quantization spec,
  https://ai.google.dev/edge/litert/models/quantization_spec: ``real = scale * (q - zero)``);
- weights are int8 constants read by a ``DequantizeLinear``, per channel along the axis the
  file's ``quantized_dimension`` names (after the layout change below); int32 biases are read
  with the scale ``input_scale * weight_scale`` (the spec's rule; the kernels add the integer
  to the accumulator and ignore the bias's own scale, which in old files is even on the wrong
  axis);
- the model's input and output keep the file's shapes and layout (NHWC), so the same arrays
  feed both runtimes; an int8 file takes and returns float (a ``QuantizeLinear`` with the input
  tensor's scale first, a ``DequantizeLinear`` last), as edgeopt's own QDQ files do;
- convolutions and pooling run in ONNX's NCHW: a ``Transpose`` is inserted where a tensor
  changes layout, so a flatten after a convolution keeps TFLite's NHWC element order;
- ``SAME`` padding is TFLite's (``ComputePaddingHeightWidth``: the smaller half before), a
  fused activation on an int8 output is the clamp to the output's quantized range that
  ``CalculateActivationRangeQuantized`` computes (a ``Relu`` or a ``Clip`` before the
  ``QuantizeLinear``, which gives that clamp exactly); a fused TANH or SIGN_BIT on a float
  output is no activation, as in TFLite's float kernels (``CalculateActivationRange``).

Rounding differs in one place: TFLite requantizes with a 31-bit fixed-point multiplier
(``MultiplyByQuantizedMultiplier``), ONNX with the float scale ratio; an output differs from
TensorFlow Lite Micro's by at most a step where a value falls near a rounding tie
(``tests/models/test_tflite_import.py`` holds the bound on every example model).

Every file is untrusted: the identifier, every vector length, index, shape and buffer range is
checked before anything is allocated, and tensor names reach the ONNX graph only through an
allow-list (:func:`_safe_name`).
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.models._tflite_file import FLOAT32
from edgeopt.models._tflite_file import INT8
from edgeopt.models._tflite_file import Quant
from edgeopt.models._tflite_file import TfliteFile
from edgeopt.models._tflite_file import read_flatbuffer
from edgeopt.models._tflite_ops import OPERATORS
from edgeopt.models._tflite_ops import convert_operator
from edgeopt.models._tflite_ops import safe_name as _safe_name

if TYPE_CHECKING:
    import onnx

__all__ = ["SUPPORTED_OPERATORS", "import_tflite", "tflite_to_onnx"]

#: The TFLite builtin operators the import converts (schema.fbs ``BuiltinOperator``).
SUPPORTED_OPERATORS = tuple(sorted(OPERATORS))

_OPSET = 18
_IR_VERSION = 10
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


@dataclass
class _Value:
    """An activation as ONNX holds it: the float tensor, its shape and layout."""

    name: str
    shape: tuple[int, ...]
    is_nchw: bool


def tflite_to_onnx(path: str | Path) -> onnx.ModelProto:
    """Convert a ``.tflite`` file (float, full int8, or int8 with float input and output) to ONNX.

    What each operator becomes follows TensorFlow Lite's ``schema.fbs`` (options, padding,
    fused activations) and TensorFlow Lite Micro's reference kernels (the arithmetic); int8
    tensors become ``QuantizeLinear``/``DequantizeLinear`` pairs with the file's scales and
    zero points (the quantization spec, https://ai.google.dev/edge/litert/models/quantization_spec).
    The module docstring lists the rules.

    Args:
        path: the ``.tflite`` file (read, never written).

    Returns:
        The ONNX model (opset 18), with the file's input and output shapes.

    Raises:
        InputError: the ``tflite`` extra is missing, or the file is not a TFLite flatbuffer,
            is damaged, has several subgraphs, or uses an operator, type or option the import
            does not cover (named).

    Example:
        >>> from edgeopt.testing import shared_data_dir
        >>> folder = shared_data_dir("tflite-micro")
        >>> model = tflite_to_onnx(folder / "hello_world_int8.tflite") if folder else None
        >>> model is None or model.graph.node[0].op_type == "QuantizeLinear"
        True
    """
    path = Path(path)
    model = read_flatbuffer(path)
    return _Importer(model, path).run()


class _Importer(TfliteFile):
    """One pass over the subgraph's operators, in the file's order (TFLite's execution order)."""

    def __init__(self, model: Any, path: Path) -> None:
        super().__init__(model, path)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.taken: set[str] = set()
        self.values: dict[int, dict[bool, _Value]] = {}  # tensor -> layout (is_nchw) -> value
        self.constant_cache: dict[tuple[Any, ...], str] = {}

    # -- ONNX building -------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        base = _safe_name(base)
        name, number = base, 0
        while name in self.taken:
            number += 1
            name = f"{base}_{number}"
        self.taken.add(name)
        return name

    def node(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        from onnx import helper

        out = self.fresh(base)
        # node names are what profiles list: the last two parts of the tensor's path
        short = "/".join(_safe_name(base).split("/")[-2:])[-40:]
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(short), **attrs))
        return out

    def init(self, values: np.ndarray, base: str) -> str:
        from onnx import numpy_helper

        values = np.asarray(values)  # a numpy scalar stays 0-D (ascontiguousarray makes it 1-D)
        key = (base, values.dtype.str, values.shape, values.tobytes())
        if key not in self.constant_cache:
            name = self.fresh(base)
            self.initializers.append(numpy_helper.from_array(values.copy(order="C"), name))
            self.constant_cache[key] = name
        return self.constant_cache[key]

    def qdq(self, source: str, quant: Quant, base: str) -> str:
        """``source`` (float) through QuantizeLinear and DequantizeLinear with ``quant``."""
        scale = self.init(np.float32(quant.scale[0]), f"{base}_scale")
        zero = self.init(np.int8(quant.zero[0]), f"{base}_zero_point")
        q = self.node("QuantizeLinear", [source, scale, zero], f"{base}_quantized")
        return self.node("DequantizeLinear", [q, scale, zero], base)

    def dequantized_constant(self, values: np.ndarray, quant: Quant, axis: int, base: str) -> str:
        """Integer constant ``values`` read by a DequantizeLinear (per channel along ``axis``)."""
        q = self.init(values, f"{base}_quantized")
        if quant.is_per_tensor:
            scale = self.init(np.float32(quant.scale[0]), f"{base}_scale")
            zero = self.init(np.asarray(quant.zero[0]).astype(values.dtype), f"{base}_zero_point")
            return self.node("DequantizeLinear", [q, scale, zero], base)
        scale = self.init(quant.scale.astype(np.float32), f"{base}_scale")
        zero = self.init(quant.zero.astype(values.dtype), f"{base}_zero_point")
        return self.node("DequantizeLinear", [q, scale, zero], base, axis=axis)

    # -- tensors in and out of operators -------------------------------------------------------

    def read(self, index: int, *, is_nchw: bool, where: str, rank: int | None = None) -> str:
        """The float ONNX tensor holding TFLite tensor ``index`` in the layout asked for.

        A constant is made (NCHW: brought to rank 4 and transposed; ``rank``: leading ones
        added so that it broadcasts as TFLite broadcasts); an activation in the other layout
        gets a Transpose (for int8, a QDQ pair after it with the same scale).
        """
        constant = self.constant(index)
        if constant is not None:
            return self.constant_input(index, constant, is_nchw=is_nchw, rank=rank)
        held = self.values.get(index)
        if not held:
            raise self.fail(
                f"{where} reads tensor {self.label(index)} before any operator writes it."
            )
        if is_nchw in held:
            return held[is_nchw].name
        other = held[not is_nchw]
        if len(other.shape) != 4:
            return other.name  # below rank 4 the two layouts are one
        perm = _NHWC_TO_NCHW if is_nchw else _NCHW_TO_NHWC
        base = _safe_name(self.tensors[index].name) + ("_nchw" if is_nchw else "_nhwc")
        moved = self.node("Transpose", [other.name], f"{base}_float", perm=list(perm))
        quant = self.quant(index)
        if quant is not None:
            moved = self.qdq(moved, quant, base)
        held[is_nchw] = _Value(moved, tuple(other.shape[p] for p in perm), is_nchw)
        return moved

    def constant_input(
        self, index: int, values: np.ndarray, *, is_nchw: bool, rank: int | None
    ) -> str:
        quant = self.quant(index)
        base = _safe_name(self.tensors[index].name)
        if rank is not None and values.ndim < rank:
            values = values.reshape((1,) * (rank - values.ndim) + values.shape)
        axis = quant.axis + (values.ndim - len(self.shapes[index])) if quant is not None else 0
        if is_nchw and values.ndim == 4:
            values = values.transpose(_NHWC_TO_NCHW)
            axis = _NHWC_TO_NCHW.index(axis)
        if quant is not None:
            return self.dequantized_constant(values, quant, axis, base)
        if values.dtype != np.float32:
            raise self.fail(
                f"tensor {self.label(index)} is a {values.dtype} constant where a float or int8 "
                "operand is expected."
            )
        return self.init(values, base)

    def layout_of(self, index: int) -> bool | None:
        """True when the activation is held in NCHW only, None for a constant."""
        if self.constant(index) is not None:
            return None
        held = self.values.get(index, {})
        return True in held and False not in held

    def write(
        self, index: int, result: str, *, is_nchw: bool, activation: int = 0, op: str
    ) -> None:
        """Record ``result`` (float) as TFLite tensor ``index``: the fused activation, then for an
        int8 tensor its QDQ pair."""
        shape = self.shapes[index]
        quant = self.quant(index)
        base = _safe_name(self.tensors[index].name)
        result = self.activation(result, activation, quant, base, op)
        tensor_type = self.tensors[index].type
        if quant is not None:
            if not quant.is_per_tensor:
                raise self.fail(
                    f"activation {self.label(index)} is quantized per channel; TFLite Micro "
                    "quantizes activations per tensor."
                )
            result = self.qdq(result, quant, base)
        elif tensor_type != FLOAT32:
            kind = self.type_names.get(int(tensor_type), str(tensor_type))
            raise self.fail(
                f"{op} writes tensor {self.label(index)} of type {kind}; edgeopt imports float32 "
                "and int8 models."
            )
        layout_shape = (
            tuple(shape[p] for p in _NHWC_TO_NCHW) if is_nchw and len(shape) == 4 else shape
        )
        self.values[index] = {is_nchw and len(shape) == 4: _Value(result, layout_shape, is_nchw)}

    def activation(self, result: str, kind: int, quant: Quant | None, base: str, op: str) -> str:
        """A fused activation (schema.fbs ``ActivationFunctionType``) after ``result``.

        On an int8 output it is the clamp TensorFlow Lite Micro applies
        (``CalculateActivationRangeQuantized``: the bounds rounded half away from zero in the
        output's scale, within int8), written as the Relu or Clip whose float bounds quantize
        to exactly those integers; none when the clamp is int8's own range.
        """
        if kind == 0:
            return result
        bounds = {1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}
        if kind not in bounds:
            name = {4: "TANH", 5: "SIGN_BIT"}.get(kind, str(kind))
            if kind in (4, 5) and quant is None:
                # the float kernels of these operators clamp with CalculateActivationRange
                # (kernels/internal/common.h), which leaves TANH and SIGN_BIT unclamped: LiteRT
                # computes no activation, so neither does the import
                return result
            raise self.fail(
                f"{op} has the fused activation {name} on an int8 output, which TFLite's int8 "
                "kernels refuse (CalculateActivationRangeQuantized)."
            )
        low, high = bounds[kind]
        if quant is None:
            if high is None:
                return self.node("Relu", [result], f"{base}_relu")
            lo, hi = self.init(np.float32(low), "clip_min"), self.init(np.float32(high), "clip_max")
            return self.node("Clip", [result, lo, hi], f"{base}_clip")
        scale, zero = float(quant.scale[0]), int(quant.zero[0])

        def quantize(real: float) -> int:
            ratio = float(np.float32(real) / np.float32(scale))
            return zero + int(math.copysign(math.floor(abs(ratio) + 0.5), ratio))  # TfLiteRound

        q_low = max(-128, quantize(low))
        q_high = 127 if high is None else min(127, quantize(high))
        if (q_low, q_high) == (-128, 127):
            return result
        if q_low == zero and q_high == 127:
            return self.node("Relu", [result], f"{base}_relu")
        lo = self.init(np.float32((q_low - zero) * scale), f"{base}_min")
        hi = self.init(np.float32((q_high - zero) * scale), f"{base}_max")
        return self.node("Clip", [result, lo, hi], f"{base}_clip")

    def reshape(self, source: str, shape: tuple[int, ...], quant: Quant | None, base: str) -> str:
        target = self.init(np.asarray(shape, dtype=np.int64), f"{base}_shape")
        out = self.node("Reshape", [source, target], f"{base}_reshaped")
        return self.qdq(out, quant, f"{base}_reshaped") if quant is not None else out

    # -- the walk ------------------------------------------------------------------------------

    def run(self) -> onnx.ModelProto:
        import onnx
        from onnx import helper

        graph = self.check_structure()
        in_index = self.tensor_index(graph.inputs[0], "the graph")
        out_index = self.tensor_index(graph.outputs[0], "the graph")
        in_name = self.fresh(self.tensors[in_index].name)
        out_name = self.fresh(self.tensors[out_index].name)
        if in_index == out_index or self.constant(in_index) is not None:
            raise self.fail("the graph input is a constant or the output itself.")
        in_type = self.tensors[in_index].type
        if in_type not in (FLOAT32, INT8):
            kind = self.type_names.get(int(in_type), str(in_type))
            raise self.fail(
                f"the input {self.label(in_index)} has type {kind}; edgeopt imports float32 and "
                "int8 inputs."
            )
        quant = self.quant(in_index)
        first = in_name
        if quant is not None:
            if not quant.is_per_tensor:
                raise self.fail(f"the input {self.label(in_index)} is quantized per channel.")
            first = self.qdq(in_name, quant, f"{in_name}_int8")
        self.values[in_index] = {False: _Value(first, self.shapes[in_index], False)}
        for position, operator in enumerate(graph.operators or []):
            try:
                convert_operator(self, position, operator)
            except (ValueError, IndexError, TypeError, KeyError, AttributeError) as exc:
                if isinstance(exc, InputError):
                    raise
                # a damaged file whose shapes do not fit together (numpy says where)
                detail = " ".join(str(exc).split())[:120]
                raise self.fail(
                    f"operator {position} has inputs that do not fit ({detail})."
                ) from None
        final = self.read(out_index, is_nchw=False, where="the graph output")
        if self.constant(out_index) is not None:
            raise self.fail("the graph output is a constant.")
        self.rename(final, out_name)
        self.prune(out_name)
        out_type = onnx.TensorProto.FLOAT
        graph_proto = helper.make_graph(
            self.nodes,
            _safe_name(self.path.stem),
            [helper.make_tensor_value_info(in_name, out_type, list(self.shapes[in_index]))],
            [helper.make_tensor_value_info(out_name, out_type, list(self.shapes[out_index]))],
            self.initializers,
        )
        model = helper.make_model(
            graph_proto,
            opset_imports=[helper.make_opsetid("", _OPSET)],
            producer_name="edgeopt.models.tflite",
        )
        model.ir_version = _IR_VERSION
        helper.set_model_props(
            model,
            {
                "edgeopt.source": f"tflite:{_safe_name(self.path.name, limit=120)}",
                "edgeopt.tflite_description": _safe_name(self.model.description, limit=120),
            },
        )
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            detail = " ".join(str(exc).split())[:160]
            raise self.fail(f"the import is not a valid ONNX model ({detail}).") from None
        return model

    def rename(self, old: str, new: str) -> None:
        if old == new:
            return
        for node in self.nodes:
            for field in (node.input, node.output):
                for position, name in enumerate(field):
                    if name == old:
                        field[position] = new
        if old in (i.name for i in self.initializers) or not any(
            new in n.output for n in self.nodes
        ):
            from onnx import helper

            self.nodes.append(helper.make_node("Identity", [old], [new]))

    def prune(self, output: str) -> None:
        """Drop the nodes and constants the output does not need (a layout or DQ made but
        not read)."""
        needed, kept = {output}, []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.output):
                kept.append(node)
                needed.update(node.input)
        self.nodes = kept[::-1]
        self.initializers = [i for i in self.initializers if i.name in needed]


# -- loading as a model handle --------------------------------------------------------------------

_FOLDER: list[Path] = []


def _private_folder() -> Path:
    """This process's folder for imported files, removed at exit (never beside the input)."""
    from edgeopt._io import scratch_prefix

    if not _FOLDER:
        folder = Path(tempfile.mkdtemp(prefix=scratch_prefix("tflite-")))
        atexit.register(shutil.rmtree, folder, True)
        _FOLDER.append(folder)
    return _FOLDER[0]


def import_tflite(path: Path) -> tuple[onnx.ModelProto, Path]:
    """Import a ``.tflite`` file and write the ONNX in a private temporary folder that is
    removed when the process exits: a model handle needs a file, and none may be written
    beside the user's.

    Args:
        path: the ``.tflite`` file.

    Returns:
        The ONNX model and the file it was written to.

    Raises:
        InputError: see :func:`tflite_to_onnx`.
    """
    import onnx

    model = tflite_to_onnx(path)
    folder = Path(tempfile.mkdtemp(dir=_private_folder()))
    onnx_path = folder / f"{_safe_name(path.stem, limit=80).replace('/', '_')}.onnx"
    onnx.save(model, str(onnx_path))
    return model, onnx_path
