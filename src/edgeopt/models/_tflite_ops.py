"""One converter per TFLite builtin operator, for :mod:`edgeopt.models.tflite`.

Each follows the operator's options in TensorFlow Lite's ``schema.fbs`` and the arithmetic of
TensorFlow Lite Micro's reference kernels (``tensorflow/lite/kernels/internal/reference/``):
it reads its inputs in the layout it computes in (NCHW for convolutions and pooling, the
file's NHWC otherwise), emits float ONNX operators, and hands the result to
``_Importer.write``, which adds the fused activation and, for an int8 output, the QDQ pair.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

_NHWC_TO_NCHW = (0, 3, 1, 2)


def safe_name(text: Any, *, limit: int = 60) -> str:
    """A tensor or operator name from the file, reduced to ``[A-Za-z0-9_.:/-]`` and bounded:
    it reaches ONNX names, console messages and (through those) generated code."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    cleaned = re.sub(r"[^A-Za-z0-9_.:/-]", "_", str(text or ""))[:limit]
    return cleaned or "tensor"


def operator_name(imp: Any, position: int, operator: Any) -> str:
    """The builtin name of operator number ``position``, or a sentence refusing it (a custom
    operator, one the import does not cover, an opcode outside the file)."""
    if not 0 <= operator.opcodeIndex < len(imp.codes):
        raise imp.fail(
            f"operator {position} names opcode {operator.opcodeIndex}, but the file has "
            f"{len(imp.codes)}."
        )
    code = imp.codes[operator.opcodeIndex]
    # old files (person_detect) keep the code in deprecated_builtin_code only (schema.fbs)
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    op = imp.op_names.get(builtin, f"builtin {builtin}")
    if op == "CUSTOM":
        custom = safe_name(code.customCode, limit=40)
        raise imp.fail(
            f"operator {position} is the custom operator {custom!r}, which edgeopt cannot import "
            "(it imports TFLite builtin operators only)."
        )
    if op not in OPERATORS:
        raise imp.fail(
            f"operator {position} is {op}, which edgeopt does not import yet; supported: "
            f"{', '.join(sorted(OPERATORS))}."
        )
    return op


def convert_operator(imp: Any, position: int, operator: Any) -> None:
    """Convert operator number ``position``, or refuse it in one sentence naming it."""
    op = operator_name(imp, position, operator)
    handler = OPERATORS[op]
    inputs = [int(i) for i in (operator.inputs if operator.inputs is not None else [])]
    outputs = [int(i) for i in (operator.outputs if operator.outputs is not None else [])]
    where = f"operator {position} ({op})"
    for index in inputs:
        if index != -1:
            imp.tensor_index(index, where)
    for index in outputs:
        imp.tensor_index(index, where)
    if len(outputs) != 1:
        raise imp.fail(f"{where} has {len(outputs)} outputs; one expected.")
    handler(_Op(imp, op, where, inputs, outputs[0], operator.builtinOptions))


