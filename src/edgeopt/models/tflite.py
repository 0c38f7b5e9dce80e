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
  ``QuantizeLinear``, which gives that clamp exactly).

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
from edgeopt.models._tflite_ops import OPERATORS
from edgeopt.models._tflite_ops import convert_operator
from edgeopt.models._tflite_ops import operator_name
from edgeopt.models._tflite_ops import safe_name as _safe_name

if TYPE_CHECKING:
    import onnx

__all__ = ["SUPPORTED_OPERATORS", "import_tflite", "tflite_to_onnx"]

#: The TFLite builtin operators the import converts (schema.fbs ``BuiltinOperator``).
SUPPORTED_OPERATORS = tuple(sorted(OPERATORS))

_OPSET = 18
_IR_VERSION = 10
#: Bounds checked before anything is allocated (a microcontroller model is far below them).
MAX_FILE_BYTES = 1 << 30
MAX_DIMENSION = 1 << 24
MAX_ELEMENTS = 1 << 28
MAX_RANK = 6
#: schema.fbs TensorType -> numpy dtype, for the types a constant may have
_NUMPY = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64, 9: np.int8}
_FLOAT32, _FLOAT16, _INT32, _INT8 = 0, 1, 2, 9
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


def _schema() -> Any:
    from edgeopt._optional import require

    return require("ai_edge_litert.schema_py_generated", purpose="reading .tflite files")


@dataclass(frozen=True)
class _Quant:
    """One int8 tensor's quantization: scales and zero points (one, or one per channel)."""

    scale: np.ndarray  # float32
    zero: np.ndarray  # int64
    axis: int

    @property
    def is_per_tensor(self) -> bool:
        return self.scale.size == 1


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
    model = _read_model(path)
    return _Importer(model, path).run()


def _read_model(path: Path) -> Any:
    """The flatbuffer as the schema's object tree, after the checks that keep decoding bounded."""
    schema = _schema()
    if not path.is_file():
        raise InputError(f"{path}: model file does not exist.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"{path}: {size:,} bytes, above the {MAX_FILE_BYTES:,} a .tflite may have."
        )
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier).")
    try:
        root = schema.Model.GetRootAs(data, 0)
        # every vector of tables holds 4-byte offsets, so none can be longer than the file
        limit = len(data) // 4
        counts = [root.SubgraphsLength(), root.BuffersLength(), root.OperatorCodesLength()]
        if root.SubgraphsLength() >= 1:
            graph = root.Subgraphs(0)
            counts += [graph.TensorsLength(), graph.OperatorsLength()]
        if any(count > limit for count in counts):
            raise InputError(f"{path}: damaged TFLite file (a vector longer than the file).")
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except InputError:
        raise
    except Exception as exc:  # flatbuffers raises struct.error, IndexError, ValueError, ...
        raise InputError(
            f"{path}: damaged or truncated TFLite file ({type(exc).__name__} while decoding)."
        ) from None
    model._edgeopt_bytes = data
    return model


