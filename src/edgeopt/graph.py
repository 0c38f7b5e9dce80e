"""Read an ONNX graph as layers: op kind, dtype, output shape, parameters, MACs, bytes moved.

Counts are taken on the exported file with the batch fixed to 1, or, for a profile, at the shapes
the inputs are bound to (:mod:`edgeopt.feed`: a batch the file fixes is kept). MACs are counted
for convolutions, matrix products (as MLPerf Tiny and most papers count them), recurrent cells,
attention and two-operand Einsum; every other layer costs element operations ("ops"); a layer
whose operator or shapes :mod:`edgeopt.opcost` does not know is uncounted (``is_counted``), and
listed as such by the profile rather than counted as free (the formulas: :mod:`edgeopt.opcost`).
In a QDQ graph (QuantizeLinear / DequantizeLinear around float ops, the form ONNX Runtime runs
with int8 kernels) a layer of an int8-capable kind (``INT8_OP_TYPES``) whose input comes from
DequantizeLinear is an int8 layer, and the Q/DQ nodes themselves are not layers: an int8 runtime
fuses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.feed import BoundInput
from edgeopt.feed import generated_feeds
from edgeopt.opcost import CONV_OPS
from edgeopt.opcost import MATMUL_OPS
from edgeopt.opcost import POOL_OPS
from edgeopt.opcost import VIEW_OPS
from edgeopt.opcost import op_cost

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Activations every deployment runtime fuses into the convolution or matrix product before them
# (TFLite's fused_activation_function, ONNX Runtime's Conv+Relu fusion).
FUSABLE_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu"}
INT8_TYPES = {2, 3, 21, 22}
#: Operators whose QDQ form ONNX Runtime's CPU provider runs with int8 kernels (checked with
#: session profiling, ONNX Runtime 1.32, uint8 activations): QLinearConv, QGemm, QLinearMatMul,
#: QLinearAdd / Mul, QLinear(Global)AveragePool, QLinearSigmoid / LeakyRelu / Concat, and int8
#: data movement; ReLU and Clip fold into the range before them. Softmax has an int8 kernel too
#: but the quantizer leaves it out: its output is usually the network's, and 8-bit probabilities
#: would tie. ConvTranspose is quantized for the devices' int8 kernels (the C library's) though
#: ONNX Runtime's CPU provider computes its QDQ form in float; the exact int8 measurement
#: (``measure.int8``) rewrites it as a QLinearConv. Any other operator between Q/DQ pairs runs in
#: float.
INT8_OP_TYPES = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Relu",
        "Clip",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Add",
        "Mul",
        "Sigmoid",
        "LeakyRelu",
        "Concat",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
    }
)  # UINT8, INT8, UINT4, INT4 (onnx.TensorProto)


@dataclass(frozen=True)
class Layer:
    """One operator of the exported graph as the estimator and the reports see it."""

    name: str
    op_type: str
    kind: str  # conv | depthwise | fc | pool | elementwise | data | fused
    dtype: str  # int8 | float32
    output_shape: tuple[int, ...]
    params: int
    macs: int
    output_elements: int
    output_bytes: int
    bytes_moved: int
    live_bytes: int = 0  # activation bytes live while this layer runs (filled by memory.py)
    ops: int = 0  # element operations besides the MACs (edgeopt.opcost)
    is_counted: bool = True  # False: operator or shapes unknown, MACs and ops a lower bound
    #: A 1x1, stride-1, unpadded, ungrouped Conv: a matrix product over channels, which C
    #: libraries (edgeopt's among them) run with a kernel of its own.
    is_pointwise: bool = False
    kernel_elements: int = 1  # a convolution's kernel window (kh * kw); 1 for other layers

    @property
    def label(self) -> str:
        """``name (OpType)``: how a profile lists an uncounted layer."""
        return f"{self.name} ({self.op_type})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "kind": self.kind,
            "dtype": self.dtype,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "macs": self.macs,
            "output_bytes": self.output_bytes,
            "live_bytes": self.live_bytes,
            "ops": self.ops,
            "is_counted": self.is_counted,
        }


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    elem_type: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        import onnx

        if self.elem_type in (21, 22):  # 4-bit types: half a byte, rounded up per tensor below
            return 1
        return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type)).itemsize)


@dataclass(frozen=True)
class Graph:
    """An ONNX graph with batch-1 shapes of every tensor and which tensors are constant."""

    model: Any  # onnx.ModelProto, inputs bound (batch 1 by default) and shapes inferred
    tensors: dict[str, TensorInfo]
    constants: set[str]
    producers: dict[str, Any]
    consumers: dict[str, list[int]]

    @property
    def nodes(self) -> list[Any]:
        return list(self.model.graph.node)

    @property
    def inputs(self) -> list[str]:
        return [i.name for i in self.model.graph.input if i.name not in self.constants]

    @property
    def outputs(self) -> list[str]:
        return [o.name for o in self.model.graph.output]


def _with_batch_one(model: Any, input_shape: tuple[int, ...] | None = None) -> Any:
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {init.name for init in fixed.graph.initializer}
    for value in fixed.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].Clear()
            dims[0].dim_value = 1
        if input_shape is not None and len(dims) == len(input_shape) + 1:
            for dim, size in zip(list(dims)[1:], input_shape, strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    del fixed.graph.value_info[:]
    for value in fixed.graph.output:
        value.type.tensor_type.ClearField("shape")
    return fixed


def _static(value: Any) -> TensorInfo | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return TensorInfo(tuple(int(d.dim_value) for d in dims), int(tensor_type.elem_type))


def runtime_detail(exc: BaseException, limit: int = 220) -> str:
    """An ONNX Runtime error as one short clause: its ``[ONNXRuntimeError] : 1 : FAIL :``
    prefix dropped, and, where long, its start and its end (where the reason is) kept."""
    import re

    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(str(exc).split()))
    if len(text) <= limit:
        return text
    return f"{text[: limit // 3]} ... {text[-(limit - limit // 3) :]}"


#: ONNX Runtime's input type names (``tensor(...)``) of the inputs a shape probe is fed.
_RUNTIME_TYPES = {
    "float": np.float32,
    "double": np.float64,
    "float16": np.float16,
    "bool": np.bool_,
}


def _shapes_from_runtime(
    model: Any, missing: list[str], feeds: dict[str, np.ndarray] | None = None
) -> dict[str, TensorInfo]:
    """Fill shapes that inference could not derive by running the graph once on ``feeds``
    (default: zeros of each input's type, symbolic dimensions as 1)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in missing:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is raised, in one sentence, by the caller
    session = ort.InferenceSession(
        probe.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    if feeds is None:
        feeds = {}
        for arg in session.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in arg.shape]
            element = str(arg.type).removeprefix("tensor(").removesuffix(")")
            feeds[arg.name] = np.zeros(shape, dtype=_RUNTIME_TYPES.get(element, np.int64))
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    found = {}
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, np.ndarray):
            continue  # a sequence or map (SplitToSequence, ZipMap): no tensor shape to record
        array = value
        elem = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        found[name] = TensorInfo(tuple(array.shape), int(elem))
    return found


