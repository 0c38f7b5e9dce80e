"""edgeopt's C implementation of TFLite Micro's reference int8 kernels (benchmarks/tflm_reference,
written from the documented behaviour, no TFLM source) computes what TFLite Micro computes, byte
for byte.

Each case writes a one-operator int8 ``.tflite`` file with the schema's object API, runs it in
TFLite Micro's Python interpreter (which runs these same reference kernels), reads the file back,
turns its own scales and zero points into the kernels' integer parameters as TFLM's Prepare
functions do, and runs the C implementation built with the host gcc on the same input.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.tflm_reference import port as tr  # noqa: E402

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the host gcc")

ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}


def _tensor(
    tensors: list[Any],
    buffers: list[Any],
    shape: tuple[int, ...],
    kind: int,
    *,
    scale: Any,
    zero: Any,
    axis: int = 0,
    data: np.ndarray | None = None,
) -> int:
    tensor = schema.TensorT()
    tensor.shape = np.array(shape, dtype=np.int32)
    tensor.type = kind
    tensor.name = f"t{len(tensors)}"
    if data is not None:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
        tensor.buffer = len(buffers)
        buffers.append(buffer)
    params = schema.QuantizationParametersT()
    params.scale = np.asarray(scale, dtype=np.float32).ravel()
    params.zeroPoint = np.asarray(zero, dtype=np.int64).ravel()
    params.quantizedDimension = axis
    tensor.quantization = params
    tensors.append(tensor)
    return len(tensors) - 1


def _model(code: int, options_type: int, options: Any, build: Any) -> bytes:
    """A one-operator model; ``build(tensors, buffers)`` returns (inputs, outputs)."""
    import flatbuffers

    tensors: list[Any] = []
    buffers: list[Any] = [schema.BufferT()]
    inputs, outputs = build(tensors, buffers)
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = np.array(inputs, dtype=np.int32)
    op.outputs = np.array(outputs, dtype=np.int32)
    op.builtinOptionsType = options_type
    op.builtinOptions = options
    graph = schema.SubGraphT()
    graph.tensors = tensors
    graph.inputs = np.array([i for i in inputs if tensors[i].buffer == 0], dtype=np.int32)
    graph.outputs = np.array(outputs, dtype=np.int32)
    graph.operators = [op]
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = code
    opcode.deprecatedBuiltinCode = min(code, 127)
    opcode.version = 1
    model = schema.ModelT()
    model.version = 3
    model.subgraphs = [graph]
    model.operatorCodes = [opcode]
    model.buffers = buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _conv_model(
    rng: np.random.Generator,
    *,
    depthwise: bool,
    size: tuple[int, int, int],
    out_depth: int,
    kernel: int,
    stride: int,
    padding: int,
    activation: int,
) -> bytes:
    height, width, depth = size
    is_same = padding == schema.Padding.SAME
    out_h = (height + stride - 1) // stride if is_same else (height - kernel) // stride + 1
    out_w = (width + stride - 1) // stride if is_same else (width - kernel) // stride + 1
    in_scale, out_scale = 0.05, 0.11
    w_scales = rng.uniform(0.002, 0.02, out_depth)
    if depthwise:
        filter_shape = (1, kernel, kernel, out_depth)
        options = schema.DepthwiseConv2DOptionsT()
        options.depthMultiplier = out_depth // depth
        code, kind = (
            schema.BuiltinOperator.DEPTHWISE_CONV_2D,
            schema.BuiltinOptions.DepthwiseConv2DOptions,
        )
    else:
        filter_shape = (out_depth, kernel, kernel, depth)
        options = schema.Conv2DOptionsT()
        code, kind = schema.BuiltinOperator.CONV_2D, schema.BuiltinOptions.Conv2DOptions
    options.padding, options.strideW, options.strideH = padding, stride, stride
    options.fusedActivationFunction = activation
    weights = rng.integers(-127, 128, filter_shape, dtype=np.int8)
    bias = rng.integers(-3000, 3000, out_depth).astype(np.int32)

    def build(tensors: list[Any], buffers: list[Any]) -> tuple[list[int], list[int]]:
        i8, i32 = schema.TensorType.INT8, schema.TensorType.INT32
        x = _tensor(tensors, buffers, (1, height, width, depth), i8, scale=[in_scale], zero=[7])
        axis = 3 if depthwise else 0
        w = _tensor(
            tensors,
            buffers,
            filter_shape,
            i8,
            scale=w_scales,
            zero=[0] * out_depth,
            axis=axis,
            data=weights,
        )
        b = _tensor(
            tensors,
            buffers,
            (out_depth,),
            i32,
            scale=in_scale * w_scales,
            zero=[0] * out_depth,
            data=bias,
        )
        y = _tensor(
            tensors, buffers, (1, out_h, out_w, out_depth), i8, scale=[out_scale], zero=[-5]
        )
        return [x, w, b], [y]

    return _model(code, kind, options, build)


def _fc_model(
    rng: np.random.Generator, *, features: int, out: int, per_channel: bool, activation: int
) -> bytes:
    options = schema.FullyConnectedOptionsT()
    options.fusedActivationFunction = activation
    scales = rng.uniform(0.002, 0.02, out) if per_channel else np.array([0.01])
    weights = rng.integers(-127, 128, (out, features), dtype=np.int8)
    bias = rng.integers(-3000, 3000, out).astype(np.int32)

    def build(tensors: list[Any], buffers: list[Any]) -> tuple[list[int], list[int]]:
        i8, i32 = schema.TensorType.INT8, schema.TensorType.INT32
        x = _tensor(tensors, buffers, (1, features), i8, scale=[0.04], zero=[-3])
        w = _tensor(
            tensors,
            buffers,
            (out, features),
            i8,
            scale=scales,
            zero=[0] * len(scales),
            data=weights,
        )
        b = _tensor(
            tensors, buffers, (out,), i32, scale=0.04 * scales, zero=[0] * len(scales), data=bias
        )
        y = _tensor(tensors, buffers, (1, out), i8, scale=[0.2], zero=[10])
        return [x, w, b], [y]

    return _model(
        schema.BuiltinOperator.FULLY_CONNECTED,
        schema.BuiltinOptions.FullyConnectedOptions,
        options,
        build,
    )


def _pool_model(
    *,
    is_max: bool,
    size: tuple[int, int, int],
    kernel: tuple[int, int],
    stride: int,
    padding: int,
    activation: int,
) -> bytes:
    height, width, depth = size
    options = schema.Pool2DOptionsT()
    options.padding, options.strideW, options.strideH = padding, stride, stride
    options.filterHeight, options.filterWidth = kernel
    options.fusedActivationFunction = activation
    if padding == schema.Padding.SAME:
        out_h, out_w = (height + stride - 1) // stride, (width + stride - 1) // stride
    else:
        out_h = (height - kernel[0]) // stride + 1
        out_w = (width - kernel[1]) // stride + 1

    def build(tensors: list[Any], buffers: list[Any]) -> tuple[list[int], list[int]]:
        i8 = schema.TensorType.INT8
        x = _tensor(tensors, buffers, (1, height, width, depth), i8, scale=[0.1], zero=[-20])
        y = _tensor(tensors, buffers, (1, out_h, out_w, depth), i8, scale=[0.1], zero=[-20])
        return [x], [y]

    code = schema.BuiltinOperator.MAX_POOL_2D if is_max else schema.BuiltinOperator.AVERAGE_POOL_2D
    return _model(code, schema.BuiltinOptions.Pool2DOptions, options, build)


def _add_model(*, size: tuple[int, int, int], activation: int) -> bytes:
    options = schema.AddOptionsT()
    options.fusedActivationFunction = activation

    def build(tensors: list[Any], buffers: list[Any]) -> tuple[list[int], list[int]]:
        i8 = schema.TensorType.INT8
        a = _tensor(tensors, buffers, (1, *size), i8, scale=[0.07], zero=[-128])
        b = _tensor(tensors, buffers, (1, *size), i8, scale=[0.031], zero=[19])
        y = _tensor(tensors, buffers, (1, *size), i8, scale=[0.09], zero=[-110])
        return [a, b], [y]

    return _model(schema.BuiltinOperator.ADD, schema.BuiltinOptions.AddOptions, options, build)


def _quantization(tensor: Any) -> tuple[np.ndarray, np.ndarray]:
    q = tensor.quantization
    return np.asarray(q.scale, dtype=np.float32), np.asarray(q.zeroPoint, dtype=np.int64)


def _data(model: Any, tensor: Any, dtype: Any) -> np.ndarray:
    raw = np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8)
    return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(tuple(tensor.shape))


def _padding(options: Any, size: int, filter_size: int, stride: int) -> int:
    if options.padding == schema.Padding.SAME:
        return tr.same_padding(size, filter_size, stride)[1]
    return 0


def layer_of(buffer: bytes) -> tr.Layer:
    """The C layer from the file's operator, shapes, scales and zero points, with the
    integer parameters TFLM's Prepare functions compute from them."""
    model = schema.ModelT.InitFromPackedBuf(buffer, 0)
    graph = model.subgraphs[0]
    op = graph.operators[0]
    code = model.operatorCodes[op.opcodeIndex].builtinCode
    tensors = [graph.tensors[i] for i in op.inputs]
    out = graph.tensors[op.outputs[0]]
    in_scale, in_zero = _quantization(tensors[0])
    out_scale, out_zero = _quantization(out)
    options = op.builtinOptions
    act_min, act_max = tr.activation_range(
        ACTIVATIONS[options.fusedActivationFunction], float(out_scale[0]), int(out_zero[0])
    )
    in_shape = [int(v) for v in tensors[0].shape]
    out_shape = [int(v) for v in out.shape]
    ints: dict[str, int] = {
        "input_offset": -int(in_zero[0]),
        "output_offset": int(out_zero[0]),
        "activation_min": act_min,
        "activation_max": act_max,
    }
    if len(in_shape) == 4:
        ints.update(input_height=in_shape[1], input_width=in_shape[2], input_depth=in_shape[3])
        ints.update(
            output_height=out_shape[1], output_width=out_shape[2], output_depth=out_shape[3]
        )
    else:
        ints.update(input_height=1, input_width=1, input_depth=in_shape[-1])
        ints.update(output_height=1, output_width=1, output_depth=out_shape[-1])
    layer = tr.Layer(ints)
    if code in (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D):
        is_depthwise = code == schema.BuiltinOperator.DEPTHWISE_CONV_2D
        w_scale, _ = _quantization(tensors[1])
        weights = _data(model, tensors[1], np.int8)
        kernel_h, kernel_w = int(weights.shape[1]), int(weights.shape[2])
        pairs = [
            tr.quantize_multiplier(float(in_scale[0]) * float(s) / float(out_scale[0]))
            for s in w_scale
        ]
        ints.update(
            kind=tr.DEPTHWISE if is_depthwise else tr.CONV,
            filter_height=kernel_h,
            filter_width=kernel_w,
            stride_height=options.strideH,
            stride_width=options.strideW,
            pad_height=_padding(options, in_shape[1], kernel_h, options.strideH),
            pad_width=_padding(options, in_shape[2], kernel_w, options.strideW),
            depth_multiplier=options.depthMultiplier if is_depthwise else 1,
        )
        layer.filter = weights
        layer.bias = _data(model, tensors[2], np.int32)
        layer.multipliers = np.array([q for q, _ in pairs], dtype=np.int32)
        layer.shifts = np.array([s for _, s in pairs], dtype=np.int32)
    elif code == schema.BuiltinOperator.FULLY_CONNECTED:
        w_scale, w_zero = _quantization(tensors[1])
        pairs = [
            tr.quantize_multiplier(float(in_scale[0]) * float(s) / float(out_scale[0]))
            for s in w_scale
        ]
        per_channel = len(w_scale) > 1
        ints.update(
            kind=tr.FULLY_CONNECTED_PER_CHANNEL if per_channel else tr.FULLY_CONNECTED,
            weights_offset=-int(w_zero[0]),
            output_multiplier=pairs[0][0],
            output_shift=pairs[0][1],
        )
        layer.filter = _data(model, tensors[1], np.int8)
        layer.bias = _data(model, tensors[2], np.int32)
        layer.multipliers = np.array([q for q, _ in pairs], dtype=np.int32)
        layer.shifts = np.array([s for _, s in pairs], dtype=np.int32)
    elif code in (schema.BuiltinOperator.AVERAGE_POOL_2D, schema.BuiltinOperator.MAX_POOL_2D):
        ints.update(
            kind=tr.MAX_POOL if code == schema.BuiltinOperator.MAX_POOL_2D else tr.AVERAGE_POOL,
            filter_height=options.filterHeight,
            filter_width=options.filterWidth,
            stride_height=options.strideH,
            stride_width=options.strideW,
            pad_height=_padding(options, in_shape[1], options.filterHeight, options.strideH),
            pad_width=_padding(options, in_shape[2], options.filterWidth, options.strideW),
        )
    elif code == schema.BuiltinOperator.ADD:
        scale2, zero2 = _quantization(tensors[1])
        ints.update(kind=tr.ADD, input2_offset=-int(zero2[0]))
        ints.update(tr.add_parameters(float(in_scale[0]), float(scale2[0]), float(out_scale[0])))
    else:
        raise AssertionError(f"operator {code}")
    return layer


