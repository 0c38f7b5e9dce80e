"""The raw input of a folded model: 8-bit graph input -> Cast -> Sub / Mul / Add / Div -> Quantize.

``edgeopt export --raw-input`` (:func:`edgeopt.export.fold.fold_preprocessing`) puts a dataset's
normalization in front of an int8 QDQ model's input ``QuantizeLinear``, so the file takes the
sensor's uint8 (or int8) values. Between the graph input and that first int8 buffer every
value is a function of one 8-bit value (and, for per-channel means, of its channel), so the
whole chain becomes 256-entry tables, one per channel where the constants differ per channel.
The tables are what ONNX Runtime computes running exactly those nodes on all 256 values, so
they hold the reference's own float math and rounding, bit for bit; on a device that is one
load per pixel instead of a float subtract, multiply, divide and round.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.export.c._program import INT8
from edgeopt.export.c._program import node_label
from edgeopt.graph import TensorInfo
from edgeopt.graph import attributes

#: Element-wise operators with a constant the chain may hold (besides Cast).
CHAIN_OPS = ("Sub", "Mul", "Add", "Div")
#: ONNX element types a raw graph input may have -> the C / numpy type name.
RAW_TYPES = {2: "uint8", 3: "int8"}  # TensorProto.UINT8, TensorProto.INT8
_RAW_ELEM_TYPES = {name: elem for elem, name in RAW_TYPES.items()}
_FLOAT = 1  # TensorProto.FLOAT


@dataclass(frozen=True)
class RawChain:
    """The nodes from the raw graph input to its QuantizeLinear, and how the tables split."""

    nodes: tuple[Any, ...]  # Cast, element-wise nodes, the QuantizeLinear (last)
    dtype: str  # uint8 | int8: the graph input's type
    shape: tuple[int, ...]  # the graph input's shape, batch 1
    channels: int  # tables: 1, or the size of axis 1 when a constant differs per channel

    @property
    def quantize(self) -> Any:
        return self.nodes[-1]


def _fail(source: str, message: str) -> InputError:
    return InputError(f"{source}: {message}")


def _audio_refusal(model: Any, source: str, type_name: str) -> InputError:
    """Why an int16 (audio PCM) input cannot go to C: the folded front end is float."""
    record: dict[str, Any] = {}
    for entry in model.metadata_props:
        if entry.key == "edgeopt.preprocessing":
            record = json.loads(entry.value)
    if record.get("frontend"):
        return _fail(
            source,
            f"the graph takes {type_name} PCM through the audio front end that --raw-input folded "
            "in (DFT Conv, mel MatMul and Log, all float), which the C exporter's int8 kernels "
            "do not run; export the unfolded int8 model and compute the features on the device.",
        )
    return _fail(
        source,
        f"the graph input is {type_name}; the C exporter takes float input (quantized by the "
        "library's quantize_input function) or raw uint8 / int8 input (a model folded by "
        "--raw-input).",
    )


def find_raw_chain(
    model: Any,
    *,
    source: str,
    shapes: dict[str, TensorInfo],
    constants: dict[str, np.ndarray],
    consumers: Callable[[str], list[Any]],
) -> RawChain | None:
    """The chain from an 8-bit graph input to its QuantizeLinear; None for a float input.

    Args:
        model: the ONNX model (shapes inferred, batch 1).
        source: how to name the model in error messages.
        shapes: tensor name -> TensorInfo (shape, element type).
        constants: constant tensor name -> value.
        consumers: tensor name -> the nodes reading it.

    Raises:
        InputError: an int16 (audio) or other non-8-bit integer input, or a chain with an
            operator, a fan-out or a constant that 256-entry tables per channel cannot hold.
    """
    import onnx

    graph_input = model.graph.input[0]
    elem_type = graph_input.type.tensor_type.elem_type
    if elem_type == _FLOAT:
        return None
    type_name = onnx.TensorProto.DataType.Name(elem_type).lower()
    if elem_type not in RAW_TYPES:
        raise _audio_refusal(model, source, type_name)
    shape = tuple(shapes[graph_input.name].shape)
    name = graph_input.name
    nodes: list[Any] = []
    while True:
        readers = consumers(name)
        if len(readers) != 1 or name in {o.name for o in model.graph.output}:
            raise _fail(
                source,
                f"the raw {type_name} input reaches {len(readers)} nodes through {name!r}; the C "
                "exporter maps it to the first int8 buffer with one chain of Cast, "
                f"{', '.join(CHAIN_OPS)} and QuantizeLinear.",
            )
        node = readers[0]
        nodes.append(node)
        if node.op_type == "QuantizeLinear":
            break
        if node.op_type not in ("Cast", *CHAIN_OPS):
            raise _fail(
                source,
                f"node {node_label(node)} reads the raw {type_name} input before its "
                f"QuantizeLinear; the C exporter turns Cast, {', '.join(CHAIN_OPS)} there into "
                "a lookup table and nothing else.",
            )
        for other in _constants_of(node, name):
            if other not in constants:
                raise _fail(
                    source,
                    f"node {node_label(node)} combines the raw input with the computed tensor "
                    f"{other!r}; only constants can sit between the raw input and its "
                    "QuantizeLinear.",
                )
        name = node.output[0]
    channels = _channels(nodes, graph_input.name, shape, constants, source)
    return RawChain(tuple(nodes), RAW_TYPES[elem_type], shape, channels)


def _constants_of(node: Any, chained: str) -> list[str]:
    """The inputs of a chain node other than the chained tensor (none for a Cast)."""
    if node.op_type == "Cast":
        return []
    return [name for name in node.input if name and name != chained]


def _channels(
    nodes: list[Any],
    raw_name: str,
    shape: tuple[int, ...],
    constants: dict[str, np.ndarray],
    source: str,
) -> int:
    """1 when every constant is one value, else the channel count (axis 1) they vary along."""
    channels = 1
    chained = raw_name
    for node in nodes[:-1]:
        for name in _constants_of(node, chained):
            dims = (1,) * (len(shape) - constants[name].ndim) + constants[name].shape
            varying = [axis for axis, size in enumerate(dims) if size != 1]
            if len(dims) > len(shape) or any(axis != 1 for axis in varying):
                raise _fail(
                    source,
                    f"node {node_label(node)} applies a constant of shape "
                    f"{constants[name].shape} to the raw input of shape {shape}; the C exporter "
                    "folds constants that are one value or one per channel (axis 1).",
                )
            if varying:
                channels = shape[1]
        chained = node.output[0]
    return channels


def raw_tables(chain: RawChain, constants: dict[str, np.ndarray], opset: int) -> np.ndarray:
    """The ONNX QuantizeLinear outputs of every raw value, shape ``(channels, 256)``.

    Entry ``[c, k]`` is for raw value ``k`` (uint8) or ``k - 128`` (int8) in channel ``c``:
    ONNX Runtime runs the chain's own nodes on a batch of 256 samples of shape (C, 1, ...),
    sample ``k`` holding that raw value everywhere.
    """
    import onnx
    import onnxruntime as ort

    np_type = np.uint8 if chain.dtype == "uint8" else np.int8
    values = np.arange(256) if chain.dtype == "uint8" else np.arange(-128, 128)
    rank = len(chain.shape)
    feed_shape = (256, chain.channels, *(1,) * (rank - 2)) if rank >= 2 else (256,)
    x = np.broadcast_to(values.reshape(256, *(1,) * (rank - 1)), feed_shape).astype(np_type)
    first = chain.nodes[0]
    raw_name = first.input[0]
    inner = {raw_name} | {name for node in chain.nodes for name in node.output}
    used = {name for node in chain.nodes for name in node.input if name and name not in inner}
    out = chain.quantize.output[0]
    q_type = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(_zero_point(chain, constants)).dtype)
    graph = onnx.helper.make_graph(
        list(chain.nodes),
        "raw_input_table",
        [onnx.helper.make_tensor_value_info(raw_name, _RAW_ELEM_TYPES[chain.dtype], feed_shape)],
        [onnx.helper.make_tensor_value_info(out, q_type, feed_shape)],
        [onnx.numpy_helper.from_array(np.asarray(constants[name]), name) for name in sorted(used)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = np.asarray(session.run(None, {raw_name: x})[0]).reshape(256, -1)
    if y.shape[1] != chain.channels:
        raise AssertionError(f"raw tables of shape {y.shape}, {chain.channels} channels expected")
    return y.T.astype(np.int64)


def _zero_point(chain: RawChain, constants: dict[str, np.ndarray]) -> np.ndarray:
    q = chain.quantize
    if len(q.input) > 2 and q.input[2]:
        return constants[q.input[2]]
    output_dtype = attributes(q).get("output_dtype", 0)
    return np.zeros(1, dtype=np.int8 if output_dtype == INT8 else np.uint8)


def table_size(chain: RawChain) -> int:
    """Values per channel the lookup maps (the input's size over its channels)."""
    return math.prod(chain.shape) // chain.channels