def _with_bound_inputs(model: Any, inputs: Sequence[BoundInput]) -> Any:
    """A copy of ``model`` whose inputs have exactly the bound shapes (a fixed batch kept)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    shapes = {item.name: item.shape for item in inputs}
    for value in fixed.graph.input:
        if value.name not in shapes:
            continue
        tensor_shape = value.type.tensor_type.shape
        tensor_shape.Clear()
        for size in shapes[value.name]:
            tensor_shape.dim.add().dim_value = int(size)
    del fixed.graph.value_info[:]
    for value in fixed.graph.output:
        value.type.tensor_type.ClearField("shape")
    return fixed


def _probed_shapes(
    model: Any, missing: list[str], bound: Sequence[BoundInput] | None, source: str
) -> dict[str, TensorInfo]:
    """:func:`_shapes_from_runtime`, its failure one sentence naming the file and the inputs."""
    feeds = generated_feeds(bound) if bound is not None else None
    try:
        return _shapes_from_runtime(model, missing, feeds)
    except Exception as exc:
        detail = runtime_detail(exc)
        fed = ""
        if bound:
            shown = ", ".join(item.describe() for item in bound[:4])
            fed = f" on inputs made at the bound shapes ({shown})"
        raise InputError(
            f"{source}: cannot determine the tensor shapes of the graph: ONNX Runtime fails"
            f"{fed} ({detail})."
        ) from None


def read_graph(
    model: Any,
    input_shape: tuple[int, ...] | None = None,
    *,
    inputs: Sequence[BoundInput] | None = None,
    source: str = "the model",
) -> Graph:
    """Shapes, constants and producer/consumer maps of an ONNX model.

    Without ``inputs`` every input's first dimension is 1 and a symbolic one after it takes its
    size from ``input_shape`` (the sample shape, without batch): the batch-1 shapes compression
    and the C export work at. With ``inputs`` (:func:`edgeopt.feed.bind_inputs`) each input has
    exactly its bound shape, a batch the file fixes included, and the runtime probe (for shapes
    inference cannot derive) runs on :func:`edgeopt.feed.generated_feeds`.
    """
    import onnx

    bound = inputs  # the loop below names each node's inputs
    fixed = (
        _with_bound_inputs(model, bound)
        if bound is not None
        else _with_batch_one(model, input_shape)
    )
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # inference gives up on some custom domains: fall back to the runtime
        inferred = fixed
    graph = inferred.graph
    tensors: dict[str, TensorInfo] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        info = _static(value)
        if info is not None:
            tensors[value.name] = info
    constants: set[str] = set()
    for init in graph.initializer:
        tensors[init.name] = TensorInfo(tuple(int(d) for d in init.dims), int(init.data_type))
        constants.add(init.name)
    producers: dict[str, Any] = {}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(index)
        for name in node.output:
            producers[name] = node
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constants for name in inputs)):
            constants.update(node.output)
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        tensors[node.output[0]] = TensorInfo(
                            tuple(int(d) for d in attr.t.dims), int(attr.t.data_type)
                        )
    missing = [
        name
        for node in graph.node
        for name in node.output
        if name and name not in tensors and name not in constants
    ]
    if missing:
        tensors.update(_probed_shapes(inferred, missing, bound, source))
    return Graph(inferred, tensors, constants, producers, consumers)


def is_fused_activation(graph: Graph, node: Any) -> bool:
    """An activation applied in place to a convolution's or matrix product's only output."""
    if node.op_type not in FUSABLE_ACTIVATIONS or not node.input:
        return False
    source = node.input[0]
    producer = graph.producers.get(source)
    if producer is not None and producer.op_type == "DequantizeLinear":  # QDQ: look past Q/DQ
        quantize = graph.producers.get(producer.input[0])
        if quantize is not None and quantize.op_type == "QuantizeLinear":
            source = quantize.input[0]
            producer = graph.producers.get(source)
    if producer is None or producer.op_type not in CONV_OPS | MATMUL_OPS:
        return False
    return len(graph.consumers.get(source, [])) == 1


def _weight_source(graph: Graph, name: str) -> str:
    """Follow a constant through DequantizeLinear / Cast / Transpose to its stored tensor."""
    node = graph.producers.get(name)
    while node is not None and node.op_type in {"DequantizeLinear", "Cast", "Transpose", "Reshape"}:
        name = node.input[0]
        node = graph.producers.get(name)
    return name


def _is_int8_input(graph: Graph, name: str) -> bool:
    node = graph.producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        source = graph.tensors.get(node.input[0])
        return source is not None and source.elem_type in INT8_TYPES
    info = graph.tensors.get(name)
    return info is not None and info.elem_type in INT8_TYPES


def _kind(node: Any, graph: Graph) -> str:
    op = node.op_type
    if is_fused_activation(graph, node):
        return "fused"
    if op in CONV_OPS:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = graph.tensors.get(node.input[CONV_OPS[op]])
        if groups > 1 and weight is not None and weight.shape[1:2] == (1,):
            return "depthwise"
        return "conv"
    if op in MATMUL_OPS:
        return "fc"
    if op in POOL_OPS:
        return "pool"
    if op in VIEW_OPS:
        return "data"
    return "elementwise"


_SKIP_PARAM_INPUTS = {
    # operator -> input positions that are quantization parameters or shapes, not weights
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "ConvInteger": {2, 3},
    "MatMulInteger": {2, 3},
    "Reshape": {1},
    "Resize": {1, 2, 3},
    "Pad": {1, 2, 3},
    "Slice": {1, 2, 3, 4},
    "Clip": {1, 2},  # the bounds of ReLU6, not weights
}


def _params(node: Any, graph: Graph) -> tuple[int, int]:
    """Stored weight elements and their bytes for one layer's constant inputs."""
    skip = _SKIP_PARAM_INPUTS.get(node.op_type, set())
    count = 0
    stored = 0
    for position, name in enumerate(node.input):
        if not name or position in skip or name not in graph.constants:
            continue
        source = _weight_source(graph, name)
        info = graph.tensors.get(source)
        if info is None or info.elem_type in (6, 7) and node.op_type not in CONV_OPS | MATMUL_OPS:
            continue  # int32/int64 shape or axis tensors
        count += info.elements
        bits = 4 if info.elem_type in (21, 22) else info.itemsize * 8
        stored += math.ceil(info.elements * bits / 8)
    return count, stored