class _Importer:
    """One pass over the subgraph's operators, in the file's order (TFLite's execution order)."""

    def __init__(self, model: Any, path: Path) -> None:
        self.model = model
        self.path = path
        self.data: bytes = model._edgeopt_bytes
        schema = _schema()
        self.op_names = {
            value: key for key, value in vars(schema.BuiltinOperator).items() if key.isupper()
        }
        self.type_names = {
            value: key for key, value in vars(schema.TensorType).items() if key.isupper()
        }
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.taken: set[str] = set()
        self.values: dict[int, dict[bool, _Value]] = {}  # tensor -> layout (is_nchw) -> value
        self.constant_cache: dict[tuple[Any, ...], str] = {}
        self.folded: dict[int, np.ndarray] = {}  # constants made by DEQUANTIZE of float16
        self.is_int8 = False

    # -- checks --------------------------------------------------------------------------------

    def fail(self, message: str) -> InputError:
        return InputError(f"{self.path}: {message}")

    def check_structure(self) -> Any:
        if not self.model.subgraphs:
            raise self.fail("the file has no subgraph.")
        if len(self.model.subgraphs) != 1:
            raise self.fail(
                f"the file has {len(self.model.subgraphs)} subgraphs; edgeopt imports models "
                "with one (control flow and signatures with several are not supported)."
            )
        graph = self.model.subgraphs[0]
        self.tensors = graph.tensors or []
        self.buffers = self.model.buffers or []
        self.codes = self.model.operatorCodes or []
        for position, operator in enumerate(graph.operators or []):
            operator_name(self, position, operator)  # refuse what is not imported, first
        self.shapes = [self.check_tensor(index, t) for index, t in enumerate(self.tensors)]
        inputs = [] if graph.inputs is None else [int(i) for i in graph.inputs]
        outputs = [] if graph.outputs is None else [int(i) for i in graph.outputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise self.fail(
                f"the model has {len(inputs)} inputs and {len(outputs)} outputs; edgeopt imports "
                "models with one of each."
            )
        for index in (*inputs, *outputs):
            self.tensor_index(index, "the graph")
        return graph

    def tensor_index(self, index: Any, where: str) -> int:
        index = int(index)
        if not 0 <= index < len(self.tensors):
            raise self.fail(f"{where} names tensor {index}, but the file has {len(self.tensors)}.")
        return index

    def check_tensor(self, index: int, tensor: Any) -> tuple[int, ...]:
        name = self.label(index, tensor)
        shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
        if len(shape) > MAX_RANK or any(d < 0 or d > MAX_DIMENSION for d in shape):
            raise self.fail(
                f"tensor {name} has shape {list(shape)[:8]}, outside what edgeopt reads."
            )
        if math.prod(shape) > MAX_ELEMENTS:
            raise self.fail(
                f"tensor {name} has {math.prod(shape):,} elements, above {MAX_ELEMENTS:,}."
            )
        if tensor.sparsity is not None:
            raise self.fail(f"tensor {name} is sparse; edgeopt imports dense tensors only.")
        if not 0 <= tensor.buffer < max(len(self.buffers), 1):
            raise self.fail(
                f"tensor {name} names buffer {tensor.buffer}, but the file has {len(self.buffers)}."
            )
        quant = tensor.quantization
        if tensor.type == _INT8:
            if quant is None or quant.scale is None or len(quant.scale) == 0:
                raise self.fail(f"int8 tensor {name} has no scale.")
            scale = np.asarray(quant.scale, dtype=np.float32)
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise self.fail(f"int8 tensor {name} has a zero, negative or non-finite scale.")
        return shape

    def label(self, index: int, tensor: Any | None = None) -> str:
        tensor = tensor if tensor is not None else self.tensors[index]
        return f"{index} ({_safe_name(tensor.name)!r})"

    def quant(self, index: int) -> _Quant | None:
        """The int8 tensor's quantization (None for other types)."""
        tensor = self.tensors[index]
        if tensor.type != _INT8:
            return None
        q = tensor.quantization
        scale = np.asarray(q.scale, dtype=np.float32).ravel()
        zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], dtype=np.int64).ravel()
        if zero.size == 1 and scale.size > 1:
            zero = np.zeros(scale.size, np.int64) + zero[0]
        if zero.size != scale.size or np.any(zero < -128) or np.any(zero > 127):
            raise self.fail(
                f"int8 tensor {self.label(index)} has zero points that do not fit its scales or "
                "int8."
            )
        axis = int(q.quantizedDimension or 0)
        shape = self.shapes[index]
        if scale.size > 1 and (axis >= len(shape) or shape[axis] != scale.size):
            # TFLite Micro ignores a bias's axis (person_detect's biases say 3); a scale per
            # element of a 1-D tensor is per channel along its only axis
            if len(shape) == 1 and shape[0] == scale.size:
                axis = 0
            else:
                raise self.fail(
                    f"int8 tensor {self.label(index)} has {scale.size} scales along axis {axis} "
                    f"of shape {list(shape)}."
                )
        return _Quant(scale, zero, axis)

    def constant(self, index: int) -> np.ndarray | None:
        """A constant tensor's values (None for an activation), its buffer range checked."""
        if index in self.folded:
            return self.folded[index]
        tensor = self.tensors[index]
        buffer = self.buffers[tensor.buffer] if self.buffers else None
        raw: bytes | np.ndarray | None = None
        if buffer is not None and buffer.data is not None and len(buffer.data):
            raw = np.asarray(buffer.data, dtype=np.uint8)
        elif buffer is not None and buffer.offset > 1:
            end = int(buffer.offset) + int(buffer.size)
            if buffer.size < 0 or end > len(self.data):
                raise self.fail(
                    f"tensor {self.label(index)} points outside the file (bytes "
                    f"{buffer.offset}..{end})."
                )
            raw = self.data[int(buffer.offset) : end]
        if raw is None:
            return None
        dtype = _NUMPY.get(int(tensor.type))
        if dtype is None:
            kind = self.type_names.get(int(tensor.type), str(tensor.type))
            raise self.fail(
                f"constant tensor {self.label(index)} has type {kind}; edgeopt reads float32, "
                "float16, int8, int32 and int64 constants."
            )
        shape = self.shapes[index]
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise self.fail(
                f"tensor {self.label(index)} holds {len(raw):,} bytes, not the {expected:,} its "
                f"shape {list(shape)} needs."
            )
        return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape)

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

    def qdq(self, source: str, quant: _Quant, base: str) -> str:
        """``source`` (float) through QuantizeLinear and DequantizeLinear with ``quant``."""
        scale = self.init(np.float32(quant.scale[0]), f"{base}_scale")
        zero = self.init(np.int8(quant.zero[0]), f"{base}_zero_point")
        q = self.node("QuantizeLinear", [source, scale, zero], f"{base}_quantized")
        return self.node("DequantizeLinear", [q, scale, zero], base)

    def dequantized_constant(self, values: np.ndarray, quant: _Quant, axis: int, base: str) -> str:
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
        elif tensor_type != _FLOAT32:
            kind = self.type_names.get(int(tensor_type), str(tensor_type))
            raise self.fail(
                f"{op} writes tensor {self.label(index)} of type {kind}; edgeopt imports float32 "
                "and int8 models."
            )
        layout_shape = (
            tuple(shape[p] for p in _NHWC_TO_NCHW) if is_nchw and len(shape) == 4 else shape
        )
        self.values[index] = {is_nchw and len(shape) == 4: _Value(result, layout_shape, is_nchw)}

    def activation(self, result: str, kind: int, quant: _Quant | None, base: str, op: str) -> str:
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
            if kind == 4 and quant is None:
                return self.node("Tanh", [result], f"{base}_tanh")
            raise self.fail(
                f"{op} has the fused activation {name} on an int8 output, which TFLite Micro does "
                "not compute."
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

    def reshape(self, source: str, shape: tuple[int, ...], quant: _Quant | None, base: str) -> str:
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
        self.is_int8 = any(t.type == _INT8 for t in self.tensors)
        in_name = self.fresh(self.tensors[in_index].name)
        out_name = self.fresh(self.tensors[out_index].name)
        if in_index == out_index or self.constant(in_index) is not None:
            raise self.fail("the graph input is a constant or the output itself.")
        in_type = self.tensors[in_index].type
        if in_type not in (_FLOAT32, _INT8):
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
                raise self.fail(f"operator {position} has inputs that do not fit ({detail}).")
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
