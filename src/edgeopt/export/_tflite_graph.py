"""The ONNX graph -> TFLite objects walk behind :mod:`edgeopt.export.tflite` (which says how
the QDQ graph maps to TFLite and why).

One :class:`Converter` per file: each ONNX node goes to its ``convert_<op>``, which appends
TensorFlow Lite schema objects (``TensorT``, ``OperatorT``, ``BufferT``); ``run`` returns the
``ModelT``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from edgeopt.export.c._layers import LayerLowering
from edgeopt.export.c._movement import VIEW_OPS
from edgeopt.export.c._program import node_label
from edgeopt.graph import attributes

__all__ = ["TFLITE_OPS", "Converter", "is_nchw_order", "nhwc"]

#: ONNX operator -> the TFLite builtin it becomes (for the documentation and the refusal).
TFLITE_OPS = {
    "Conv": "CONV_2D, or DEPTHWISE_CONV_2D when each group is one input channel",
    "Gemm": "FULLY_CONNECTED",
    "MatMul": "FULLY_CONNECTED (constant 2-D weight)",
    "Add": "ADD (tensors of one shape)",
    "Mul": "MUL (tensors of one shape)",
    "MaxPool": "MAX_POOL_2D",
    "AveragePool": "AVERAGE_POOL_2D",
    "GlobalAveragePool": "MEAN over H and W",
    "ReduceMean": "MEAN over H and W",
    "Concat": "CONCATENATION",
    "Pad": "PAD (constant zeros)",
    "Transpose": "TRANSPOSE (up to 5 dimensions)",
    "Split": "SPLIT_V",
    "Softmax": "SOFTMAX (last axis)",
    "Relu": "a fused activation, or RELU",
    "Clip": "a fused activation, or RELU6 / RELU_N1_TO_1",
    **{op: "RESHAPE (TRANSPOSE to NCHW first where the order differs)" for op in VIEW_OPS},
}

#: TFLite's fused activations (schema.fbs ``ActivationFunctionType``).
_NONE, _RELU, _RELU_N1_TO_1, _RELU6 = 0, 1, 2, 3
_ACTIVATION_NAMES = {_NONE: "", _RELU: "RELU", _RELU_N1_TO_1: "RELU_N1_TO_1", _RELU6: "RELU6"}
#: ops whose output may absorb a following Relu / Clip (TFLite fuses these)
_FUSING_OPS = {"Conv", "Gemm", "MatMul", "Add", "Mul"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.:/-]")


def nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def is_nchw_order(shape: tuple[int, ...]) -> bool:
    """A 4-D NCHW tensor whose NHWC storage has the same element order (C or H*W is 1)."""
    return len(shape) != 4 or (shape[0] == 1 and (shape[1] == 1 or shape[2] * shape[3] == 1))


def _round_away(value: float) -> int:
    """``TfLiteRound``: half away from zero (``std::round``)."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


