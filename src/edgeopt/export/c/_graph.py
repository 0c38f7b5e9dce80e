"""Read an int8 QDQ graph: quantized activations, their scales, weights, biases and tables.

The base of every mixin of the lowering (:mod:`edgeopt.export.c._lower` combines them): it
knows which tensors are int8 buffers (QuantizeLinear outputs), what a layer reads and writes,
and computes the constants the kernels need. Tables of one int8 input are evaluated with ONNX
Runtime itself, so they hold exactly what the reference computes. What more than one mixin
uses lives here, so that no mixin depends on another: the table step (``lower_table``) serves
a change of scale, a view and a function of one value alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.export.c._program import INT8
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Array
from edgeopt.export.c._program import Buffer
from edgeopt.export.c._program import Ref
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import f32
from edgeopt.export.c._program import node_label
from edgeopt.export.c._program import quantize_values
from edgeopt.graph import attributes
from edgeopt.graph import constants
from edgeopt.graph import read_graph

#: Layers whose output clamp can absorb a Relu / Clip that follows them.
CLAMPING_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul"}


class GraphReader:
    """The QDQ graph with its constants, and the buffers and steps lowered so far."""

    def __init__(self, model: Any, source: str) -> None:

        self.source = source
        self.graph = read_graph(model)
        self.nodes = self.graph.nodes
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.values: dict[str, np.ndarray] = constants(self.graph.model, is_constant_node_read=True)
        self.buffers: dict[str, Buffer] = {}
        self.views: dict[str, str] = {}
        self.steps: list[Step] = []
        self.dequantized: dict[str, str] = {}  # DequantizeLinear output -> int8 buffer
        self.floats: dict[str, str] = {}  # float tensor kept in the arena -> buffer
        self.fused: set[int] = set()  # node indices folded into the layer before them
        self.float_output: Buffer | None = None
        self.input_buffer: Buffer | None = None
        self.raw_input: str | None = None  # uint8 | int8: a folded model's raw graph input
        self.index = {id(node): i for i, node in enumerate(self.nodes)}

    # -- helpers -------------------------------------------------------------------------------

    def fail(self, message: str) -> InputError:
        return InputError(f"{self.source}: {message}")

    def is_constant(self, name: str) -> bool:
        return name in self.graph.constants

    def value(self, name: str, node: Any) -> np.ndarray:
        if name not in self.values:
            raise self.fail(
                f"node {node_label(node)} needs the constant {name!r}, which is computed."
            )
        return self.values[name]

    def consumers(self, name: str) -> list[Any]:
        return [self.nodes[i] for i in self.graph.consumers.get(name, [])]

    def qparams(self, node: Any) -> tuple[float, int, int]:
        """Scale, ONNX zero point and ONNX type of a QuantizeLinear / DequantizeLinear."""
        scale = np.asarray(self.value(node.input[1], node), dtype=np.float32)
        if scale.size != 1:
            raise self.fail(
                f"node {node_label(node)} quantizes an activation per channel; the C exporter "
                "supports per-tensor activation scales only."
            )
        if len(node.input) > 2 and node.input[2]:
            zero = np.asarray(self.value(node.input[2], node))
            dtype = zero.dtype
            zero_point = int(zero.ravel()[0])
        else:
            dtype, zero_point = np.dtype(np.uint8), 0
            output_dtype = attributes(node).get("output_dtype", 0)
            if output_dtype == INT8:
                dtype = np.dtype(np.int8)
        if dtype == np.uint8:
            onnx_type = UINT8
        elif dtype == np.int8:
            onnx_type = INT8
        else:
            raise self.fail(
                f"node {node_label(node)} quantizes an activation to {dtype}; the C exporter "
                "supports uint8 and int8 activations."
            )
        return float(scale.ravel()[0]), zero_point, onnx_type

    def new_buffer(self, q_node: Any) -> str:
        name = q_node.output[0]
        scale, zero_point, onnx_type = self.qparams(q_node)
        info = self.graph.tensors.get(name) or self.graph.tensors.get(q_node.input[0])
        if info is None:
            raise self.fail(f"the shape of tensor {name!r} is unknown.")
        self.buffers[name] = Buffer(
            tensor=name,
            shape=tuple(info.shape),
            scale=scale,
            zero_point=zero_point - (128 if onnx_type == UINT8 else 0),
            onnx_type=onnx_type,
        )
        return str(name)

    def input(self, node: Any, position: int) -> Buffer:
        name = node.input[position]
        if name in self.dequantized:
            return self.buffers[self.dequantized[name]]
        if self.is_constant(name):
            raise self.fail(
                f"node {node_label(node)} has a constant as input {position}; the C exporter "
                "supports constants as weights and biases only: fold the constant into the "
                "neighbouring layer's bias (a per-channel offset), or make it a learned bias."
            )
        raise self.fail(
            f"node {node_label(node)} reads {name!r} in float (no DequantizeLinear in front): the "
            "layer is not quantized; quantize the whole model to int8 QDQ (edgeopt quantize, "
            "without excluding it)."
        )

    def activation_bounds(self, node: Any) -> tuple[float, float]:
        if node.op_type == "Relu":
            return 0.0, math.inf
        attrs = attributes(node)
        low, high = attrs.get("min", -math.inf), attrs.get("max", math.inf)
        for position in (1, 2):
            if len(node.input) > position and node.input[position]:
                bound = float(np.asarray(self.value(node.input[position], node)).ravel()[0])
                low, high = (bound, high) if position == 1 else (low, bound)
        return float(low), float(high)

    def output(self, node: Any) -> tuple[str | None, int, int]:
        """The int8 buffer a layer writes (None: the graph's float output) and its clamp."""
        name = node.output[0]
        consumers = self.consumers(name)
        if name in self.graph.outputs and not consumers:
            return None, -128, 127
        bounds = (-math.inf, math.inf)
        if (
            node.op_type in CLAMPING_OPS
            and len(consumers) == 1
            and consumers[0].op_type in ("Relu", "Clip")
            and name not in self.graph.outputs
        ):
            activation = consumers[0]
            self.fused.add(self.index[id(activation)])
            bounds = self.activation_bounds(activation)
            name = activation.output[0]
            consumers = self.consumers(name)
        quantizers = [c for c in consumers if c.op_type == "QuantizeLinear"]
        if not quantizers or len(quantizers) != len(consumers) or name in self.graph.outputs:
            other = next((c for c in consumers if c.op_type != "QuantizeLinear"), None)
            reader = f"node {node_label(other)}" if other is not None else "the graph output"
            raise self.fail(
                f"node {node_label(node)} writes {name!r} in float, read by {reader}; the C "
                "exporter needs every layer's output quantized (int8 QDQ), except a final "
                "Gemm / MatMul / Softmax."
            )
        buffer = self.new_buffer(quantizers[0])
        for extra in quantizers[1:]:
            if self.qparams(extra) != self.qparams(quantizers[0]):
                raise self.fail(f"tensor {name!r} is quantized twice with different scales.")
            self.views[extra.output[0]] = buffer
            self.buffers[extra.output[0]] = self.buffers[buffer]
        out = self.buffers[buffer]
        low = -128 if bounds[0] == -math.inf else self.storage_value(bounds[0], out)
        high = 127 if bounds[1] == math.inf else self.storage_value(bounds[1], out)
        return buffer, max(-128, low), min(127, high)

    @staticmethod
    def storage_value(real: float, buffer: Buffer) -> int:
        q = quantize_values(
            np.array([real]), buffer.scale, buffer.onnx_zero_point, buffer.onnx_type
        )
        return int(q[0]) - (128 if buffer.onnx_type == UINT8 else 0)

    def weights(self, node: Any, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Integer weights and their float32 scales (per output channel or one) of a layer."""
        name = node.input[position]
        producer = self.graph.producers.get(name)
        if producer is None or producer.op_type != "DequantizeLinear":
            raise self.fail(
                f"node {node_label(node)} has float weights {name!r}; quantize the model first "
                "(edgeopt quantize)."
            )
        q = np.asarray(self.value(producer.input[0], producer))
        if q.dtype.name not in ("int8", "uint8", "int4", "uint4"):
            raise self.fail(f"node {node_label(node)} has weights of type {q.dtype}.")
        scale = np.asarray(self.value(producer.input[1], producer), dtype=np.float32)
        values = q.astype(np.int64)  # 4-bit weights are kept one per byte
        if len(producer.input) > 2 and producer.input[2]:
            zero = np.asarray(self.value(producer.input[2], producer)).astype(np.int64)
            if zero.size > 1:  # per channel, along the DequantizeLinear's axis
                axis = int(attributes(producer).get("axis", 1)) % values.ndim
                zero = zero.reshape([-1 if d == axis else 1 for d in range(values.ndim)])
            # The same real weights with zero point 0 (a uint8 file's q - 128, for one): the
            # kernels take symmetric int8 weights.
            values = values - zero
            if values.size and (values.min() < -128 or values.max() > 127):
                raise self.fail(
                    f"node {node_label(node)} has asymmetric weights whose offsets from the zero "
                    "point do not fit in int8; the C exporter supports symmetric weights "
                    "(edgeopt quantize writes them)."
                )
        return values, scale

    def bias(self, node: Any, position: int, acc_scale: np.ndarray, channels: int) -> np.ndarray:
        """The int32 bias in the accumulator's scale (zeros when the layer has none)."""
        if len(node.input) <= position or not node.input[position]:
            return np.zeros(channels, dtype=np.int64)
        name = node.input[position]
        producer = self.graph.producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear":
            values = np.asarray(self.value(producer.input[0], producer)).astype(np.int64)
        else:  # a float bias: quantize it to the accumulator's scale as the quantizer would
            real = np.asarray(self.value(name, node), dtype=np.float64)
            values = np.rint(real / acc_scale.astype(np.float64)).astype(np.int64)
        return np.broadcast_to(values.ravel(), (channels,)).copy()

    def rescale_table(self, x: Buffer, y: Buffer) -> tuple[tuple[Array, ...], Ref | None]:
        """The next step's int8 table from ``x``'s quantization to ``y``'s (for copy-like kernels:
        max pool, concat, split), and a reference to it; none when the two are the same."""
        if (x.scale, x.zero_point) == (y.scale, y.zero_point):
            return (), None
        table = self.array(len(self.steps), "table", "int8_t", self.table(x, y))
        return (table,), Ref(table.name)

    def table(self, source: Buffer, target: Buffer, node: Any | None = None) -> np.ndarray:
        """The int8 -> int8 table of ``target = Q(f(DQ(source)))`` (f: ``node`` or identity)."""
        stored = np.arange(-128, 128, dtype=np.int64)
        onnx_q = stored + (128 if source.onnx_type == UINT8 else 0)
        x = (onnx_q - source.onnx_zero_point).astype(np.float32) * f32(source.scale)
        y = x if node is None else self.evaluate(node, x)
        q = quantize_values(y, target.scale, target.onnx_zero_point, target.onnx_type)
        return (q - (128 if target.onnx_type == UINT8 else 0)).astype(np.int64)

    def evaluate(self, node: Any, x: np.ndarray) -> np.ndarray:
        """Run one float operator on ``x`` (a vector, or a tensor of the operator's input shape)
        with ONNX Runtime (the reference's own math); its other inputs are the node's constants."""
        import onnx
        import onnxruntime as ort

        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(["x", *node.input[1:]])
        del copy.output[:]
        copy.output.append("y")
        constants = [
            onnx.numpy_helper.from_array(np.asarray(self.value(name, node)), name)
            for name in node.input[1:]
            if name
        ]
        graph = onnx.helper.make_graph(
            [copy],
            "unary",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            constants,
        )
        model = onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", max(self.opset, 13))]
        )
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return np.asarray(session.run(None, {"x": x.astype(np.float32)})[0], dtype=np.float32)

    def add_step(self, step: Step) -> None:
        self.steps.append(step)

    def array(
        self, step_index: int, what: str, ctype: str, values: np.ndarray | list[int]
    ) -> Array:
        dtype = {"int8_t": np.int8, "int32_t": np.int32, "float": np.float32}[ctype]
        raw = np.asarray(values)
        if ctype == "int32_t":  # modulo 2^32, as the kernels' accumulators add
            raw = (raw.astype(np.int64) + 2**31) % 2**32 - 2**31
        return Array(f"l{step_index}_{what}", ctype, raw.astype(dtype).ravel())

    # -- the walk ------------------------------------------------------------------------------

    def quantized_output(self, node: Any) -> str:
        name, low, high = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        return name

    def lower_table(self, node: Any, before: Buffer, name: str, function: Any | None) -> None:
        """``name`` from ``before`` through a 256-entry table of ``function`` (None: identity);
        no step when the identity keeps the scale (``name`` is then a view of ``before``)."""
        after = self.buffers[name]
        if function is None and (before.scale, before.zero_point) == (
            after.scale,
            after.zero_point,
        ):
            self.views[name] = before.tensor
            return
        index = len(self.steps)
        table = self.array(index, "table", "int8_t", self.table(before, after, function))
        self.add_step(
            Step(
                "edgeopt_lookup",
                node_label(node),
                (before.tensor,),
                name,
                leading=(Ref(table.name),),
                args=(after.size,),
                arrays=(table,),
                summary="table",
            )
        )
