"""Lower an int8 QDQ ONNX graph to a schedule of int8 kernel calls (the C code's program).

A QDQ graph says "quantize here, dequantize there, compute in float in between"; an int8
runtime fuses each ``DequantizeLinear -> op -> QuantizeLinear`` into one integer kernel. The
lowering does that fusion once, on the ONNX graph: every quantized activation (the output of a
QuantizeLinear) becomes an int8 buffer, every layer between them a kernel call with its
constants (weights, biases, fixed-point multipliers, lookup tables) computed in Python.

Arithmetic follows ONNX Runtime's int8 kernels so the C code can be checked against it:
requantization multipliers are the float32 values ONNX Runtime computes
(``x_scale * w_scale / y_scale``), stored as int32 multiplier + shift (exact for a float32) and
rounded once, ties to even. Element-wise functions of one int8 value (an activation left in the
graph, a change of scale) become 256-entry tables evaluated with ONNX Runtime itself.

The lowering is split by concept, each a mixin over :class:`~edgeopt.export.c._graph.GraphReader`
(the graph, its constants, and the buffers and steps so far): :mod:`~edgeopt.export.c._quantize`
(where int8 buffers begin: the input, QuantizeLinear, DequantizeLinear),
:mod:`~edgeopt.export.c._layers` (the layers with weights, and pooling),
:mod:`~edgeopt.export.c._elementwise` (tables, Add, Mul, Softmax) and
:mod:`~edgeopt.export.c._movement` (views, Concat, Split, Transpose, nearest Resize). This
module is the driver that combines them: it checks the graph is int8 QDQ, hands each node to its
handler in graph order, and ends with the graph output; a node it has no handler for is refused
with the nearest supported alternative (:data:`REFUSAL_HINTS`).
"""

from __future__ import annotations

from typing import Any

from edgeopt.errors import InputError
from edgeopt.export.c._elementwise import UNARY_OPS
from edgeopt.export.c._elementwise import ElementwiseLowering
from edgeopt.export.c._layers import LayerLowering
from edgeopt.export.c._movement import VIEW_OPS
from edgeopt.export.c._movement import MovementLowering
from edgeopt.export.c._program import OUTPUT
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Buffer
from edgeopt.export.c._program import Program
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import node_label
from edgeopt.export.c._quantize import QuantizeLowering

#: Operator -> what the C code does with it (for the documentation and the error message).
SUPPORTED_OPS = {
    "Conv": "convolution (1-D as height 1, 2-D: general, grouped, depthwise, 1x1 pointwise)",
    "ConvTranspose": "transposed convolution (1-D and 2-D, group 1)",
    "Gemm": "fully connected",
    "MatMul": "fully connected (constant 2-D weight)",
    "MaxPool": "max pooling",
    "AveragePool": "average pooling",
    "GlobalAveragePool": "global average pooling",
    "Add": "element-wise add of two tensors of one shape",
    "Mul": "element-wise multiply (one shape, or a per-channel gate)",
    "Concat": "concatenation",
    "Split": "split",
    "Transpose": "transpose (up to 4 dimensions)",
    "Softmax": "softmax over the last axis, in float",
    "Resize": "nearest resize (nn.Upsample(mode='nearest'), any integer or fractional scale)",
    **{op: "free view of its input" for op in sorted(VIEW_OPS)},
    **{op: "256-entry lookup table" for op in sorted(UNARY_OPS)},
}

_STATIC_SHAPES = (
    "the C export needs static shapes; export the model with fixed input shapes "
    "(torch.onnx.export with dynamo and no dynamic axes) so {op} folds away"
)
_LAYER_NORM = (
    "{what} is not supported in int8 C (LayerNorm's mean, variance and division); replace "
    "LayerNorm with BatchNorm, which folds into the convolution, or keep that part in float"
)

#: Operator -> the nearest supported alternative, for the refusal of a node the C exporter has
#: no kernel for (one table, beside :data:`SUPPORTED_OPS`, so that a new kernel and its hint are
#: edited together). ``{op}`` is filled in with the operator.
REFUSAL_HINTS = {
    "Shape": _STATIC_SHAPES,
    "ConstantOfShape": _STATIC_SHAPES,
    "Range": _STATIC_SHAPES,
    "Expand": _STATIC_SHAPES,
    "Gather": "indexing (Gather) is not supported; where it reads a tensor's shape, "
    + _STATIC_SHAPES,
    "NonZero": "output sizes that depend on the data cannot be planned in a static arena",
    "Div": _LAYER_NORM.format(what="element-wise division of two activations"),
    "Sqrt": _LAYER_NORM.format(what="a square root of an activation"),
    "Pow": _LAYER_NORM.format(what="a power of an activation"),
    "Sub": "subtraction of two activations is not supported; write it as an Add (Add is)",
    "LayerNormalization": _LAYER_NORM.format(what="LayerNorm"),
    "ReduceMean": "only a mean over H and W of an NCHW tensor is supported (edgeopt's PTQ "
    "makes it a global pool); write x.mean((2, 3)) or nn.AdaptiveAvgPool2d(1), and quantize "
    "with edgeopt quantize",
    "ReduceMax": "use nn.MaxPool2d over the window instead",
    "GlobalMaxPool": "use nn.MaxPool2d with the whole plane as kernel, or nn.AdaptiveAvgPool2d(1)",
    "Erf": "GELU's erf has no int8 kernel; use nn.ReLU, nn.Hardswish or nn.Sigmoid "
    "(256-entry tables)",
    "Gelu": "GELU has no int8 kernel; use nn.ReLU, nn.Hardswish or nn.Sigmoid (256-entry tables)",
    "LSTM": "recurrent cells have no int8 C kernel; use 1-D convolutions over time "
    "(nn.Conv1d, lowered as a convolution of height 1)",
    "GRU": "recurrent cells have no int8 C kernel; use 1-D convolutions over time "
    "(nn.Conv1d, lowered as a convolution of height 1)",
    "RNN": "recurrent cells have no int8 C kernel; use 1-D convolutions over time "
    "(nn.Conv1d, lowered as a convolution of height 1)",
    "Einsum": "attention and Einsum have no int8 C kernel; use convolutions or an MLP "
    "(nn.Linear with constant weights)",
    "Upsample": "only nearest resize (Resize, opset 11 and later) is supported; re-export "
    "with nn.Upsample(scale_factor=2, mode='nearest') at opset 18",
    "Pad": "use the padding argument of nn.Conv2d / nn.MaxPool2d instead of F.pad",
    "Slice": "slicing is not supported; split with torch.chunk / torch.split (Split is)",
    "BatchNormalization": "a BatchNorm left in the graph is not supported; export in eval "
    "mode so it folds into the convolution before it",
    "Cast": "a change of element type inside the graph is not supported; keep the model "
    "float32 before quantizing",
}