def _tflm(buffer: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    interpreter = runtime.Interpreter.from_bytes(buffer, arena_size=1 << 20)
    for index, x in enumerate(inputs):
        interpreter.set_input(x, index)
    interpreter.invoke()
    return np.asarray(interpreter.get_output(0)).ravel()


SAME, VALID = 0, 1  # schema.Padding

CASES = {
    "conv3x3_same_stride2_relu": lambda rng: _conv_model(
        rng,
        depthwise=False,
        size=(9, 11, 3),
        out_depth=8,
        kernel=3,
        stride=2,
        padding=SAME,
        activation=1,
    ),
    "conv3x3_same_stride1_none": lambda rng: _conv_model(
        rng,
        depthwise=False,
        size=(7, 6, 5),
        out_depth=4,
        kernel=3,
        stride=1,
        padding=SAME,
        activation=0,
    ),
    "conv1x1_valid_stride2_relu6": lambda rng: _conv_model(
        rng,
        depthwise=False,
        size=(8, 8, 6),
        out_depth=5,
        kernel=1,
        stride=2,
        padding=VALID,
        activation=3,
    ),
    "depthwise3x3_same_stride2_relu6": lambda rng: _conv_model(
        rng,
        depthwise=True,
        size=(10, 9, 6),
        out_depth=6,
        kernel=3,
        stride=2,
        padding=SAME,
        activation=3,
    ),
    "depthwise3x3_valid_multiplier2_relu": lambda rng: _conv_model(
        rng,
        depthwise=True,
        size=(7, 7, 3),
        out_depth=6,
        kernel=3,
        stride=1,
        padding=VALID,
        activation=1,
    ),
    "fc_per_tensor_relu": lambda rng: _fc_model(
        rng, features=37, out=11, per_channel=False, activation=1
    ),
    "fc_per_channel_none": lambda rng: _fc_model(
        rng, features=64, out=12, per_channel=True, activation=0
    ),
    "avgpool3x3_same_stride2": lambda rng: _pool_model(
        is_max=False, size=(9, 7, 4), kernel=(3, 3), stride=2, padding=SAME, activation=0
    ),
    "avgpool_global_relu": lambda rng: _pool_model(
        is_max=False, size=(5, 3, 16), kernel=(5, 3), stride=1, padding=VALID, activation=1
    ),
    "maxpool2x2_valid_stride2": lambda rng: _pool_model(
        is_max=True, size=(8, 6, 3), kernel=(2, 2), stride=2, padding=VALID, activation=0
    ),
    "add_relu": lambda rng: _add_model(size=(6, 5, 7), activation=1),
}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tr.build_host_library(tmp_path_factory.mktemp("tflm"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_tflm_reference_equals_tflite_micro(case: str, library: Path) -> None:
    rng = np.random.default_rng(sorted(CASES).index(case))
    buffer = CASES[case](rng)
    layer = layer_of(buffer)
    model = schema.ModelT.InitFromPackedBuf(buffer, 0)
    graph = model.subgraphs[0]
    inputs = [
        rng.integers(-128, 128, tuple(graph.tensors[i].shape), dtype=np.int8) for i in graph.inputs
    ]
    expected = _tflm(buffer, inputs)
    got = tr.run_host(library, layer, inputs[0], inputs[1] if len(inputs) > 1 else None)
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()
    # the case exercises the kernel: outputs not all clamped to one value
    assert len(np.unique(expected)) > 3