class Converter(LayerLowering):
    """One walk over the ONNX graph, each node to its ``convert_<op>``, writing TFLite objects.

    Built on the C lowering's :class:`~edgeopt.export.c._graph.GraphReader` (through
    :class:`~edgeopt.export.c._layers.LayerLowering`, for the window geometry of ``auto_pad``):
    the same reading of the QDQ graph (which tensors are int8 buffers, with which scales; a
    layer's integer weights, bias and fused clamp), so the C library and the ``.tflite`` file
    cannot disagree on what the file says.
    """

    def __init__(
        self,
        model: Any,
        source: str,
        schema: Any,
        *,
        logits_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(model, source)
        self.s = schema
        #: the float logits seen on calibration samples (None: none given)
        self.logits_range = logits_range
        self.is_quantized = any(
            n.op_type == "QuantizeLinear" and not self.is_constant(n.input[0]) for n in self.nodes
        )
        self.tensors: list[Any] = []
        self.tflite_buffers: list[Any] = [schema.BufferT()]  # buffer 0: no data (schema.fbs)
        self.operators: list[Any] = []
        self.opcodes: dict[int, int] = {}
        self.by_name: dict[str, int] = {}  # ONNX tensor (int8 buffer or float tensor) -> tensor
        self.shapes: dict[int, tuple[int, ...]] = {}  # tensor -> its ONNX (NCHW) shape
        self.model_input: int | None = None
        self.model_output: int | None = None
        self.pending: list[tuple[int, int]] = []  # requantizations after a multi-output op

    # -- tensors -------------------------------------------------------------------------------

    def add_tensor(
        self,
        name: str,
        onnx_shape: tuple[int, ...],
        dtype: int,
        *,
        quantization: tuple[Any, Any, int] | None = None,
        data: np.ndarray | None = None,
        is_layout_kept: bool = False,
    ) -> int:
        tensor = self.s.TensorT()
        shape = onnx_shape if is_layout_kept else nhwc(onnx_shape)
        tensor.shape = np.array(shape, dtype=np.int32)
        tensor.type = dtype
        tensor.name = _SAFE_NAME.sub("_", name)[:120] or "t"
        if data is not None:
            buffer = self.s.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            tensor.buffer = len(self.tflite_buffers)
            self.tflite_buffers.append(buffer)
        if quantization is not None:
            scale, zero, axis = quantization
            params = self.s.QuantizationParametersT()
            params.scale = np.asarray(scale, dtype=np.float32).ravel()
            params.zeroPoint = np.asarray(zero, dtype=np.int64).ravel()
            params.quantizedDimension = axis
            tensor.quantization = params
        self.tensors.append(tensor)
        index = len(self.tensors) - 1
        self.shapes[index] = tuple(onnx_shape)
        return index

    def activation(self, name: str, onnx_shape: tuple[int, ...], scale: float, zero: int) -> int:
        """A new activation tensor: int8 (scale, zero point) in a QDQ model, else float32."""
        if self.is_quantized:
            return self.add_tensor(
                name, onnx_shape, self.s.TensorType.INT8, quantization=([scale], [zero], 0)
            )
        return self.add_tensor(name, onnx_shape, self.s.TensorType.FLOAT32)

    def quantization_of(self, tensor: int) -> tuple[float, int]:
        params = self.tensors[tensor].quantization
        if params is None:
            return 1.0, 0
        return float(params.scale[0]), int(params.zeroPoint[0])

    def like(self, tensor: int, name: str, scale: float | None = None, zero: int = 0) -> int:
        """A new activation of ``tensor``'s shape (and quantization, unless given)."""
        if scale is None:
            scale, zero = self.quantization_of(tensor)
        return self.activation(name, self.shapes[tensor], scale, zero)

    def constant(
        self,
        name: str,
        values: np.ndarray,
        dtype: int,
        *,
        scale: Any = None,
        zero: int = 0,
        axis: int = 0,
    ) -> int:
        """A constant tensor (weights, bias, shape, ...); quantized where ``scale`` is given."""
        quantization = None
        if scale is not None:
            count = np.asarray(scale).size
            quantization = (scale, np.full(count, zero, dtype=np.int64), axis)
        return self.add_tensor(
            name,
            tuple(values.shape),
            dtype,
            quantization=quantization,
            data=values,
            is_layout_kept=True,
        )

    def int32s(self, name: str, values: list[int]) -> int:
        return self.constant(name, np.asarray(values, dtype=np.int32), self.s.TensorType.INT32)

    def tensor_of(self, name: str) -> int:
        """The tensor of an ONNX activation: its int8 buffer (through a view), or the float."""
        while name in self.views and name not in self.by_name:
            name = self.views[name]
        if name not in self.by_name:
            buffer = self.buffers.get(name)
            if buffer is None:
                raise self.fail(f"tensor {name!r} is read before it is written.")
            self.by_name[name] = self.activation(
                name, tuple(buffer.shape), buffer.scale, buffer.zero_point
            )
        return self.by_name[name]

    # -- operators -----------------------------------------------------------------------------

    def add_op(
        self,
        code: int,
        inputs: list[int],
        outputs: list[int],
        options: Any = None,
        options_type: int = 0,
    ) -> None:
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)  # its OperatorCodeT is made by pack()
        op = self.s.OperatorT()
        op.opcodeIndex = self.opcodes[code]
        op.inputs = np.array(inputs, dtype=np.int32)
        op.outputs = np.array(outputs, dtype=np.int32)
        if options is not None:
            op.builtinOptionsType = options_type
            op.builtinOptions = options
        self.operators.append(op)

    def options(self, kind: str, **fields: Any) -> tuple[Any, int]:
        value = getattr(self.s, f"{kind}T")()
        for key, item in fields.items():
            setattr(value, key, item)
        return value, getattr(self.s.BuiltinOptions, kind)

    def requantize(self, source: int, target: int) -> None:
        self.add_op(self.s.BuiltinOperator.QUANTIZE, [source], [target])

    # -- reading a node --------------------------------------------------------------------------

    def source_of(self, node: Any, position: int) -> int:
        """The tensor a node reads at ``position`` (through its DequantizeLinear in QDQ)."""
        name = node.input[position]
        if self.is_quantized:
            return self.tensor_of(self.input(node, position).tensor)
        if self.is_constant(name):
            raise self.fail(
                f"node {node_label(node)} has a constant as input {position}; the TFLite "
                "exporter supports constants as weights and biases only."
            )
        if name not in self.by_name:
            raise self.fail(f"tensor {name!r} is read before it is written.")
        return self.by_name[name]

    def result_of(self, node: Any) -> tuple[int | None, int]:
        """The tensor a layer writes and its fused activation; None: float logits of a QDQ
        model's last layer (:meth:`logits_tensor`)."""
        if self.is_quantized:
            name, low, high = self.output(node)
            if name is None:
                return None, _NONE
            tensor = self.tensor_of(name)
            return tensor, self.fused_activation(node, tensor, low, high)
        name, code = node.output[0], _NONE
        consumers = self.consumers(name)
        if (
            node.op_type in _FUSING_OPS
            and len(consumers) == 1
            and consumers[0].op_type in ("Relu", "Clip")
            and name not in self.graph.outputs
        ):
            code = self.float_activation(consumers[0])
            if code is not None:
                self.fused.add(self.index_of(consumers[0]))
                name = consumers[0].output[0]
            else:
                code = _NONE
        return self.float_result(name), code

    def index_of(self, node: Any) -> int:
        return self.index[id(node)]

    def float_result(self, name: str) -> int:
        info = self.graph.tensors.get(name)
        if info is None:
            raise self.fail(f"the shape of tensor {name!r} is unknown.")
        self.by_name[name] = self.activation(name, tuple(info.shape), 1.0, 0)
        return self.by_name[name]

    def plain_result(self, node: Any) -> int:
        """The tensor written by an operator that fuses no activation."""
        if self.is_quantized:
            return self.tensor_of(self.quantized_output(node))
        return self.float_result(node.output[0])

    def float_activation(self, node: Any) -> int | None:
        bounds = self.activation_bounds(node)
        return {(0.0, math.inf): _RELU, (0.0, 6.0): _RELU6, (-1.0, 1.0): _RELU_N1_TO_1}.get(bounds)

    def fused_activation(self, node: Any, tensor: int, low: int, high: int) -> int:
        """The TFLite activation whose int8 clamp (TFLite Micro's
        ``CalculateActivationRangeQuantized``) is the QDQ graph's ``[low, high]``."""
        scale, zero = self.quantization_of(tensor)
        ranges = {
            _NONE: (-128, 127),
            _RELU: (max(-128, zero), 127),
            _RELU6: (max(-128, zero), min(127, zero + _round_away(6.0 / scale))),
            _RELU_N1_TO_1: (
                max(-128, zero + _round_away(-1.0 / scale)),
                min(127, zero + _round_away(1.0 / scale)),
            ),
        }
        for code, bounds in ranges.items():
            if bounds == (low, high):
                return code
        raise self.fail(
            f"node {node_label(node)} clamps its int8 output to [{low}, {high}], which no TFLite "
            "fused activation (RELU, RELU6, RELU_N1_TO_1) gives at its scale."
        )

    def layer_weights(self, node: Any, position: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Integer weights (zero point removed) and their scales, or float weights and None."""
        if self.is_quantized:
            return self.weights(node, position)
        name = node.input[position]
        if not self.is_constant(name):
            raise self.fail(f"node {node_label(node)} has weights {name!r} that are computed.")
        return np.asarray(self.value(name, node), dtype=np.float32), None

    def layer_bias(
        self, node: Any, position: int, acc_scale: np.ndarray | None, channels: int
    ) -> int:
        if self.is_quantized:
            assert acc_scale is not None
            values = self.bias(node, position, acc_scale, channels)
            if values.size and (values.min() < -(2**31) or values.max() >= 2**31):
                raise self.fail(f"node {node_label(node)} has a bias that does not fit int32.")
            return self.constant(
                f"{node.name or node.output[0]}_bias",
                values.astype(np.int32),
                self.s.TensorType.INT32,
                scale=acc_scale,
            )
        if len(node.input) > position and node.input[position]:
            real = np.asarray(self.value(node.input[position], node), dtype=np.float32).ravel()
            values = np.broadcast_to(real, (channels,)).copy()
        else:
            values = np.zeros(channels, dtype=np.float32)
        return self.constant(
            f"{node.name or node.output[0]}_bias", values, self.s.TensorType.FLOAT32
        )

    def weight_tensor(
        self, node: Any, values: np.ndarray, scale: np.ndarray | None, channels: int, axis: int
    ) -> int:
        name = f"{node.name or node.output[0]}_weights"
        if scale is None:
            return self.constant(name, values.astype(np.float32), self.s.TensorType.FLOAT32)
        scales = np.broadcast_to(scale.ravel(), (channels,)) if scale.size > 1 else scale
        return self.constant(
            name, values.astype(np.int8), self.s.TensorType.INT8, scale=scales, axis=axis
        )

    def acc_scale(self, x: int, scale: np.ndarray | None, channels: int) -> np.ndarray | None:
        if scale is None:
            return None
        x_scale, _ = self.quantization_of(x)
        per_channel = np.broadcast_to(scale.ravel(), (channels,))
        return np.array([np.float32(x_scale) * s for s in per_channel], dtype=np.float32)

    # -- geometry --------------------------------------------------------------------------------

    def padding(
        self,
        node: Any,
        x: int,
        kernel: list[int],
        strides: list[int],
        dilations: list[int],
        out_shape: tuple[int, ...],
        pad_value: str = "zero",
    ) -> tuple[int, int]:
        """TFLite's padding (SAME or VALID) for the window; a PAD in front where the ONNX pads
        are neither. Returns the (possibly padded) input and the padding enum.

        ``pad_value``: ``zero`` (convolutions: padding is the real 0, which SAME also uses),
        ``counted`` (an average pool that counts its padding: never SAME, which does not),
        ``lowest`` (max pooling: ONNX pads with -inf, never a window's maximum) or ``refuse``
        (an average pool that does not count its padding: SAME or VALID only).
        """
        label = node.name or node.output[0]
        in_shape = self.shapes[x]
        attrs = attributes(node)
        pads = self.pads(node, attrs, kernel, strides, dilations, in_shape[2:], out_shape[2:])
        for axis in range(2):  # ceil_mode: the last window reaches past the end pad
            span = (kernel[axis] - 1) * dilations[axis] + 1
            reach = (out_shape[2 + axis] - 1) * strides[axis] + span
            pads[2 + axis] += max(reach - (in_shape[2 + axis] + pads[axis] + pads[2 + axis]), 0)
        if not any(pads):
            return x, self.s.Padding.VALID
        is_same = pad_value != "counted"
        for axis in range(2):
            span = (kernel[axis] - 1) * dilations[axis] + 1
            size = in_shape[2 + axis]
            out = -(-size // strides[axis])
            total = max((out - 1) * strides[axis] + span - size, 0)
            if out != out_shape[2 + axis] or pads[axis] != total // 2:
                is_same = False
        if is_same:
            return x, self.s.Padding.SAME
        if pad_value == "refuse":
            raise self.fail(
                f"node {node_label(node)} pads {pads} without counting the padding; TFLite's "
                "average pool takes SAME or VALID padding only."
            )
        top, left, bottom, right = pads
        padded_shape = (
            in_shape[0],
            in_shape[1],
            in_shape[2] + top + bottom,
            in_shape[3] + left + right,
        )
        scale, zero = self.quantization_of(x)
        padded = self.activation(f"{label}_padded", padded_shape, scale, zero)
        paddings = self.constant(
            f"{label}_paddings",
            np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32),
            self.s.TensorType.INT32,
        )
        if pad_value != "lowest":  # PAD fills with the output's zero point: the real 0
            self.add_op(self.s.BuiltinOperator.PAD, [x, paddings], [padded])
        else:  # the lowest value: never the maximum of a window, as ONNX's -inf padding
            if self.is_quantized:
                lowest = self.constant(
                    f"{label}_lowest",
                    np.array([-128], dtype=np.int8),
                    self.s.TensorType.INT8,
                    scale=[scale],
                    zero=zero,
                )
            else:
                lowest = self.constant(
                    f"{label}_lowest",
                    np.array([np.finfo(np.float32).min], dtype=np.float32),
                    self.s.TensorType.FLOAT32,
                )
            self.add_op(self.s.BuiltinOperator.PADV2, [x, paddings, lowest], [padded])
        return padded, self.s.Padding.VALID

    # -- operators: layers -----------------------------------------------------------------------

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
        attrs = attributes(node)
        if (
            attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            raise self.fail(
                f"node {node_label(node)} uses transA, alpha or beta; the TFLite exporter writes "
                "Gemm as a fully connected layer (y = x W^T + b)."
            )
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

    # -- operators: element-wise ---------------------------------------------------------------

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

    # -- operators: data movement ----------------------------------------------------------------

    def transpose(self, x: int, perm: list[int], onnx_shape: tuple[int, ...], name: str) -> int:
        """``x`` with its stored axes permuted; the result's ONNX shape is ``onnx_shape``."""
        scale, zero = self.quantization_of(x)
        y = self.activation(name, onnx_shape, scale, zero)
        stored = tuple(int(d) for d in self.tensors[x].shape)
        self.tensors[y].shape = np.array([stored[p] for p in perm], dtype=np.int32)
        self.add_op(
            self.s.BuiltinOperator.TRANSPOSE,
            [x, self.int32s(f"{name}_perm", perm)],
            [y],
            *self.options("TransposeOptions"),
        )
        return y

    def convert_view(self, node: Any) -> None:
        """Reshape, Flatten, Squeeze, ...: a RESHAPE of the NCHW element order."""
        x = self.source_of(node, 0)
        y = self.plain_result(node)
        in_shape, out_shape = self.shapes[x], self.shapes[y]
        label = node.name or node.output[0]
        if in_shape == out_shape and self.quantization_of(x) == self.quantization_of(y):
            # no step: later readers take x itself
            self.by_name = {k: (x if v == y else v) for k, v in self.by_name.items()}
            self.tensors[y] = None
            return
        source = x
        if not is_nchw_order(in_shape):  # NHWC storage -> the ONNX (NCHW) element order
            source = self.transpose(x, [0, 3, 1, 2], in_shape, f"{label}_nchw")
            self.tensors[source].shape = np.array(in_shape, dtype=np.int32)
        stored_out = nhwc(out_shape) if is_nchw_order(out_shape) else tuple(out_shape)
        reshaped = y
        if not is_nchw_order(out_shape) or self.quantization_of(x) != self.quantization_of(y):
            reshaped = self.like(x, f"{label}_reshaped")
            self.shapes[reshaped] = out_shape
        self.tensors[reshaped].shape = np.array(stored_out, dtype=np.int32)
        shape = self.int32s(f"{label}_shape", list(stored_out))
        options = self.options("ReshapeOptions", newShape=list(stored_out))
        self.add_op(self.s.BuiltinOperator.RESHAPE, [source, shape], [reshaped], *options)
        if not is_nchw_order(out_shape):  # a 4-D result: back to NHWC
            moved = self.transpose(reshaped, [0, 2, 3, 1], out_shape, f"{label}_nhwc")
            reshaped = moved
        if reshaped != y:
            if self.quantization_of(reshaped) == self.quantization_of(y):
                self.by_name = {k: (reshaped if v == y else v) for k, v in self.by_name.items()}
                self.tensors[y] = None
            else:
                self.requantize(reshaped, y)

    def convert_Transpose(self, node: Any) -> None:
        """A TRANSPOSE of the stored axes: the ONNX permutation composed with the NHWC storage
        of a 4-D input and of a 4-D output (ShuffleNet's channel shuffle is a 5-D one)."""
        x = self.source_of(node, 0)
        y = self.plain_result(node)
        in_shape = self.shapes[x]
        rank = len(in_shape)
        perm = [int(p) % rank for p in attributes(node).get("perm", range(rank)[::-1])]
        if rank > 5:
            raise self.fail(
                f"node {node_label(node)} transposes {rank} dimensions; TFLite Micro's "
                "TRANSPOSE takes up to 5."
            )
        if self.is_quantized and self.quantization_of(x) != self.quantization_of(y):
            raise self.fail(f"node {node_label(node)} changes the scale while transposing.")
        # stored axis i of a 4-D tensor holds ONNX axis [0, 2, 3, 1][i] (NHWC)
        stored_in = [0, 2, 3, 1] if rank == 4 else list(range(rank))
        stored_out = [0, 2, 3, 1] if len(self.shapes[y]) == 4 else list(range(rank))
        onnx_to_stored_in = [stored_in.index(axis) for axis in range(rank)]
        stored_perm = [onnx_to_stored_in[perm[axis]] for axis in stored_out]
        self.add_op(
            self.s.BuiltinOperator.TRANSPOSE,
            [x, self.int32s(f"{node.name or node.output[0]}_perm", stored_perm)],
            [y],
            *self.options("TransposeOptions"),
        )

    def convert_Split(self, node: Any) -> None:
        """SPLIT_V along the axis (NHWC's for a 4-D tensor); an output quantized with another
        scale than the input's gets a QUANTIZE after it (SPLIT_V copies bytes)."""
        x = self.source_of(node, 0)
        shape = self.shapes[x]
        rank = len(shape)
        attrs = attributes(node)
        axis = int(attrs.get("axis", 0)) % rank
        sizes = attrs.get("split")
        if sizes is None and len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in np.asarray(self.value(node.input[1], node)).ravel()]
        if sizes is None:
            count = len(node.output)
            sizes = [-(-shape[axis] // count)] * (count - 1)
            sizes.append(shape[axis] - sum(sizes))
        stored_axis = {0: 0, 1: 3, 2: 1, 3: 2}[axis] if rank == 4 else axis
        outputs = []
        for position, out in enumerate(node.output):
            consumers = self.consumers(out)
            out_shape = tuple(d if i != axis else sizes[position] for i, d in enumerate(shape))
            if not self.is_quantized:
                self.by_name[out] = self.activation(out, out_shape, 1.0, 0)
                outputs.append(self.by_name[out])
                continue
            quantizers = [c for c in consumers if c.op_type == "QuantizeLinear"]
            if len(quantizers) != len(consumers) or out in self.graph.outputs:
                raise self.fail(f"node {node_label(node)} writes {out!r} in float.")
            piece = self.like(x, f"{node.name or out}_{position}")
            self.shapes[piece] = out_shape
            self.tensors[piece].shape = np.array(nhwc(out_shape), dtype=np.int32)
            outputs.append(piece)
            if not quantizers:
                continue
            name = self.new_buffer(quantizers[0])
            for extra in quantizers[1:]:
                self.views[extra.output[0]] = name
            target = self.tensor_of(name)
            if self.quantization_of(target) == self.quantization_of(piece):
                self.tensors[target] = None
                self.by_name[name] = piece
            else:
                self.pending.append((piece, target))
        self.add_op(
            self.s.BuiltinOperator.SPLIT_V,
            [
                x,
                self.int32s(f"{node.name or node.output[0]}_sizes", list(sizes)),
                self.constant(
                    f"{node.name or node.output[0]}_axis",
                    np.array(stored_axis, dtype=np.int32),
                    self.s.TensorType.INT32,
                ),
            ],
            outputs,
            *self.options("SplitVOptions", numSplits=len(outputs)),
        )
        for piece, target in self.pending:
            self.requantize(piece, target)
        self.pending = []

    def convert_Concat(self, node: Any) -> None:
        parts = [self.source_of(node, i) for i in range(len(node.input)) if node.input[i]]
        y = self.plain_result(node)
        rank = len(self.shapes[y])
        axis = int(attributes(node).get("axis", 1)) % rank
        if rank == 4:
            axis = {0: 0, 1: 3, 2: 1, 3: 2}[axis]
        # TFLite Micro's int8 CONCATENATION copies bytes: every input in the output's scale
        wanted = self.quantization_of(y)
        moved = []
        for position, part in enumerate(parts):
            if self.is_quantized and self.quantization_of(part) != wanted:
                rescaled = self.like(part, f"{node.name or y}_in{position}", *wanted)
                self.requantize(part, rescaled)
                part = rescaled
            moved.append(part)
        options = self.options("ConcatenationOptions", axis=axis)
        self.add_op(self.s.BuiltinOperator.CONCATENATION, moved, [y], *options)

    def convert_Pad(self, node: Any) -> None:
        x = self.source_of(node, 0)
        attrs = attributes(node)
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        pads = attrs.get("pads")
        if pads is None and len(node.input) > 1:
            pads = [int(v) for v in np.asarray(self.value(node.input[1], node)).ravel()]
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = float(np.asarray(self.value(node.input[2], node)).ravel()[0])
        rank = len(self.shapes[x])
        if mode != "constant" or value != 0.0 or pads is None or len(pads) != 2 * rank:
            raise self.fail(
                f"node {node_label(node)} pads in mode {mode} with {value}; the TFLite exporter "
                "writes constant zero padding (PAD)."
            )
        if any(int(p) < 0 for p in pads):
            raise self.fail(f"node {node_label(node)} crops (negative pads); not supported.")
        pairs = [[int(pads[i]), int(pads[i + rank])] for i in range(rank)]
        if rank == 4:
            pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]
        y = self.plain_result(node)
        if self.is_quantized and self.quantization_of(x) != self.quantization_of(y):
            raise self.fail(f"node {node_label(node)} changes the scale while padding.")
        paddings = self.constant(
            f"{node.name or node.output[0]}_paddings",
            np.array(pairs, dtype=np.int32),
            self.s.TensorType.INT32,
        )
        self.add_op(self.s.BuiltinOperator.PAD, [x, paddings], [y])

    # -- quantization boundaries -----------------------------------------------------------------

    def convert_QuantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if node.output[0] in self.buffers:
            return  # written by its layer
        if source in self.graph.inputs:
            if self.model_input is not None:
                raise self.fail(
                    "the graph input is quantized twice; the TFLite exporter needs one."
                )
            self.model_input = self.tensor_of(self.new_buffer(node))
            return
        if source in self.dequantized:  # a change of scale: DequantizeLinear -> QuantizeLinear
            before = self.tensor_of(self.dequantized[source])
            after = self.tensor_of(self.new_buffer(node))
            if self.quantization_of(before) == self.quantization_of(after):
                self.by_name[node.output[0]] = before
                self.tensors[after] = None
            else:
                self.requantize(before, after)
            return
        producer = self.graph.producers.get(source)
        who = node_label(producer) if producer is not None else repr(source)
        raise self.fail(f"node {node_label(node)} quantizes the float output of {who}.")

    def convert_DequantizeLinear(self, node: Any) -> None:
        source = node.input[0]
        if source not in self.buffers:
            raise self.fail(
                f"node {node_label(node)} dequantizes {source!r}, which is no activation."
            )
        self.dequantized[node.output[0]] = source

    # -- the walk ------------------------------------------------------------------------------

    def check_types(self) -> None:
        """int8 / uint8 activations only: TFLite Micro's int16 kernels (16x8) are another path."""
        for node in self.nodes:
            if node.op_type != "QuantizeLinear" or self.is_constant(node.input[0]):
                continue
            if len(node.input) > 2 and node.input[2]:
                dtype = np.asarray(self.value(node.input[2], node)).dtype
            else:
                output_dtype = attributes(node).get("output_dtype", 0)
                dtype = np.dtype(np.int8 if output_dtype == 3 else np.uint8)
                if output_dtype not in (0, 2, 3):
                    dtype = np.dtype(f"V{output_dtype}")  # an ONNX type number, named below
            if dtype not in (np.int8, np.uint8):
                raise self.fail(
                    f"node {node_label(node)} quantizes activations to {dtype}; the TFLite "
                    "exporter writes int8 models (int8 or uint8 QDQ, as edgeopt quantize writes)."
                )

    def run(self) -> Any:
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise self.fail(
                f"the graph has {len(self.graph.inputs)} inputs and {len(self.graph.outputs)} "
                "outputs; the TFLite exporter writes one of each."
            )
        self.logits: int | None = None
        if self.is_quantized:
            self.check_types()
        else:
            name = self.graph.inputs[0]
            self.model_input = self.float_result(name)
        for position, node in enumerate(self.nodes):
            if position in self.fused or all(self.is_constant(o) for o in node.output if o):
                continue
            if node.op_type in VIEW_OPS:
                handler = self.convert_view
            else:
                handler = getattr(self, f"convert_{node.op_type}", None)
            if handler is None or (
                not self.is_quantized and node.op_type.endswith("QuantizeLinear")
            ):
                raise self.fail(
                    f"node {node.name or node.output[0]!r} ({node.op_type}): unsupported "
                    f"operator; the TFLite exporter writes {', '.join(sorted(TFLITE_OPS))}."
                )
            handler(node)
        return self.finish()

    def finish(self) -> Any:
        if self.model_input is None:
            raise self.fail(
                "the graph input is not quantized by a QuantizeLinear; the TFLite exporter needs "
                "a float input followed by QuantizeLinear (edgeopt quantize writes one)."
            )
        output = self.graph.outputs[0]
        if self.is_quantized:
            if (
                self.logits is not None
                and self.graph.producers.get(output) is not None
                and (self.graph.producers[output].op_type in ("Gemm", "MatMul", "Softmax"))
            ):
                self.model_output = self.logits
            elif output in self.dequantized:
                self.model_output = self.tensor_of(self.dequantized[output])
            elif output in self.buffers:
                self.model_output = self.tensor_of(output)
            else:
                producer = self.graph.producers.get(output)
                who = node_label(producer) if producer is not None else repr(output)
                raise self.fail(f"the graph output comes from {who}, which is not converted.")
        else:
            self.model_output = self.by_name[output]
        return self.pack()

    def pack(self) -> Any:
        """The ModelT, with the tensors left unused (aliased away) dropped and renumbered."""
        kept = [i for i, t in enumerate(self.tensors) if t is not None]
        renumber = {old: new for new, old in enumerate(kept)}
        for op in self.operators:
            op.inputs = np.array([renumber[int(i)] for i in op.inputs], dtype=np.int32)
            op.outputs = np.array([renumber[int(i)] for i in op.outputs], dtype=np.int32)
        subgraph = self.s.SubGraphT()
        subgraph.tensors = [self.tensors[i] for i in kept]
        assert self.model_input is not None and self.model_output is not None
        subgraph.inputs = np.array([renumber[self.model_input]], dtype=np.int32)
        subgraph.outputs = np.array([renumber[self.model_output]], dtype=np.int32)
        subgraph.operators = self.operators
        subgraph.name = "main"
        model = self.s.ModelT()
        model.version = 3
        model.description = "edgeopt"
        model.subgraphs = [subgraph]
        codes = sorted(self.opcodes, key=self.opcodes.__getitem__)
        model.operatorCodes = []
        for code in codes:
            opcode = self.s.OperatorCodeT()
            opcode.builtinCode = code
            opcode.deprecatedBuiltinCode = min(code, 127)  # schema.fbs: 127 = see builtin_code
            opcode.version = 1
            model.operatorCodes.append(opcode)
        model.buffers = self.tflite_buffers
        return model
