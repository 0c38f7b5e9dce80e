"""Lower the arithmetic of one value or one row: lookup tables, Add, Mul, Softmax.

None of these has weights, so none belongs with the layers (:mod:`edgeopt.export.c._layers`);
all compute new values, so none belongs with data movement
(:mod:`edgeopt.export.c._movement`). A function of one int8 value (an activation left in the
graph: Relu, Sigmoid, ...) is a 256-entry table evaluated with ONNX Runtime, so it holds the
reference's own float math; Add and Mul requantize with the float32 ratios ONNX Runtime
computes, as fixed-point multipliers; Softmax is computed per row in float.
"""

from __future__ import annotations

import math
from typing import Any

from edgeopt.export.c._graph import GraphReader
from edgeopt.export.c._program import OUTPUT
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Buffer
from edgeopt.export.c._program import Ref
from edgeopt.export.c._program import Step
from edgeopt.export.c._program import f32
from edgeopt.export.c._program import fixed_point
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

#: Element-wise functions of one quantized value, lowered to a 256-entry table.
UNARY_OPS = {"Relu", "Clip", "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Tanh"}


class ElementwiseLowering(GraphReader):
    """Functions of one value as tables, Add and Mul of two tensors, Softmax over a row."""

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
