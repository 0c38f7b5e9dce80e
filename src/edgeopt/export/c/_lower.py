"""Lower an int8 QDQ ONNX graph to a schedule of int8 kernel calls (the C code's program).

A QDQ graph says "quantize here, dequantize there, compute in float in between"; an int8
runtime fuses each ``DequantizeLinear -> op -> QuantizeLinear`` into one integer kernel. This
module does that fusion once, on the ONNX graph: every quantized activation (the output of a
QuantizeLinear) becomes an int8 buffer, every layer between them a kernel call with its
constants (weights, biases, fixed-point multipliers, lookup tables) computed here in Python.

Arithmetic follows ONNX Runtime's int8 kernels so the C code can be checked against it:
requantization multipliers are the float32 values ONNX Runtime computes
(``x_scale * w_scale / y_scale``), stored as int32 multiplier + shift (exact for a float32) and
rounded once, ties to even. Element-wise functions of one int8 value (an activation left in the
graph, a change of scale) become 256-entry tables evaluated with ONNX Runtime itself.
"""

from __future__ import annotations

import math
from typing import Any

from edgeopt.errors import InputError
from edgeopt.export.c._layers import LayerLowering
from edgeopt.export.c._program import INPUT
from edgeopt.export.c._program import OUTPUT
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Buffer
from edgeopt.export.c._program import Program
from edgeopt.export.c._program import Ref
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import f32
from edgeopt.export.c._program import fixed_point
from edgeopt.export.c._program import node_label
from edgeopt.export.c._raw import find_raw_chain
from edgeopt.export.c._raw import raw_tables
from edgeopt.export.c._raw import table_size
from edgeopt.graph import attributes

_VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
#: Element-wise functions of one quantized value, lowered to a 256-entry table.
_UNARY_OPS = {"Relu", "Clip", "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Tanh"}
#: Operator -> what the C code does with it (for the documentation and the error message).
SUPPORTED_OPS = {
    "Conv": "convolution (general, grouped, depthwise, 1x1 pointwise)",
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
    **{op: "free view of its input" for op in sorted(_VIEW_OPS)},
    **{op: "256-entry lookup table" for op in sorted(_UNARY_OPS)},
}