def analyse(
    model: Any,
    input_shape: tuple[int, ...] | None = None,
    *,
    inputs: Sequence[BoundInput] | None = None,
    source: str = "the model",
) -> tuple[Graph, list[Layer]]:
    """Every non-constant, non-Q/DQ node of the graph as a :class:`Layer`, in execution order
    (``input_shape`` or ``inputs`` size the inputs: see :func:`read_graph`)."""
    graph = read_graph(model, input_shape, inputs=inputs, source=source)
    layers: list[Layer] = []
    for index, node in enumerate(graph.model.graph.node):
        if node.op_type in QDQ_OPS or all(o in graph.constants for o in node.output if o):
            continue
        out_name = node.output[0]
        out = graph.tensors.get(out_name, TensorInfo((0,), 1))
        int8 = node.op_type.startswith("QLinear") or node.op_type.endswith("Integer")
        if node.op_type in INT8_OP_TYPES:  # a float op between Q/DQ stays float
            int8 = int8 or any(_is_int8_input(graph, name) for name in node.input[:1] if name)
        params, param_bytes = _params(node, graph)
        in_bytes = sum(
            graph.tensors[name].elements * (1 if int8 else graph.tensors[name].itemsize)
            for name in node.input
            if name and name not in graph.constants and name in graph.tensors
        )
        out_bytes = out.elements * (1 if int8 else out.itemsize)
        cost = op_cost(node, graph, graph.tensors.get(out_name))
        kind = _kind(node, graph)
        if kind == "elementwise" and cost.macs:  # a recurrent cell, attention, Einsum: priced
            kind = "fc"  # as matrix products, which is what they run
        layers.append(
            Layer(
                name=node.name or f"{node.op_type}_{index}",
                op_type=node.op_type,
                kind=kind,
                dtype="int8" if int8 else "float32",
                output_shape=out.shape,
                params=params,
                macs=cost.macs,
                output_elements=out.elements,
                output_bytes=out_bytes,
                bytes_moved=in_bytes + out_bytes + param_bytes,
                ops=cost.ops,
                is_counted=cost.is_counted,
                is_pointwise=kind == "conv" and _is_pointwise(node, graph),
                kernel_elements=_kernel_elements(node, graph),
            )
        )
    return graph, layers