class _Op:
    """One operator being converted: its inputs, its one output and its options."""

    def __init__(
        self, imp: Any, op: str, where: str, inputs: list[int], output: int, options: Any
    ) -> None:
        self.imp, self.op, self.where = imp, op, where
        self.inputs, self.output, self.options = inputs, output, options
        self.base = safe_name(imp.tensors[output].name)

    def input(self, position: int) -> int:
        if position >= len(self.inputs) or self.inputs[position] == -1:
            raise self.imp.fail(f"{self.where} lacks its input {position}.")
        return self.inputs[position]

    def option(self, name: str, default: Any = 0) -> Any:
        return getattr(self.options, name, default) if self.options is not None else default

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(self.imp.shapes[index])

    def read(self, position: int, *, is_nchw: bool, rank: int | None = None) -> str:
        return self.imp.read(self.input(position), is_nchw=is_nchw, where=self.where, rank=rank)

    def write(self, result: str, *, is_nchw: bool, fused: bool = True) -> None:
        activation = int(self.option("fusedActivationFunction", 0)) if fused else 0
        self.imp.write(self.output, result, is_nchw=is_nchw, activation=activation, op=self.where)

    def node(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        return self.imp.node(op_type, inputs, f"{self.base}_{op_type.lower()}", **attrs)

    def weights(self, position: int, perm: tuple[int, ...]) -> tuple[str, np.ndarray]:
        """A constant weight transposed by ``perm``, dequantized per channel when int8."""
        index = self.input(position)
        values = self.imp.constant(index)
        if values is None:
            raise self.imp.fail(
                f"{self.where} has weights {self.imp.label(index)} that are not constant."
            )
        quant = self.imp.quant(index)
        moved = np.ascontiguousarray(values.transpose(perm))
        name = safe_name(self.imp.tensors[index].name)
        if quant is None:
            if self.imp.quant(self.output) is not None or moved.dtype != np.float32:
                raise self.imp.fail(
                    f"{self.where} mixes {moved.dtype} weights with an int8 output."
                )
            return self.imp.init(moved, name), moved
        if self.imp.quant(self.output) is None:
            raise self.imp.fail(
                f"{self.where} has int8 weights and a float output (dynamic-range quantization), "
                "which edgeopt does not import; convert the model to full int8 or float."
            )
        if np.any(quant.zero != 0):
            raise self.imp.fail(
                f"{self.where} has int8 weights with non-zero zero points; the quantization spec "
                "makes them symmetric."
            )
        return self.imp.dequantized_constant(moved, quant, perm.index(quant.axis), name), moved

    def bias(self, position: int, x_index: int, w_index: int, channels: int) -> list[str]:
        """The bias (none, float, or int32 read with the scale input_scale * weight_scale)."""
        if position >= len(self.inputs) or self.inputs[position] == -1:
            return []
        index = self.inputs[position]
        values = self.imp.constant(index)
        if values is None or values.size != channels:
            raise self.imp.fail(
                f"{self.where} has a bias {self.imp.label(index)} that is not a constant of "
                f"{channels} values."
            )
        name = safe_name(self.imp.tensors[index].name)
        if values.dtype == np.float32:
            return [self.imp.init(values.reshape(channels), name)]
        x_quant, w_quant = self.imp.quant(x_index), self.imp.quant(w_index)
        if values.dtype != np.int32 or x_quant is None or w_quant is None:
            raise self.imp.fail(
                f"{self.where} has a {values.dtype} bias; int32 (int8 models) or float32 expected."
            )
        scale = (np.float32(x_quant.scale[0]) * w_quant.scale).astype(np.float32)
        q = self.imp.init(values.reshape(channels).astype(np.int32), f"{name}_quantized")
        if scale.size == 1:
            s = self.imp.init(np.float32(scale[0]), f"{name}_scale")
            z = self.imp.init(np.int32(0), f"{name}_zero_point")
            return [self.imp.node("DequantizeLinear", [q, s, z], name)]
        s = self.imp.init(scale, f"{name}_scale")
        z = self.imp.init(np.zeros(channels, np.int32), f"{name}_zero_point")
        return [self.imp.node("DequantizeLinear", [q, s, z], name, axis=0)]

    def check_shape(self, computed: tuple[int, ...]) -> None:
        if tuple(computed) != self.shape(self.output):
            raise self.imp.fail(
                f"{self.where} computes shape {list(computed)}, but the file says "
                f"{list(self.shape(self.output))}."
            )


def _same_padding(
    size: int, kernel: int, stride: int, dilation: int, padding: int
) -> tuple[int, int, int]:
    """Output size and the pads before and after, as TFLite computes them
    (``ComputeOutSize`` and ``ComputePaddingHeightWidth`` in kernels/padding.h): SAME puts the
    smaller half of the padding before."""
    span = (kernel - 1) * dilation + 1
    if stride < 1 or dilation < 1 or kernel < 1:
        return 0, 0, 0
    if padding == 0:  # SAME
        out = (size + stride - 1) // stride
    else:  # VALID
        out = (size - span + stride) // stride
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2, total - total // 2


def _window(
    op: _Op, in_shape: tuple[int, ...], kernel: tuple[int, int], channels: int
) -> dict[str, Any]:
    """Strides, dilations and pads of a convolution or pool over an NHWC input; the output
    shape checked against the file's."""
    strides = (int(op.option("strideH", 1)), int(op.option("strideW", 1)))
    dilations = (int(op.option("dilationHFactor", 1)), int(op.option("dilationWFactor", 1)))
    padding = int(op.option("padding", 0))
    if padding not in (0, 1) or min(*strides, *dilations) < 1 or min(kernel) < 1:
        raise op.imp.fail(
            f"{op.where} has padding {padding}, strides {strides} or dilations {dilations} "
            "outside the schema."
        )
    outs, begins, ends = [], [], []
    for axis in range(2):
        out, begin, end = _same_padding(
            in_shape[1 + axis], kernel[axis], strides[axis], dilations[axis], padding
        )
        outs.append(out)
        begins.append(begin)
        ends.append(end)
    op.check_shape((in_shape[0], outs[0], outs[1], channels))
    return {"strides": list(strides), "dilations": list(dilations), "pads": begins + ends}


def _conv(op: _Op) -> None:
    x_index, w_index = op.input(0), op.input(1)
    x_shape = op.shape(x_index)
    w_shape = op.shape(w_index)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise op.imp.fail(
            f"{op.where} convolves a {len(x_shape)}-D input with a {len(w_shape)}-D filter; 4-D "
            "expected."
        )
    if op.op == "CONV_2D":  # filter OHWI -> OIHW; grouped when the input has more channels
        out_c, kh, kw, w_in = w_shape
        perm: tuple[int, ...] = (0, 3, 1, 2)
        if w_in < 1 or x_shape[3] % w_in:
            raise op.imp.fail(f"{op.where} has {x_shape[3]} input channels for a filter of {w_in}.")
        group = x_shape[3] // w_in
    else:  # DEPTHWISE_CONV_2D: filter 1HW(C*M) -> (C*M)1HW, a group per input channel
        _, kh, kw, out_c = w_shape
        perm = (3, 0, 1, 2)
        group = x_shape[3]
        multiplier = int(op.option("depthMultiplier", 0))
        if (
            w_shape[0] != 1
            or group < 1
            or out_c % group
            or (multiplier and out_c != group * multiplier)
        ):
            raise op.imp.fail(
                f"{op.where} has a filter {list(w_shape)} for {group} channels and depth "
                f"multiplier {multiplier}."
            )
    attrs = _window(op, x_shape, (kh, kw), out_c)
    x = op.read(0, is_nchw=True)
    w, _ = op.weights(1, perm)
    b = op.bias(2, x_index, w_index, out_c)
    y = op.node("Conv", [x, w, *b], kernel_shape=[kh, kw], group=group, **attrs)
    op.write(y, is_nchw=True)


def _fully_connected(op: _Op) -> None:
    x_index, w_index = op.input(0), op.input(1)
    if int(op.option("weightsFormat", 0)) != 0:
        raise op.imp.fail(f"{op.where} uses shuffled weights; edgeopt reads the default format.")
    w_shape = op.shape(w_index)
    if len(w_shape) != 2:
        raise op.imp.fail(f"{op.where} has a {len(w_shape)}-D weight; 2-D expected.")
    units, depth = w_shape
    x_shape = op.shape(x_index)
    size = int(np.prod(x_shape))
    if depth < 1 or size % depth:
        raise op.imp.fail(f"{op.where} multiplies {size} values by rows of {depth}.")
    rows = size // depth
    x = op.read(0, is_nchw=False)
    if x_shape != (rows, depth):  # TFLite flattens the input to rows of the weight's depth
        x = op.imp.reshape(x, (rows, depth), op.imp.quant(x_index), f"{op.base}_rows")
    w, _ = op.weights(1, (0, 1))
    b = op.bias(2, x_index, w_index, units)
    y = op.node("Gemm", [x, w, *b], transB=1)
    want = op.shape(op.output)
    if want == (rows, units):
        op.write(y, is_nchw=False)
        return
    kept = x_shape[:-1] + (units,)
    if want != kept or not op.option("keepNumDims", False):
        op.check_shape((rows, units))
    # keep_num_dims: the rows back in the input's leading shape (a view of the int8 result)
    tmp = op.imp.activation(
        y, int(op.option("fusedActivationFunction", 0)), op.imp.quant(op.output), op.base, op.where
    )
    quant = op.imp.quant(op.output)
    if quant is not None:
        tmp = op.imp.qdq(tmp, quant, f"{op.base}_rows")
    shaped = op.imp.node(
        "Reshape",
        [tmp, op.imp.init(np.asarray(want, np.int64), f"{op.base}_shape")],
        f"{op.base}_shaped",
    )
    op.write(shaped, is_nchw=False, fused=False)


def _layout(op: _Op, positions: list[int]) -> bool:
    """Compute in NCHW when every activation read is 4-D and held in NCHW only (a constant
    follows), in the file's layout otherwise."""
    layouts = [op.imp.layout_of(op.input(p)) for p in positions]
    activations = [
        (p, layout) for p, layout in zip(positions, layouts, strict=True) if layout is not None
    ]
    return (
        bool(activations)
        and all(layout and len(op.shape(op.input(p))) == 4 for p, layout in activations)
        and len(op.shape(op.output)) == 4
    )


def _binary(onnx_op: str) -> Callable[[_Op], None]:
    def convert(op: _Op) -> None:
        is_nchw = _layout(op, [0, 1])
        rank = len(op.shape(op.output))
        a = op.read(0, is_nchw=is_nchw, rank=rank)
        b = op.read(1, is_nchw=is_nchw, rank=rank)
        shape = np.broadcast_shapes(op.shape(op.input(0)), op.shape(op.input(1)))
        op.check_shape(tuple(int(d) for d in shape))
        op.write(op.node(onnx_op, [a, b]), is_nchw=is_nchw)

    return convert


def _unary(onnx_op: str, **attrs: Any) -> Callable[[_Op], None]:
    def convert(op: _Op) -> None:
        is_nchw = _layout(op, [0])
        x = op.read(0, is_nchw=is_nchw)
        op.check_shape(op.shape(op.input(0)))
        extra: dict[str, Any] = dict(attrs)
        if onnx_op == "LeakyRelu":
            extra["alpha"] = float(op.option("alpha", 0.2))
        if onnx_op == "Clip":
            low, high = extra.pop("bounds")
            bounds = [
                op.imp.init(np.float32(low), "clip_min"),
                op.imp.init(np.float32(high), "clip_max"),
            ]
            op.write(op.node("Clip", [x, *bounds]), is_nchw=is_nchw)
            return
        op.write(op.node(onnx_op, [x], **extra), is_nchw=is_nchw)

    return convert


def _pool(onnx_op: str) -> Callable[[_Op], None]:
    def convert(op: _Op) -> None:
        x_shape = op.shape(op.input(0))
        if len(x_shape) != 4:
            raise op.imp.fail(f"{op.where} pools a {len(x_shape)}-D tensor; 4-D expected.")
        kernel = (int(op.option("filterHeight", 1)), int(op.option("filterWidth", 1)))
        attrs = _window(op, x_shape, kernel, x_shape[3])
        attrs.pop("dilations")
        if onnx_op == "AveragePool":
            attrs["count_include_pad"] = 0  # TFLite divides by the taps inside the input
        x = op.read(0, is_nchw=True)
        op.write(op.node(onnx_op, [x], kernel_shape=list(kernel), **attrs), is_nchw=True)

    return convert


def _reshape(op: _Op) -> None:
    """RESHAPE, SQUEEZE, EXPAND_DIMS: the file's output shape, in TFLite's element order."""
    x_index = op.input(0)
    want = op.shape(op.output)
    if int(np.prod(op.shape(x_index))) != int(np.prod(want)):
        raise op.imp.fail(f"{op.where} reshapes {list(op.shape(x_index))} to {list(want)}.")
    x = op.read(0, is_nchw=False)
    target = op.imp.init(np.asarray(want, np.int64), f"{op.base}_shape")
    op.write(op.node("Reshape", [x, target]), is_nchw=False)


def _softmax(op: _Op) -> None:
    x = op.read(0, is_nchw=False)
    op.check_shape(op.shape(op.input(0)))
    beta = float(op.option("beta", 1.0))
    if beta != 1.0:  # softmax(beta * x), reference_ops::Softmax
        x = op.node("Mul", [x, op.imp.init(np.float32(beta), f"{op.base}_beta")])
    op.write(op.node("Softmax", [x], axis=-1), is_nchw=False)


def _quantize(op: _Op) -> None:
    """QUANTIZE (float -> int8, or int8 -> int8 requantization) and DEQUANTIZE (int8 or float16
    -> float): the value is the same real number, so the output is the input in float, then
    the output's QDQ pair for an int8 output."""
    x_index = op.input(0)
    values = op.imp.constant(x_index)
    if op.op == "DEQUANTIZE" and values is not None:  # float16 weights: fold to float32
        quant = op.imp.quant(x_index)
        if quant is not None:
            axis_shape = [-1 if d == quant.axis else 1 for d in range(values.ndim)]
            real = (
                values.astype(np.float32) - quant.zero.reshape(axis_shape)
            ) * quant.scale.reshape(axis_shape)
        else:
            real = values.astype(np.float32)
        op.imp.folded[op.output] = real.astype(np.float32)
        return
    is_nchw = _layout(op, [0])
    x = op.read(0, is_nchw=is_nchw)
    op.check_shape(op.shape(x_index))
    op.write(x, is_nchw=is_nchw, fused=False)


def _concatenation(op: _Op) -> None:
    positions = list(range(len(op.inputs)))
    rank = len(op.shape(op.output))
    axis = int(op.option("axis", 0))
    if not -rank <= axis < rank:
        raise op.imp.fail(f"{op.where} concatenates along axis {axis} of a {rank}-D tensor.")
    axis %= rank
    is_nchw = _layout(op, positions) and all(len(op.shape(op.input(p))) == 4 for p in positions)
    parts = [op.read(p, is_nchw=is_nchw) for p in positions]
    out = list(op.shape(op.input(0)))
    out[axis] = sum(op.shape(op.input(p))[axis] for p in positions)
    op.check_shape(tuple(out))
    onnx_axis = _NHWC_TO_NCHW.index(axis) if is_nchw else axis
    op.write(op.node("Concat", parts, axis=onnx_axis), is_nchw=is_nchw)


def _pad(op: _Op) -> None:
    x_shape = op.shape(op.input(0))
    paddings = op.imp.constant(op.input(1))
    if paddings is None or paddings.shape != (len(x_shape), 2) or np.any(paddings < 0):
        raise op.imp.fail(
            f"{op.where} needs constant non-negative paddings of shape [{len(x_shape)}, 2]."
        )
    paddings = paddings.astype(np.int64)
    op.check_shape(tuple(int(d + p.sum()) for d, p in zip(x_shape, paddings, strict=True)))
    is_nchw = _layout(op, [0])
    if is_nchw:
        paddings = paddings[list(_NHWC_TO_NCHW)]
    x = op.read(0, is_nchw=is_nchw)
    pads = op.imp.init(np.concatenate([paddings[:, 0], paddings[:, 1]]), f"{op.base}_pads")
    # PAD fills with 0.0 (float) or the output's zero point (int8): 0.0 quantizes to it
    zero = op.imp.init(np.float32(0.0), "pad_value")
    op.write(op.node("Pad", [x, pads, zero], mode="constant"), is_nchw=is_nchw)


def _mean(op: _Op) -> None:
    x_shape = op.shape(op.input(0))
    axes = op.imp.constant(op.input(1))
    if axes is None or axes.dtype not in (np.int32, np.int64):
        raise op.imp.fail(f"{op.where} needs constant integer axes.")
    rank = len(x_shape)
    if np.any(axes < -rank) or np.any(axes >= rank):
        raise op.imp.fail(
            f"{op.where} averages over axes {axes.tolist()[:8]} of a {rank}-D tensor."
        )
    axes = sorted({int(a) % rank for a in axes.ravel()})
    keep = bool(op.option("keepDims", False))
    kept = tuple(1 if d in axes else n for d, n in enumerate(x_shape))
    op.check_shape(kept if keep else tuple(n for d, n in enumerate(x_shape) if d not in axes))
    if rank == 4 and axes == [1, 2]:  # the spatial mean: GlobalAveragePool in NCHW
        y = op.node("GlobalAveragePool", [op.read(0, is_nchw=True)])
        if keep:
            op.write(y, is_nchw=True)
            return
        target = op.imp.init(np.asarray(op.shape(op.output), np.int64), f"{op.base}_shape")
        op.write(op.node("Reshape", [y, target]), is_nchw=False)
        return
    x = op.read(0, is_nchw=False)
    axes_name = op.imp.init(np.asarray(axes, np.int64), f"{op.base}_axes")
    op.write(op.node("ReduceMean", [x, axes_name], keepdims=int(keep)), is_nchw=False)


OPERATORS: dict[str, Callable[[_Op], None]] = {
    "ADD": _binary("Add"),
    "SUB": _binary("Sub"),
    "MUL": _binary("Mul"),
    "AVERAGE_POOL_2D": _pool("AveragePool"),
    "MAX_POOL_2D": _pool("MaxPool"),
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _conv,
    "FULLY_CONNECTED": _fully_connected,
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "EXPAND_DIMS": _reshape,
    "SOFTMAX": _softmax,
    "QUANTIZE": _quantize,
    "DEQUANTIZE": _quantize,
    "CONCATENATION": _concatenation,
    "PAD": _pad,
    "MEAN": _mean,
    "LOGISTIC": _unary("Sigmoid"),
    "HARD_SWISH": _unary("HardSwish"),
    "TANH": _unary("Tanh"),
    "RELU": _unary("Relu"),
    "RELU6": _unary("Clip", bounds=(0.0, 6.0)),
    "RELU_N1_TO_1": _unary("Clip", bounds=(-1.0, 1.0)),
    "LEAKY_RELU": _unary("LeakyRelu"),
}