class _Lowering(QuantizeLowering, LayerLowering, ElementwiseLowering, MovementLowering):
    """One walk over the graph: each node to the ``lower_<op>`` of the mixin that owns it."""

    def run(self) -> Program:
        self.check_quantized()
        self.lower_raw_input()
        for index, node in enumerate(self.nodes):
            if index in self.fused or all(self.is_constant(o) for o in node.output if o):
                continue
            handler = getattr(self, f"lower_{node.op_type}", None)
            if node.op_type in VIEW_OPS:
                handler = self.lower_view
            elif node.op_type in UNARY_OPS:
                handler = self.lower_unary
            if handler is None:
                raise self.unsupported(node)
            handler(node)
        return self.finish()

    def unsupported(self, node: Any) -> InputError:
        if node.op_type in {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}:
            return self.fail(
                f"node {node_label(node)} is dynamic quantization; the C exporter needs a static "
                "int8 QDQ model (edgeopt quantize with PTQConfig)."
            )
        return self.fail(refusal(node))

    def check_quantized(self) -> None:
        quantizes = [
            n
            for n in self.nodes
            if n.op_type == "QuantizeLinear" and not self.is_constant(n.input[0])
        ]
        if not quantizes and not any(n.op_type == "DynamicQuantizeLinear" for n in self.nodes):
            raise self.fail(
                "a float model (no QuantizeLinear on its activations); the C exporter needs an "
                "int8 QDQ model: quantize it first (edgeopt quantize, or "
                "edgeopt.quantize(model, PTQConfig(), data=..., output=...))."
            )
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise self.fail(
                f"the graph has {len(self.graph.inputs)} inputs and {len(self.graph.outputs)} "
                "outputs; the C exporter supports one of each."
            )

    def finish(self) -> Program:
        if self.input_buffer is None:
            raise self.fail(
                "the graph input is not quantized by a QuantizeLinear; the C exporter needs "
                "a float input followed by QuantizeLinear (edgeopt quantize writes one)."
            )
        output = self.graph.outputs[0]
        if self.float_output is not None and self.float_output.tensor == output:
            result = self.float_output
        else:
            if output in self.dequantized:
                name = self.dequantized[output]
            elif output in self.buffers:
                name = output
            else:
                producer = self.graph.producers.get(output)
                who = node_label(producer) if producer is not None else repr(output)
                raise self.fail(f"the graph output comes from {who}, which is not lowered.")
            buffer = self.buffers[name]
            result = Buffer(
                output, buffer.shape, "int8", buffer.scale, buffer.zero_point, buffer.onnx_type
            )
            function = "edgeopt_to_u8" if buffer.onnx_type == UINT8 else "edgeopt_copy"
            self.add_step(
                Step(function, "output", (name,), OUTPUT, args=(buffer.size,), summary="output")
            )
        for name in self.views:
            self.buffers[name] = self.buffers[name]
        return Program(
            buffers=self.buffers,
            views=self.views,
            steps=self.steps,
            input=self.input_buffer,
            output=result,
            input_name=self.graph.inputs[0],
            output_name=output,
            raw_input=self.raw_input,
        )


def refusal(node: Any) -> str:
    """The sentence refusing a node of an operator the C exporter has no kernel for: the node,
    its operator and the nearest supported alternative (:data:`REFUSAL_HINTS`), or the
    supported operators when no alternative is known."""
    op = node.op_type
    hint = REFUSAL_HINTS.get(op)
    if hint is None:
        hint = f"the C exporter supports {', '.join(sorted(SUPPORTED_OPS))}"
    return (
        f"node {node.name or node.output[0]!r} ({op}): unsupported operator; {hint.format(op=op)}."
    )


def lower(model: Any, *, source: str) -> Program:
    """Lower an int8 QDQ model to a :class:`Program`.

    Args:
        model: the ONNX model (not modified).
        source: how to name the model in error messages (its path).

    Returns:
        The buffers, views and kernel calls, with every constant computed.

    Raises:
        InputError: a float (not quantized) model, an operator or attribute the C kernels do not
            cover (the message names the operator and its node), a layer left in float.
    """
    return _Lowering(model, source).run()
