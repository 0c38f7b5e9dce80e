"""The state and the shared reading of the ONNX -> TFLite walk: tensors and buffers written
so far, an operator's inputs and outputs (through the QDQ graph's int8 buffers), fused
activations, weights and biases, window padding. :mod:`edgeopt.export.tflite` says how the QDQ
graph maps to TFLite and why; the handlers are mixins over :class:`TFLiteGraph` by concept
(``_layers``, ``_elementwise``, ``_movement``), combined by ``convert.Converter``, as the C
lowering's mixins over its ``GraphReader``.
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

__all__ = ["TFLITE_OPS", "TFLiteGraph", "is_nchw_order", "nhwc"]

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


class TFLiteGraph(LayerLowering):
    """The ONNX graph being written as TFLite objects: tensors, buffers, operators so far.

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

    # -- data movement shared by layers and views ----------------------------------------

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
