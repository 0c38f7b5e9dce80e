"""Write the arithmetic of one value or one row: ADD, MUL, RELU / RELU6, SOFTMAX."""

from __future__ import annotations

import math
from typing import Any

from edgeopt.export._tflite._base import _RELU
from edgeopt.export._tflite._base import _RELU6
from edgeopt.export._tflite._base import _RELU_N1_TO_1
from edgeopt.export._tflite._base import TFLiteGraph
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

__all__ = ["ElementwiseConversion"]


class ElementwiseConversion(TFLiteGraph):
    """Add and Mul of two tensors, a Relu / Clip left alone, Softmax over a row."""

    def binary(self, node: Any, code: int, kind: str) -> None:
        a, b = self.source_of(node, 0), self.source_of(node, 1)
        y, activation = self.result_of(node)
        if y is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        if self.shapes[a] != self.shapes[y] or self.shapes[b] != self.shapes[y]:
            raise self.fail(
                f"node {node_label(node)} broadcasts shapes {self.shapes[a]} and "
                f"{self.shapes[b]}; the TFLite exporter writes {node.op_type} of one shape."
            )
        self.add_op(code, [a, b], [y], *self.options(kind, fusedActivationFunction=activation))

    def convert_Add(self, node: Any) -> None:
        self.binary(node, self.s.BuiltinOperator.ADD, "AddOptions")

    def convert_Mul(self, node: Any) -> None:
        self.binary(node, self.s.BuiltinOperator.MUL, "MulOptions")

    def convert_Relu(self, node: Any) -> None:
        self.unary_activation(node)

    def convert_Clip(self, node: Any) -> None:
        self.unary_activation(node)

    def unary_activation(self, node: Any) -> None:
        x = self.source_of(node, 0)
        code = self.float_activation(node)
        builtin = {
            _RELU: self.s.BuiltinOperator.RELU,
            _RELU6: self.s.BuiltinOperator.RELU6,
            _RELU_N1_TO_1: self.s.BuiltinOperator.RELU_N1_TO_1,
        }.get(code)  # type: ignore[arg-type]
        if builtin is None:
            raise self.fail(
                f"node {node_label(node)} clamps to {self.activation_bounds(node)}; the TFLite "
                "exporter writes Clip(0, 6), Clip(-1, 1) and Relu."
            )
        self.add_op(builtin, [x], [self.plain_result(node)])

    def convert_Softmax(self, node: Any) -> None:
        x = self.source_of(node, 0)
        shape = self.shapes[x]
        axis = int(attributes(node).get("axis", -1 if self.opset >= 13 else 1)) % len(shape)
        if len(shape) == 4 or math.prod(shape[axis + 1 :]) != 1 or math.prod(shape[:axis]) != 1:
            raise self.fail(
                f"node {node_label(node)} takes softmax over axis {axis} of {shape}; the TFLite "
                "exporter writes softmax over the last axis of a vector."
            )
        out = node.output[0]
        options = self.options("SoftmaxOptions", beta=1.0)
        if not self.is_quantized:
            self.add_op(self.s.BuiltinOperator.SOFTMAX, [x], [self.float_result(out)], *options)
            return
        # TFLite Micro's int8 SOFTMAX writes scale 1/256, zero point -128 (softmax_common.cc)
        y = self.like(x, out, scale=1.0 / 256.0, zero=-128)
        self.add_op(self.s.BuiltinOperator.SOFTMAX, [x], [y], *options)
        if out in self.graph.outputs:
            self.logits = y
            return
        quantizers = [c for c in self.consumers(out) if c.op_type == "QuantizeLinear"]
        if not quantizers or len(quantizers) != len(self.consumers(out)):
            raise self.fail(f"node {node_label(node)} writes {out!r} in float to another layer.")
        name = self.new_buffer(quantizers[0])
        for extra in quantizers[1:]:
            self.views[extra.output[0]] = name
        target = self.tensor_of(name)
        if self.quantization_of(target) == self.quantization_of(y):
            self.by_name[name] = y
        else:
            self.requantize(y, target)
