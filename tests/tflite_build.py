"""Write small ``.tflite`` files with the schema's object API (no TensorFlow), for the import
tests: a float graph of the operators the example models lack, and its full-int8 version with
scales calibrated on LiteRT's own float run."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

import numpy as np


def schema() -> Any:
    import pytest

    return pytest.importorskip("ai_edge_litert.schema_py_generated")


@dataclass
class Net:
    """A one-subgraph model under construction."""

    tensors: list[Any] = field(default_factory=list)
    buffers: list[Any] = field(default_factory=list)
    operators: list[Any] = field(default_factory=list)
    codes: dict[tuple[int, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.s = schema()
        self.buffers.append(self.s.BufferT())  # buffer 0: the empty one

    def tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        data: np.ndarray | None = None,
        *,
        kind: str = "FLOAT32",
        scale: Any = None,
        zero: Any = None,
        axis: int = 0,
    ) -> int:
        t = self.s.TensorT()
        t.name, t.shape, t.type = name.encode(), list(shape), getattr(self.s.TensorType, kind)
        buffer = self.s.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        self.buffers.append(buffer)
        t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = self.s.QuantizationParametersT()
            q.scale = list(np.atleast_1d(np.asarray(scale, np.float32)))
            q.zeroPoint = list(np.atleast_1d(np.asarray(zero if zero is not None else 0, np.int64)))
            if len(q.zeroPoint) == 1 and len(q.scale) > 1:
                q.zeroPoint = q.zeroPoint * len(q.scale)
            q.quantizedDimension = axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        name: str,
        inputs: list[int],
        outputs: list[int],
        options: Any = None,
        *,
        custom: str = "",
    ) -> None:
        code_value = getattr(self.s.BuiltinOperator, name)
        key = (code_value, custom)
        if key not in self.codes:
            self.codes[key] = len(self.codes)
        op = self.s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.codes[key], inputs, outputs
        if options is not None:
            kind = type(options).__name__.removesuffix("T")
            op.builtinOptionsType = getattr(self.s.BuiltinOptions, kind)
            op.builtinOptions = options
        self.operators.append(op)

    def options(self, kind: str, **values: Any) -> Any:
        options = getattr(self.s, f"{kind}T")()
        for key, value in values.items():
            setattr(options, key, value)
        return options

    def finish(self, inputs: list[int], outputs: list[int], *, subgraphs: int = 1) -> bytes:
        import flatbuffers

        model = self.s.ModelT()
        model.version = 3
        codes = []
        for (value, custom), _ in sorted(self.codes.items(), key=lambda item: item[1]):
            code = self.s.OperatorCodeT()
            code.builtinCode = value
            code.deprecatedBuiltinCode = min(value, 127)
            code.version = 1
            if custom:
                code.customCode = custom.encode()
            codes.append(code)
        model.operatorCodes = codes
        graphs = []
        for _ in range(subgraphs):
            graph = self.s.SubGraphT()
            graph.tensors, graph.operators = self.tensors, self.operators
            graph.inputs, graph.outputs = inputs, outputs
            graphs.append(graph)
        model.subgraphs = graphs
        model.buffers = self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


#: activations whose int8 quantization TFLite fixes (the quantization spec's table)
_FIXED = {"LOGISTIC": (1 / 256, -128), "SOFTMAX": (1 / 256, -128)}
#: operators whose int8 output shares the input's scale (the spec: "restriction: same as input")
_SAME_AS_INPUT = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "RESHAPE", "CONCATENATION", "QUANTIZE"}


def kitchen(ranges: dict[str, tuple[float, float]] | None = None) -> bytes:
    """A float model (``ranges`` None) or its full-int8 version (``ranges``: each activation's
    min and max): CONV_2D (SAME, stride 2, RELU6), DEPTHWISE_CONV_2D (multiplier 2, VALID,
    RELU), MAX_POOL_2D, AVERAGE_POOL_2D, ADD of a per-channel constant, MUL, LOGISTIC,
    HARD_SWISH, QUANTIZE (int8 to int8), CONCATENATION on channels, PAD, MEAN over H and W,
    RESHAPE, FULLY_CONNECTED, SOFTMAX with beta."""
    rng = np.random.default_rng(3)
    net = Net()
    is_int8 = ranges is not None
    scales: dict[int, tuple[float, int]] = {}

    def act(name: str, shape: tuple[int, ...], op: str = "", source: int | None = None) -> int:
        if not is_int8:
            return net.tensor(name, shape)
        if op in _FIXED:
            scale, zero = _FIXED[op]
        elif op in _SAME_AS_INPUT and source is not None:
            scale, zero = scales[source]
        else:
            low, high = ranges[name]
            low, high = min(low, 0.0), max(high, 0.0)
            scale = max(high - low, 1e-3) / 255
            zero = int(np.clip(round(-128 - low / scale), -128, 127))
        index = net.tensor(name, shape, kind="INT8", scale=scale, zero=zero)
        scales[index] = (float(np.float32(scale)), zero)
        return index

    def weight(name: str, values: np.ndarray, axis: int, x: int) -> tuple[int, np.ndarray]:
        values = values.astype(np.float32)
        if not is_int8:
            return net.tensor(name, values.shape, values), np.ones(values.shape[axis], np.float32)
        other = tuple(d for d in range(values.ndim) if d != axis)
        w_scale = (np.abs(values).max(axis=other) / 127).astype(np.float32)
        shape = [-1 if d == axis else 1 for d in range(values.ndim)]
        q = np.clip(np.rint(values / w_scale.reshape(shape)), -127, 127).astype(np.int8)
        return net.tensor(name, values.shape, q, kind="INT8", scale=w_scale, axis=axis), w_scale

    def bias(name: str, values: np.ndarray, x: int, w_scale: np.ndarray) -> int:
        if not is_int8:
            return net.tensor(name, values.shape, values.astype(np.float32))
        acc = (np.float32(scales[x][0]) * w_scale).astype(np.float32)
        q = np.rint(values / acc).astype(np.int32)
        return net.tensor(name, values.shape, q, kind="INT32", scale=acc)

    x = act("input", (1, 8, 8, 3))
    w, ws = weight("conv_w", rng.normal(0, 0.4, (4, 3, 3, 3)), 0, x)
    b = bias("conv_b", rng.normal(0, 0.1, 4), x, ws)
    c1 = act("conv", (1, 4, 4, 4))
    net.op(
        "CONV_2D",
        [x, w, b],
        [c1],
        net.options(
            "Conv2DOptions",
            padding=0,
            strideH=2,
            strideW=2,
            dilationHFactor=1,
            dilationWFactor=1,
            fusedActivationFunction=3,
        ),
    )  # noqa: E501
    w, ws = weight("dw_w", rng.normal(0, 0.4, (1, 2, 2, 8)), 3, c1)
    b = bias("dw_b", rng.normal(0, 0.1, 8), c1, ws)
    d1 = act("depthwise", (1, 3, 3, 8))
    net.op(
        "DEPTHWISE_CONV_2D",
        [c1, w, b],
        [d1],
        net.options(
            "DepthwiseConv2DOptions",
            padding=1,
            strideH=1,
            strideW=1,
            depthMultiplier=2,
            dilationHFactor=1,
            dilationWFactor=1,
            fusedActivationFunction=1,
        ),
    )  # noqa: E501
    m1 = act("maxpool", (1, 2, 2, 8), "MAX_POOL_2D", d1)
    net.op(
        "MAX_POOL_2D",
        [d1],
        [m1],
        net.options(
            "Pool2DOptions", padding=0, strideH=2, strideW=2, filterHeight=2, filterWidth=2
        ),
    )  # noqa: E501
    a1 = act("avgpool", (1, 2, 2, 8), "AVERAGE_POOL_2D", d1)
    net.op(
        "AVERAGE_POOL_2D",
        [d1],
        [a1],
        net.options(
            "Pool2DOptions", padding=0, strideH=2, strideW=2, filterHeight=3, filterWidth=3
        ),
    )  # noqa: E501
    if is_int8:
        offset = net.tensor(
            "offset", (8,), np.arange(-4, 4).astype(np.int8), kind="INT8", scale=0.05, zero=0
        )  # noqa: E501
    else:
        offset = net.tensor("offset", (8,), (np.arange(-4, 4) * 0.05).astype(np.float32))
    s1 = act("add", (1, 2, 2, 8))
    net.op("ADD", [m1, offset], [s1], net.options("AddOptions"))
    p1 = act("mul", (1, 2, 2, 8))
    net.op("MUL", [s1, a1], [p1], net.options("MulOptions"))
    g1 = act("logistic", (1, 2, 2, 8), "LOGISTIC")
    net.op("LOGISTIC", [p1], [g1])
    h1 = act("hardswish", (1, 2, 2, 8))
    net.op("HARD_SWISH", [s1], [h1])
    g2 = g1
    if is_int8:  # LiteRT concatenates int8 tensors of one scale only
        g2 = act("requantized", (1, 2, 2, 8), "QUANTIZE", h1)
        net.op("QUANTIZE", [g1], [g2])
    k1 = act("concat", (1, 2, 2, 16), "CONCATENATION", h1)
    net.op("CONCATENATION", [g2, h1], [k1], net.options("ConcatenationOptions", axis=3))
    pads = net.tensor(
        "paddings", (4, 2), np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.int32), kind="INT32"
    )  # noqa: E501
    q1 = act("pad", (1, 3, 3, 16), "PAD", k1)
    net.op("PAD", [k1, pads], [q1], net.options("PadOptions"))
    axes = net.tensor("axes", (2,), np.array([1, 2], np.int32), kind="INT32")
    r1 = act("mean", (1, 1, 1, 16))
    net.op("MEAN", [q1, axes], [r1], net.options("ReducerOptions", keepDims=True))
    shape = net.tensor("shape", (2,), np.array([1, 16], np.int32), kind="INT32")
    f1 = act("flat", (1, 16), "RESHAPE", r1)
    net.op("RESHAPE", [r1, shape], [f1], net.options("ReshapeOptions", newShape=[1, 16]))
    w, ws = weight("fc_w", rng.normal(0, 0.5, (5, 16)), 0, f1)
    b = bias("fc_b", rng.normal(0, 0.1, 5), f1, ws)
    l1 = act("logits", (1, 5))
    net.op("FULLY_CONNECTED", [f1, w, b], [l1], net.options("FullyConnectedOptions"))
    y = act("probabilities", (1, 5), "SOFTMAX")
    net.op("SOFTMAX", [l1], [y], net.options("SoftmaxOptions", beta=0.5))
    return net.finish([x], [y])


def calibrated_kitchen(samples: np.ndarray) -> tuple[bytes, bytes]:
    """The float kitchen model and its int8 version, each activation's range taken from
    LiteRT's float run on ``samples``."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    float_model = kitchen()
    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": it is, here
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=float_model, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    ranges: dict[str, tuple[float, float]] = {}
    details = interpreter.get_tensor_details()
    for sample in samples:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        for detail in details:
            value = interpreter.get_tensor(detail["index"])
            low, high = ranges.get(detail["name"], (np.inf, -np.inf))
            ranges[detail["name"]] = (min(low, float(value.min())), max(high, float(value.max())))
    # a wider range than RELU6 gives: the int8 clamp to [0, 6] is then inside int8's own
    # range, so the import must write it (a Clip before the QuantizeLinear)
    ranges["conv"] = (-1.0, 8.0)
    return float_model, kitchen(ranges)


