"""Read a ``.tflite`` flatbuffer and check it before the import converts it.

The file is untrusted: its identifier (``TFL3``), every vector length (bounded by the file's size
before the schema's object API decodes it), every index, shape, buffer range, element type and
int8 scale is checked here, each failure one sentence naming the file and the tensor or operator.
The rules are TensorFlow Lite's ``schema.fbs`` (``Model``, ``SubGraph``, ``Tensor``,
``Buffer``: ``offset``/``size`` for data outside the flatbuffer, ``QuantizationParameters``) and
the quantization spec (https://ai.google.dev/edge/litert/models/quantization_spec: int8
activations per tensor, weights per tensor or per channel along ``quantized_dimension``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.models._tflite_ops import operator_name
from edgeopt.models._tflite_ops import safe_name as _safe_name

#: Bounds checked before anything is allocated (a microcontroller model is far below them).
MAX_FILE_BYTES = 1 << 30
MAX_DIMENSION = 1 << 24
MAX_ELEMENTS = 1 << 28
MAX_RANK = 6
#: schema.fbs TensorType -> numpy dtype, for the types a constant may have
_NUMPY = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64, 9: np.int8}
FLOAT32, FLOAT16, INT32, INT8 = 0, 1, 2, 9


def _schema() -> Any:
    from edgeopt._optional import require

    return require("ai_edge_litert.schema_py_generated", purpose="reading .tflite files")


@dataclass(frozen=True)
class Quant:
    """One int8 tensor's quantization: scales and zero points (one, or one per channel)."""

    scale: np.ndarray  # float32
    zero: np.ndarray  # int64
    axis: int

    @property
    def is_per_tensor(self) -> bool:
        return self.scale.size == 1


def read_flatbuffer(path: Path) -> Any:
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


class TfliteFile:
    """The decoded file: its one subgraph's tensors, buffers and operator codes, checked."""

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
        self.folded: dict[int, np.ndarray] = {}  # constants made by DEQUANTIZE of float16

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
        if tensor.type == INT8:
            if quant is None or quant.scale is None or len(quant.scale) == 0:
                raise self.fail(f"int8 tensor {name} has no scale.")
            scale = np.asarray(quant.scale, dtype=np.float32)
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise self.fail(f"int8 tensor {name} has a zero, negative or non-finite scale.")
        return shape

    def label(self, index: int, tensor: Any | None = None) -> str:
        tensor = tensor if tensor is not None else self.tensors[index]
        return f"{index} ({_safe_name(tensor.name)!r})"

    def quant(self, index: int) -> Quant | None:
        """The int8 tensor's quantization (None for other types)."""
        tensor = self.tensors[index]
        if tensor.type != INT8:
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
        return Quant(scale, zero, axis)

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
