"""Write the layers with weights and the pooling: CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, MAX_POOL_2D, AVERAGE_POOL_2D, MEAN."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeopt.export._tflite._base import TFLiteGraph
from edgeopt.export._tflite._base import is_nchw_order
from edgeopt.export._tflite._base import nhwc
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

__all__ = ["LayerConversion"]


class LayerConversion(TFLiteGraph):
    """Conv, Gemm / MatMul, max / average / global pooling, ReduceMean."""

    def convert_Conv(self, node: Any) -> None:
        x = self.source_of(node, 0)
        values, scale = self.layer_weights(node, 1)
        in_shape = self.shapes[x]
        attrs = attributes(node)
        if len(in_shape) != 4 or values.ndim != 4:
            raise self.fail(
                f"node {node_label(node)} is a {len(in_shape) - 2}-D convolution; the TFLite "
                "exporter writes 2-D convolutions (CONV_2D, DEPTHWISE_CONV_2D) only."
            )
        out_c, in_per_group = values.shape[:2]
        in_c = in_shape[1]
        groups = int(attrs.get("group", 1))
        kernel = list(attrs.get("kernel_shape", values.shape[2:]))
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        is_depthwise = groups == in_c and groups > 1 and in_per_group == 1
        if groups != 1 and not is_depthwise:
            raise self.fail(
                f"node {node_label(node)} is a grouped convolution ({groups} groups of "
                f"{in_per_group} channels); TFLite Micro runs group 1 (CONV_2D) or one input "
                "channel per group (DEPTHWISE_CONV_2D) only."
            )
        y, activation = self.result_of(node)
        if y is None:
            raise self.fail(f"node {node_label(node)} writes the graph output in float.")
        x, padding = self.padding(node, x, kernel, strides, dilations, self.shapes[y])
        acc_scale = self.acc_scale(x, scale, out_c)
        if is_depthwise:  # (C*M, 1, kh, kw) -> (1, kh, kw, C*M)
            weights = self.weight_tensor(node, values.transpose(1, 2, 3, 0), scale, out_c, 3)
            code = self.s.BuiltinOperator.DEPTHWISE_CONV_2D
            options = self.options(
                "DepthwiseConv2DOptions",
                padding=padding,
                strideH=strides[0],
                strideW=strides[1],
                dilationHFactor=dilations[0],
                dilationWFactor=dilations[1],
                depthMultiplier=out_c // in_c,
                fusedActivationFunction=activation,
            )
        else:  # (O, I, kh, kw) -> OHWI
            weights = self.weight_tensor(node, values.transpose(0, 2, 3, 1), scale, out_c, 0)
            code = self.s.BuiltinOperator.CONV_2D
            options = self.options(
                "Conv2DOptions",
                padding=padding,
                strideH=strides[0],
                strideW=strides[1],
                dilationHFactor=dilations[0],
                dilationWFactor=dilations[1],
                fusedActivationFunction=activation,
            )
        bias = self.layer_bias(node, 2, acc_scale, out_c)
        self.add_op(code, [x, weights, bias], [y], *options)

    def fully_connected(self, node: Any, values: np.ndarray, scale: np.ndarray | None) -> None:
        """``values`` (out, in): FULLY_CONNECTED over a vector of the input's elements."""
        x = self.source_of(node, 0)
        if not is_nchw_order(self.shapes[x]):  # FULLY_CONNECTED reads the stored order
            x = self.transpose(x, [0, 3, 1, 2], self.shapes[x], f"{node.name or 'fc'}_nchw")
            self.shapes[x] = (1, math.prod(self.shapes[x]))
        out_features, in_features = values.shape
        size = math.prod(self.shapes[x])
        if size != in_features:
            raise self.fail(
                f"node {node_label(node)} multiplies {size} values by a {in_features}-input "
                "weight; the TFLite exporter writes a batch of one row."
            )
        acc_scale = self.acc_scale(x, scale, out_features)
        y, activation = self.result_of(node)
        if y is None:
            y = self.logits_tensor(node, x, values, acc_scale)
        weights = self.weight_tensor(node, values, scale, out_features, 0)
        bias = self.layer_bias(node, 2 if node.op_type == "Gemm" else 99, acc_scale, out_features)
        options = self.options("FullyConnectedOptions", fusedActivationFunction=activation)
        self.add_op(self.s.BuiltinOperator.FULLY_CONNECTED, [x, weights, bias], [y], *options)

    def logits_tensor(
        self, node: Any, x: int, values: np.ndarray, acc_scale: np.ndarray | None
    ) -> int:
        """The int8 output of a last layer that writes float logits in the QDQ file.

        The file gives no scale for them. The widest range the layer can reach is each output's
        integer sum over the whole int8 input range, ``bias + sum max(w (x - z))``: no input
        makes a logit saturate there, but 256 levels over it are coarse (two close logits of
        LeNet-5 become one level and the top-1 is a tie). So where calibration samples were
        given, the range is the one their logits span (the exact reference's, with 10% on each
        side), within the widest; the widest otherwise.
        """
        assert acc_scale is not None
        _, x_zero = self.quantization_of(x)
        low_x, high_x = -128 - x_zero, 127 - x_zero
        weights = values.astype(np.float64)
        bias = self.bias(node, 2 if node.op_type == "Gemm" else 99, acc_scale, len(values))
        high = bias + np.maximum(weights * low_x, weights * high_x).sum(axis=1)
        low = bias + np.minimum(weights * low_x, weights * high_x).sum(axis=1)
        real_high = max(float((high * acc_scale).max()), 0.0)
        real_low = min(float((low * acc_scale).min()), 0.0)
        if self.logits_range is not None:
            seen_low, seen_high = self.logits_range
            margin = 0.1 * (seen_high - seen_low)
            real_low = max(real_low, min(seen_low - margin, 0.0))
            real_high = min(real_high, max(seen_high + margin, 0.0))
        scale = (real_high - real_low) / 255.0 or 1.0
        zero = int(np.clip(round(-128 - real_low / scale), -128, 127))
        info = self.graph.tensors[node.output[0]]
        tensor = self.activation(node.output[0], tuple(info.shape), scale, zero)
        self.logits = tensor
        return tensor

    def convert_Gemm(self, node: Any) -> None:
        attrs = self.plain_gemm(node, "TFLite")
        values, scale = self.layer_weights(node, 1)
        self.fully_connected(node, values if attrs.get("transB", 0) else values.T, scale)

    def convert_MatMul(self, node: Any) -> None:
        values, scale = self.layer_weights(node, 1)
        if values.ndim != 2:
            raise self.fail(f"node {node_label(node)} multiplies by a {values.ndim}-D weight.")
        self.fully_connected(node, values.T, scale)

    def pool(self, node: Any, code: int, pad_value: str) -> None:
        x = self.source_of(node, 0)
        attrs = attributes(node)
        if len(self.shapes[x]) != 4:
            raise self.fail(f"node {node_label(node)} pools a {len(self.shapes[x])}-D tensor.")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise self.fail(f"node {node_label(node)} pools with dilations; TFLite's has none.")
        if attrs.get("ceil_mode", 0) and pad_value != "lowest":
            raise self.fail(
                f"node {node_label(node)} averages with ceil_mode; TFLite's average pool has "
                "none (max pooling with ceil_mode is written with an end pad)."
            )
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(f"node {node_label(node)} returns indices; not supported.")
        kernel = list(attrs.get("kernel_shape", self.shapes[x][2:]))
        strides = list(attrs.get("strides", [1, 1]))
        y = self.plain_result(node)
        x, padding = self.padding(node, x, kernel, strides, [1, 1], self.shapes[y], pad_value)
        # TFLite Micro's int8 pooling keeps its input's quantization (pooling.cc): a change of
        # scale in the QDQ file is a QUANTIZE after it
        pooled = y
        if self.is_quantized and self.quantization_of(x) != self.quantization_of(y):
            pooled = self.like(x, f"{node.name or node.output[0]}_pooled")
            self.shapes[pooled] = self.shapes[y]
            self.tensors[pooled].shape = np.array(nhwc(self.shapes[y]), dtype=np.int32)
        options = self.options(
            "Pool2DOptions",
            padding=padding,
            strideH=strides[0],
            strideW=strides[1],
            filterHeight=kernel[0],
            filterWidth=kernel[1],
        )
        self.add_op(code, [x], [pooled], *options)
        if pooled != y:
            self.requantize(pooled, y)

    def convert_MaxPool(self, node: Any) -> None:
        self.pool(node, self.s.BuiltinOperator.MAX_POOL_2D, "lowest")

    def convert_AveragePool(self, node: Any) -> None:
        # count_include_pad: the padding counts, as zeros (PAD writes the real 0) in a VALID pool
        pad_value = "counted" if attributes(node).get("count_include_pad", 0) else "refuse"
        self.pool(node, self.s.BuiltinOperator.AVERAGE_POOL_2D, pad_value)

    def convert_GlobalAveragePool(self, node: Any) -> None:
        x = self.source_of(node, 0)
        shape = self.shapes[x]
        if len(shape) != 4:
            raise self.fail(f"node {node_label(node)} pools a {len(shape)}-D tensor.")
        y = self.plain_result(node)
        axes = self.int32s(f"{node.name or node.output[0]}_axes", [1, 2])
        options = self.options("ReducerOptions", keepDims=True)
        self.add_op(self.s.BuiltinOperator.MEAN, [x, axes], [y], *options)

    def convert_ReduceMean(self, node: Any) -> None:
        """A mean over H and W (``x.mean((2, 3))``, which PyTorch exports for
        ``AdaptiveAvgPool2d(1)`` in a float model): MEAN over NHWC's axes 1 and 2."""
        x = self.source_of(node, 0)
        attrs = attributes(node)
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = [int(a) for a in np.asarray(self.value(node.input[1], node)).ravel()]
        rank = len(self.shapes[x])
        if rank != 4 or axes is None or sorted(a % rank for a in axes) != [2, 3]:
            raise self.fail(
                f"node {node_label(node)} takes a mean over axes {axes}; the TFLite exporter "
                "writes a mean over H and W (MEAN)."
            )
        y = self.plain_result(node)
        axes_tensor = self.int32s(f"{node.name or node.output[0]}_axes", [1, 2])
        options = self.options("ReducerOptions", keepDims=bool(attrs.get("keepdims", 1)))
        self.add_op(self.s.BuiltinOperator.MEAN, [x, axes_tensor], [y], *options)