def float_io_conv() -> bytes:
    """An int8 convolution with float input and output, as TFLite's converter writes one with
    ``inference_input_type=float32``: QUANTIZE, CONV_2D (per-channel weights, RELU), MAX_POOL_2D,
    DEQUANTIZE."""
    rng = np.random.default_rng(4)
    net = Net()
    x = net.tensor("input", (1, 6, 6, 2))
    xq = net.tensor("input_int8", (1, 6, 6, 2), kind="INT8", scale=0.02, zero=3)
    net.op("QUANTIZE", [x], [xq])
    w_scale = np.array([0.01, 0.02, 0.015], np.float32)
    w = rng.integers(-127, 128, (3, 3, 3, 2)).astype(np.int8)
    wt = net.tensor("w", (3, 3, 3, 2), w, kind="INT8", scale=w_scale, axis=0)
    acc = (np.float32(0.02) * w_scale).astype(np.float32)
    b = net.tensor("b", (3,), rng.integers(-500, 500, 3).astype(np.int32), kind="INT32", scale=acc)
    y = net.tensor("conv", (1, 3, 3, 3), kind="INT8", scale=0.03, zero=-20)
    options = net.options(
        "Conv2DOptions",
        padding=0,
        strideH=2,
        strideW=2,
        dilationHFactor=1,
        dilationWFactor=1,
        fusedActivationFunction=1,
    )  # noqa: E501
    net.op("CONV_2D", [xq, wt, b], [y], options)
    p = net.tensor("pool", (1, 2, 2, 3), kind="INT8", scale=0.03, zero=-20)
    net.op(
        "MAX_POOL_2D",
        [y],
        [p],
        net.options(
            "Pool2DOptions", padding=0, strideH=2, strideW=2, filterHeight=2, filterWidth=2
        ),
    )  # noqa: E501
    out = net.tensor("output", (1, 2, 2, 3))
    net.op("DEQUANTIZE", [p], [out])
    return net.finish([x], [out])


def float16_weights_conv() -> bytes:
    """A float model whose convolution weights are stored as float16 and widened by a
    DEQUANTIZE (TFLite's float16 post-training quantization), VALID padding."""
    rng = np.random.default_rng(6)
    net = Net()
    x = net.tensor("input", (1, 5, 5, 2))
    w16 = net.tensor(
        "w16", (4, 3, 3, 2), rng.normal(0, 0.5, (4, 3, 3, 2)).astype(np.float16), kind="FLOAT16"
    )  # noqa: E501
    w = net.tensor("w", (4, 3, 3, 2))
    net.op("DEQUANTIZE", [w16], [w])
    b = net.tensor("b", (4,), rng.normal(0, 0.1, 4).astype(np.float32))
    y = net.tensor("output", (1, 3, 3, 4))
    options = net.options(
        "Conv2DOptions",
        padding=1,
        strideH=1,
        strideW=1,
        dilationHFactor=1,
        dilationWFactor=1,
        fusedActivationFunction=4,
    )  # noqa: E501
    net.op("CONV_2D", [x, w, b], [y], options)
    return net.finish([x], [y])