def _kernel_elements(node: Any, graph: Graph) -> int:
    if node.op_type not in CONV_OPS:
        return 1
    weight = graph.tensors.get(node.input[CONV_OPS[node.op_type]])
    return max(math.prod(weight.shape[2:]), 1) if weight is not None else 1


def _is_pointwise(node: Any, graph: Graph) -> bool:
    """Whether a Conv is 1x1, stride 1, unpadded and ungrouped (as the C lowering tests it)."""
    weight = graph.tensors.get(node.input[1]) if node.op_type == "Conv" else None
    if weight is None or any(size != 1 for size in weight.shape[2:]):
        return False
    attrs = attributes(node)
    pads = attrs.get("pads", [])
    strides = attrs.get("strides", [])
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    return (
        attrs.get("group", 1) == 1
        and all(stride == 1 for stride in strides)
        and not any(pads)
        and auto_pad in (b"NOTSET", b"VALID", "NOTSET", "VALID")
    )


def with_live_bytes(layers: list[Layer], live: dict[str, int]) -> list[Layer]:
    """Copy of ``layers`` with the live activation bytes of each one's step filled in."""
    return [replace(layer, live_bytes=live.get(layer.name, 0)) for layer in layers]


# -- the helpers every ONNX-side module shares (reading attributes and constants, editing) -------
def attributes(node: Any) -> dict[str, Any]:
    """A node's attributes as Python values, by name."""
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def attribute(node: Any, name: str, default: Any = None) -> Any:
    """One attribute of a node as a Python value, or ``default`` when it is not set."""
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def constants(model: Any, *, is_constant_node_read: bool = False) -> dict[str, np.ndarray]:
    """The model's initializers as arrays, by name; with ``is_constant_node_read``, the
    ``value`` of its Constant nodes too (by output name). The arrays are the model's own bytes
    where numpy can share them: copy before writing."""
    import onnx

    found = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    if is_constant_node_read:
        for node in model.graph.node:
            value = attribute(node, "value") if node.op_type == "Constant" else None
            if value is not None:
                found[node.output[0]] = onnx.numpy_helper.to_array(value)
    return found