class _Lowering(LayerLowering):
    def run(self) -> Program:
        self.check_quantized()
        self.lower_raw_input()
        for index, node in enumerate(self.nodes):
            if index in self.fused or all(self.is_constant(o) for o in node.output if o):
                continue
            handler = getattr(self, f"lower_{node.op_type}", None)
            if node.op_type in _VIEW_OPS:
                handler = self.lower_view
            elif node.op_type in _UNARY_OPS:
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
        return self.fail(
            f"unsupported operator {node.op_type} (node {node.name or node.output[0]!r}); the "
            f"C exporter supports {', '.join(sorted(SUPPORTED_OPS))}."
        )

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

    def lower_raw_input(self) -> None:
        """Map a folded model's raw 8-bit input to its first int8 buffer through tables."""
        chain = find_raw_chain(
            self.graph.model,
            source=self.source,
            shapes=self.graph.tensors,
            constants=self.values,
            consumers=self.consumers,
        )
        if chain is None:
            return
        quantize = chain.quantize
        name = self.new_buffer(quantize)
        buffer = self.buffers[name]
        if buffer.shape != chain.shape:
            raise self.fail(
                f"node {node_label(quantize)} quantizes shape {buffer.shape}, not the raw input's "
                f"{chain.shape}."
            )
        onnx_values = raw_tables(chain, self.values, self.opset)
        stored = onnx_values - (128 if buffer.onnx_type == UINT8 else 0)
        table = self.array(len(self.steps), "table", "int8_t", stored)
        self.input_buffer = buffer
        self.raw_input = chain.dtype
        self.fused.update(self.index[id(node)] for node in chain.nodes)
        per = "per channel " if chain.channels > 1 else ""
        self.add_step(
            Step(
                "edgeopt_lookup_u8" if chain.dtype == "uint8" else "edgeopt_lookup_s8",
                node_label(quantize),
                (INPUT,),
                name,
                leading=(Ref(table.name),),
                args=(chain.channels, table_size(chain)),
                arrays=(table,),
                summary=f"raw {chain.dtype} input, 256-entry table {per}({len(chain.nodes)} nodes)",
            )
        )

    def lower_QuantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if node.output[0] in self.buffers:
            return  # written by its layer
        if source in self.graph.inputs:
            if self.input_buffer is not None:
                raise self.fail("the graph input is quantized twice; the C exporter needs one.")
            name = self.new_buffer(node)
            buffer = self.buffers[name]
            self.input_buffer = buffer
            function = "edgeopt_from_u8" if buffer.onnx_type == UINT8 else "edgeopt_copy"
            self.add_step(
                Step(function, "input", (INPUT,), name, args=(buffer.size,), summary="input")
            )
            return
        if source in self.dequantized:  # a change of scale: DequantizeLinear -> QuantizeLinear
            before = self.buffers[self.dequantized[source]]
            self.lower_table(node, before, self.new_buffer(node), None)
            return
        if source in self.floats:
            before = self.buffers[self.floats[source]]
            name = self.new_buffer(node)
            after = self.buffers[name]
            if after.onnx_type == UINT8:
                raise self.fail(
                    f"node {node_label(node)} quantizes a float result to uint8 inside the graph; "
                    "the C exporter supports int8 there."
                )
            self.add_step(
                Step(
                    "edgeopt_quantize_s8",
                    node_label(node),
                    (self.floats[source],),
                    name,
                    args=(before.size, f32(after.scale), after.zero_point),
                    summary="quantize",
                )
            )
            return
        producer = self.graph.producers.get(source)
        who = node_label(producer) if producer is not None else repr(source)
        raise self.fail(f"node {node_label(node)} quantizes the float output of {who}.")

    def lower_DequantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if source not in self.buffers:
            raise self.fail(
                f"node {node_label(node)} dequantizes {source!r}, which is no activation."
            )
        self.dequantized[node.output[0]] = source

    def lower_table(self, node: Any, before: Buffer, name: str, function: Any | None) -> None:
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

    def lower_view(self, node: Any) -> None:
        before = self.input(node, 0)
        name, _, _ = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        self.lower_table(node, before, name, None)

    def lower_unary(self, node: Any) -> None:
        before = self.input(node, 0)
        name, _, _ = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        self.lower_table(node, before, name, node)

    def lower_Add(self, node: Any) -> None:
        a, b = self.input(node, 0), self.input(node, 1)
        name, low, high = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        y = self.buffers[name]
        if a.shape != y.shape or b.shape != y.shape:
            raise self.fail(
                f"node {node_label(node)} adds shapes {a.shape} and {b.shape} with broadcasting; "
                "the C exporter adds tensors of one shape."
            )
        ratio_a = float(f32(a.scale) / f32(y.scale))
        ratio_b = float(f32(b.scale) / f32(y.scale))
        _, shift = fixed_point(max(ratio_a, ratio_b))
        params = {
            "size": y.size,
            "a_zero_point": a.zero_point,
            "b_zero_point": b.zero_point,
            "out_zero_point": y.zero_point,
            "a_multiplier": round(ratio_a * 2**shift),
            "b_multiplier": round(ratio_b * 2**shift),
            "shift": shift,
            "act_min": low,
            "act_max": high,
        }
        self.add_step(
            Step(
                "edgeopt_add",
                node_label(node),
                (a.tensor, b.tensor),
                name,
                struct="edgeopt_add_params",
                params=params,
                summary=f"add {y.size}",
            )
        )

    def lower_Mul(self, node: Any) -> None:
        a, b = self.input(node, 0), self.input(node, 1)
        name, low, high = self.output(node)
        if name is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        y = self.buffers[name]
        if a.shape != y.shape:
            a, b = b, a
        # b either has the output's shape or is broadcast over its trailing axes (a gate)
        keep = len(y.shape)
        while keep > 0 and len(b.shape) == len(y.shape) and b.shape[keep - 1] == 1:
            keep -= 1
        is_gate = len(b.shape) == len(y.shape) and b.shape[:keep] == y.shape[:keep]
        if a.shape != y.shape or not (b.shape == y.shape or is_gate):
            raise self.fail(
                f"node {node_label(node)} multiplies shapes {a.shape} and {b.shape}; the C "
                "exporter multiplies tensors of one shape, or by a gate broadcast over trailing "
                "axes."
            )
        ratio = float(f32(f32(a.scale) * f32(b.scale)) / f32(y.scale))  # ONNX Runtime's
        multiplier, shift = fixed_point(ratio)
        params = {
            "size": y.size,
            "b_inner": y.size // b.size,
            "a_zero_point": a.zero_point,
            "b_zero_point": b.zero_point,
            "out_zero_point": y.zero_point,
            "out_offset": 128 if y.onnx_type == UINT8 else 0,
            "multiplier": multiplier,
            "shift": shift,
            "act_min": low,
            "act_max": high,
        }
        self.add_step(
            Step(
                "edgeopt_mul",
                node_label(node),
                (a.tensor, b.tensor),
                name,
                struct="edgeopt_mul_params",
                params=params,
                summary=f"multiply {y.size}" + (" by a gate" if b.size != y.size else ""),
            )
        )

    def lower_Concat(self, node: Any) -> None:
        parts = [self.input(node, i) for i in range(len(node.input)) if node.input[i]]
        name = self.quantized_output(node)
        y = self.buffers[name]
        axis = int(attributes(node).get("axis", 1)) % len(y.shape)
        outer = math.prod(y.shape[:axis])
        out_inner = math.prod(y.shape[axis:])
        offset = 0
        for position, x in enumerate(parts):
            arrays, table = self.rescale_table(x, y)
            in_inner = math.prod(x.shape[axis:])
            params = {
                "outer": outer,
                "in_inner": in_inner,
                "out_inner": out_inner,
                "offset": offset,
                "table": table,
            }
            self.add_step(
                Step(
                    "edgeopt_concat",
                    node_label(node),
                    (x.tensor,),
                    name,
                    struct="edgeopt_concat_params",
                    params=params,
                    arrays=arrays,
                    summary=f"concat input {position}",
                )
            )
            offset += in_inner

    def lower_Split(self, node: Any) -> None:
        x = self.input(node, 0)
        axis = int(attributes(node).get("axis", 0)) % len(x.shape)
        outer = math.prod(x.shape[:axis])
        in_inner = math.prod(x.shape[axis:])
        offset = 0
        for position, out in enumerate(node.output):
            consumers = self.consumers(out)
            if not out or not consumers:
                continue
            quantizers = [c for c in consumers if c.op_type == "QuantizeLinear"]
            if len(quantizers) != len(consumers) or out in self.graph.outputs:
                raise self.fail(
                    f"node {node_label(node)} writes {out!r} in float; the C exporter needs each "
                    "output of a Split quantized."
                )
            name = self.new_buffer(quantizers[0])
            for extra in quantizers[1:]:
                if self.qparams(extra) != self.qparams(quantizers[0]):
                    raise self.fail(f"tensor {out!r} is quantized twice with different scales.")
                self.views[extra.output[0]] = name
                self.buffers[extra.output[0]] = self.buffers[name]
            y = self.buffers[name]
            arrays, table = self.rescale_table(x, y)
            out_inner = math.prod(y.shape[axis:])
            params = {
                "outer": outer,
                "in_inner": in_inner,
                "out_inner": out_inner,
                "offset": offset,
                "table": table,
            }
            self.add_step(
                Step(
                    "edgeopt_split",
                    node_label(node),
                    (x.tensor,),
                    name,
                    struct="edgeopt_concat_params",
                    params=params,
                    arrays=arrays,
                    summary=f"split output {position}",
                )
            )
            offset += out_inner

    def lower_Transpose(self, node: Any) -> None:
        x = self.input(node, 0)
        name = self.quantized_output(node)
        y = self.buffers[name]
        rank = len(x.shape)
        perm = list(attributes(node).get("perm", list(range(rank))[::-1]))
        if (x.scale, x.zero_point) != (y.scale, y.zero_point):
            raise self.fail(f"node {node_label(node)} changes the scale while transposing.")
        # axes of size 1 do not change the memory order: drop them, renumber the rest
        kept = [axis for axis in range(rank) if x.shape[axis] > 1]
        shape = [x.shape[axis] for axis in kept]
        order = [kept.index(axis) for axis in perm if axis in kept]
        if len(shape) > 4:
            raise self.fail(
                f"node {node_label(node)} transposes {len(shape)} dimensions larger than 1; "
                f"up to 4."
            )
        pad = 4 - len(shape)
        params = {
            "in_shape": [1] * pad + shape,
            "perm": list(range(pad)) + [p + pad for p in order],
        }
        self.add_step(
            Step(
                "edgeopt_transpose",
                node_label(node),
                (x.tensor,),
                name,
                struct="edgeopt_transpose_params",
                params=params,
                summary=f"transpose {perm}",
            )
        )

    def lower_Softmax(self, node: Any) -> None:
        x = self.input(node, 0)
        rank = len(x.shape)
        axis = int(attributes(node).get("axis", -1 if self.opset >= 13 else 1)) % rank
        if axis != rank - 1 and math.prod(x.shape[axis + 1 :]) != 1:
            raise self.fail(
                f"node {node_label(node)} takes softmax over axis {axis}; the last only."
            )
        out = node.output[0]
        size = math.prod(x.shape[axis:])
        rows = x.size // size
        args = (rows, size, f32(x.scale), x.zero_point)
        if out in self.graph.outputs:
            self.float_output = Buffer(out, x.shape, dtype="float32")
            target: str | Ref = OUTPUT
        else:
            self.buffers[out] = Buffer(out, x.shape, dtype="float32")
            self.floats[out] = out
            target = out
        self.add_step(
            Step(
                "edgeopt_softmax_f32",
                node_label(node),
                (x.tensor,),
                target,
                args=args,
                summary=f"softmax over {size} (float)",
            )
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