class GraphEditor:
    """New nodes and constants with names no other tensor of the model has.

    Why one class: folding the normalization into a model, the host's timing models and the
    probes all add nodes to (or build) a graph and need fresh names; each had its own.
    """

    def __init__(self, model: Any = None) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.names: set[str] = set()
        if model is not None:
            graph = model.graph
            self.names = {n for node in graph.node for n in (*node.input, *node.output)}
            self.names |= {t.name for t in graph.initializer} | {v.name for v in graph.input}
            self.names |= {node.name for node in graph.node if node.name}

    def fresh(self, stem: str) -> str:
        """``stem``, or ``stem_1``, ``stem_2``, ... : the first name not taken (then taken)."""
        name, index = stem, 0
        while name in self.names:
            index += 1
            name = f"{stem}_{index}"
        self.names.add(name)
        return name

    def constant(self, value: np.ndarray, stem: str = "c") -> str:
        """Add ``value`` as an initializer with a fresh name; the name."""
        import onnx

        name = self.fresh(stem)
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(
        self,
        op: str,
        inputs: list[str],
        *,
        out: str | None = None,
        name: str | None = None,
        **attrs: Any,
    ) -> str:
        """Add an ``op`` node reading ``inputs``, its output ``out`` (or a fresh name) and its
        own name fresh from ``name`` (or the op); the output's name."""
        import onnx

        out = out or self.fresh(op.lower())
        label = self.fresh(name or f"{op.lower()}_node")
        self.nodes.append(onnx.helper.make_node(op, inputs, [out], name=label, **attrs))
        return out
