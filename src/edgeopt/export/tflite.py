"""Write a QDQ (or float) ONNX model as a ``.tflite`` flatbuffer that TensorFlow Lite Micro runs.

The MCU world deploys TFLite: TFLite Micro, vendor code generators and Arm's Vela all read it.
Converters that go through TensorFlow (onnx2tf, the TFLite converter) recalibrate and drop
edgeopt's scales, so this module writes the flatbuffer itself, with the schema's object API
(``ai_edge_litert.schema_py_generated``: ``ModelT``, ``SubGraphT``, ``TensorT``, ...), from the
scales and zero points of the QDQ file that ``edgeopt quantize`` wrote.

How the QDQ graph maps to TFLite (TFLite 8-bit quantization spec,
https://ai.google.dev/edge/litert/models/quantization_spec, and ``schema.fbs``):

- Every quantized activation (a QuantizeLinear output) is one int8 tensor with its per-tensor
  scale and zero point; a uint8 activation is the same real numbers as int8 with the zero point
  moved by 128. The graph input takes the first QuantizeLinear's scale and zero point, the
  output the last DequantizeLinear's: a *full-int8* model, int8 in and int8 out.
- Weights are int8 with zero point 0 and a scale per output channel (``quantized_dimension`` 0
  for CONV_2D and FULLY_CONNECTED, 3 for DEPTHWISE_CONV_2D, whose filter is ``1 x H x W x
  C*M``); biases are int32 with scale ``input_scale * weight_scale`` (the spec's requirement).
- TFLite's convolutions are NHWC (filters OHWI): 4-D activations are stored NHWC, and a
  Reshape / Flatten that turns one into a vector first transposes it back to NCHW, so the
  vector has the ONNX model's element order (a TRANSPOSE, skipped where C or H*W is 1).
- A Relu / Clip after a convolution, fully connected layer or add becomes the layer's fused
  activation (NONE, RELU, RELU6, RELU_N1_TO_1), chosen so that TFLite Micro's clamp
  (``CalculateActivationRangeQuantized`` in ``tensorflow/lite/kernels/kernel_util.cc``) equals
  the clamp of the QDQ graph; a Relu whose clamp the output's zero point already implies is NONE.
- Explicit padding that is neither TFLite's VALID nor its SAME becomes a PAD (PADV2 with
  ``-128`` / ``-inf`` in front of max pooling, whose ONNX padding is never the maximum).
- A change of scale the TFLite kernel cannot make itself (max and average pooling keep their
  input's quantization, CONCATENATION wants one scale) is a QUANTIZE (int8 -> int8
  requantization) after or before it.
- SOFTMAX's int8 output has scale 1/256 and zero point -128 (TFLite Micro's
  ``kernels/softmax_common.cc`` refuses anything else); a different scale in the QDQ file is a
  QUANTIZE after it.
- A model whose last layer writes float logits (ONNX Runtime's QGemm with a float output; the
  QDQ file has no quantizer after it, so no scale for them) gets an int8 output over the range
  the calibration samples' logits span (10% margin), or without samples the largest range the
  layer's integers can reach (its int8 input range times its weights, plus its bias: no logit
  ever saturates, at the cost of resolution).
- FULLY_CONNECTED keeps the file's per-channel weight scales: the quantization spec lists one
  scale per tensor there, but the TFLite converter has written per-channel ones since 2024 and
  TFLite Micro's reference and CMSIS-NN kernels take them (tensorflow/tflite-micro pull request
  2673; before it, pull request 2602 refused them), which the tests run. An older runtime
  needs a per-tensor file (``PTQConfig(is_per_channel=False)``).

A float ONNX model (no QuantizeLinear) is written with the same operators in float32.

TFLite Micro computes what edgeopt's exact integer reference (:mod:`edgeopt.measure.int8`:
ONNX Runtime's integer kernels, adds and multiplies as edgeopt's C computes them) computes,
except for rounding: TFLite Micro requantizes
with a 31-bit fixed-point multiplier computed in double (``QuantizeMultiplier``,
``kernels/internal/quantization_util.cc``) and two roundings, gemmlowp's
``SaturatingRoundingDoublingHighMul`` then ``RoundingDivideByPOT`` (half away from zero), where
ONNX Runtime multiplies the int32 sum by the float32 ratio of the scales and rounds once, half to
even; ADD rescales both inputs with a 20-bit left shift (``kernels/add_common.cc``), MEAN and
the average pool round their sums their own way. The first rounding is to ``2^-shift``, so a
value within ``2^-(shift+1)`` below a half step rounds up in TFLite Micro and down in the
reference (cnn-s's first convolution: 97 of 102,400 outputs, all with a fraction in
[0.4985, 0.4999)); a step moved there moves the sums after it. At most 1 LSB on the zoo models
(2 where fine output scales magnify it); ``tests/export/test_tflite_export.py`` measures how
often, per model.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import InputError

__all__ = [
    "TFLiteExport",
    "TFLiteParity",
    "check_tflite",
    "tflm_arena",
    "tflm_arena_bytes",
    "write_tflite",
]


@dataclass(frozen=True)
class TFLiteExport:
    """A ``.tflite`` file written by :func:`write_tflite`, with what TFLite Micro needs to run it.

    ``arena_bytes`` is the tensor arena TFLite Micro's interpreter actually allocates for it
    (None where ``tflite-micro`` is not installed); ``operators`` the TFLite builtins in the
    order they run.
    """

    path: Path
    source: Path
    size_bytes: int
    is_int8: bool
    operators: tuple[str, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_quantization: tuple[float, int] | None  # (scale, zero point) of an int8 input
    output_quantization: tuple[float, int] | None
    arena_bytes: int | None
    #: of ``arena_bytes``, the head: activations and kernel scratch, planned to overlap (what
    #: edgeopt's C arena holds); the rest is the tail, persistent interpreter structures and
    #: per-channel requantization data
    arena_planned_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": str(self.source),
            "size_bytes": self.size_bytes,
            "is_int8": self.is_int8,
            "operators": list(self.operators),
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "input_quantization": (
                list(self.input_quantization) if self.input_quantization else None
            ),
            "output_quantization": (
                list(self.output_quantization) if self.output_quantization else None
            ),
            "arena_bytes": self.arena_bytes,
            "arena_planned_bytes": self.arena_planned_bytes,
        }


@dataclass(frozen=True)
class TFLiteParity:
    """TFLite Micro running the written file against edgeopt's exact int8 reference
    (:func:`~edgeopt.measure.int8.make_exact_session` on the source file), on the same samples.

    For an int8 file, the reference's output is quantized with the ``.tflite`` output's scale
    and zero point (exactly its own integers where the QDQ file ends in a DequantizeLinear):
    ``max_lsb`` is the largest difference in LSBs, ``differing_fraction`` the fraction of output
    values that differ at all, ``top1_agreement`` the share of samples whose top-1 is the
    quantized reference's (ties go to the first class in both). ``top1_float_agreement``
    compares with the top-1 of the reference's float output instead: where the QDQ file ends in
    float logits, it also counts what 256 output levels lose (two logits closer than a step
    tie). For a float file both are against ONNX Runtime, and ``max_relative_error`` is the
    largest difference over the largest reference value.
    """

    samples: int
    top1_agreement: float
    top1_float_agreement: float
    max_lsb: int | None
    differing_fraction: float | None
    max_relative_error: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "top1_agreement": self.top1_agreement,
            "top1_float_agreement": self.top1_float_agreement,
            "max_lsb": self.max_lsb,
            "differing_fraction": self.differing_fraction,
            "max_relative_error": self.max_relative_error,
        }


def _schema() -> Any:
    from edgeopt._optional import require

    return require("ai_edge_litert.schema_py_generated", purpose="writing .tflite files")


def _builtin_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def tflm_arena_bytes(model: bytes) -> int:
    """The tensor arena TFLite Micro's interpreter uses for ``model`` (see :func:`tflm_arena`).

    Example:
        >>> tflm_arena_bytes(b"not a model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        edgeopt.errors.InputError: TFLite Micro cannot run the written model (...).
    """
    return tflm_arena(model)[0]


def tflm_arena(model: bytes) -> tuple[int, int]:
    """The tensor arena TFLite Micro's interpreter uses for ``model``, as its own recording
    allocator counts it (``RecordingMicroAllocator``: the head, planned and overlapping
    activations and scratch buffers, plus the tail, persistent structures and kernel data).

    The Python runtime has no call that returns the number: ``print_allocations()`` prints
    ``Arena allocation total N bytes`` on the process's stderr (MicroPrintf), read back here
    after one inference on zeros in an arena large enough. (Bisecting the ``arena_size`` given
    at construction is not safe: this runtime crashes, rather than refusing, with some arenas
    that are too small.)

    Args:
        model: the ``.tflite`` file's bytes.

    Returns:
        Bytes of arena TFLite Micro allocated, and of them the head (activations and kernel
        scratch, planned to overlap).

    Raises:
        InputError: ``tflite-micro`` is not installed, or it cannot run the model.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> _ = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> done = write_tflite(work / "int8.onnx", work / "m.tflite", is_arena_measured=False)
        >>> total, planned = tflm_arena(done.path.read_bytes())
        >>> total > planned > 1024
        True
    """
    from edgeopt._optional import require

    runtime = require(
        "tflite_micro.python.tflite_micro.runtime", purpose="measuring the TFLite Micro arena"
    )
    try:
        interpreter = runtime.Interpreter.from_bytes(
            model, arena_size=max(1 << 20, 16 * len(model))
        )
        details = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(details["shape"], dtype=details["dtype"]), 0)
        interpreter.invoke()
        printed = _stderr_of(interpreter.print_allocations)
    except Exception as exc:  # the runtime's RuntimeError: one sentence, not a traceback
        detail = " ".join(str(exc).split())[:160]
        raise InputError(f"TFLite Micro cannot run the written model ({detail}).") from None
    total = re.search(r"Arena allocation total (\d+) bytes", printed)
    head = re.search(r"Arena allocation head (\d+) bytes", printed)
    if total is None or head is None:
        raise InputError("TFLite Micro did not report its arena (print_allocations printed none).")
    return int(total.group(1)), int(head.group(1))


def _stderr_of(call: Any) -> str:
    """What ``call()`` writes on file descriptor 2 (TFLite Micro's MicroPrintf), captured."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            call()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace")


def check_tflite(export: TFLiteExport, samples: np.ndarray) -> TFLiteParity:
    """Run the written file in TFLite Micro's interpreter on ``samples`` and compare it with its
    source file (int8: edgeopt's exact integers; float: ONNX Runtime).

    Args:
        export: what :func:`write_tflite` wrote.
        samples: float inputs in the ONNX model's layout (N, C, H, W), as the source takes them.

    Returns:
        Top-1 agreement and the largest differences (:class:`TFLiteParity`).

    Raises:
        InputError: ``tflite-micro`` is not installed, or samples of the wrong shape.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.data import load_data
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> _ = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> done = write_tflite(work / "int8.onnx", work / "m.tflite", is_arena_measured=False)
        >>> parity = check_tflite(done, load_data("digits").arrays("test")[0][:20])
        >>> parity.samples, parity.max_lsb <= 1
        (20, True)
    """
    from edgeopt._optional import require
    from edgeopt.measure.int8 import make_exact_session

    runtime = require("tflite_micro.python.tflite_micro.runtime", purpose="running .tflite files")
    x = np.asarray(samples, dtype=np.float32)
    session = make_exact_session(export.source)
    feed = session.get_inputs()[0].name
    expected_shape = tuple(export.input_shape[1:])
    interpreter = runtime.Interpreter.from_file(
        str(export.path), arena_size=max(1 << 20, 16 * export.size_bytes)
    )
    got, reference = [], []
    for sample in x:
        layout = sample.transpose(1, 2, 0) if sample.ndim == 3 else sample
        if tuple(layout.shape) != expected_shape:
            raise InputError(
                f"samples of shape {tuple(sample.shape)} do not fit the model's input "
                f"{expected_shape} (NHWC)."
            )
        if export.input_quantization is not None:
            # ONNX QuantizeLinear: round half to even, then saturate (what the reference does)
            scale, zero = export.input_quantization
            layout = np.clip(np.rint(layout / np.float32(scale)) + zero, -128, 127).astype(np.int8)
        interpreter.set_input(layout[None], 0)
        interpreter.invoke()
        out = np.asarray(interpreter.get_output(0))
        got.append(out.transpose(0, 3, 1, 2).ravel() if out.ndim == 4 else out.ravel())
        reference.append(np.asarray(session.run(None, {feed: sample[None]})[0]).ravel())
    tflm = np.array(got)
    ref = np.array(reference, dtype=np.float32)

    def agreement(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))) if a.shape[1] > 1 else 1.0

    top1_float = agreement(tflm, ref)
    if export.output_quantization is None:
        error = float(np.abs(tflm - ref).max() / max(float(np.abs(ref).max()), 1e-30))
        return TFLiteParity(len(x), top1_float, top1_float, None, None, error)
    scale, zero = export.output_quantization
    ref_q = np.clip(np.rint(ref / np.float32(scale)) + zero, -128, 127).astype(np.int64)
    diff = np.abs(tflm.astype(np.int64) - ref_q)
    return TFLiteParity(
        len(x), agreement(tflm, ref_q), top1_float, int(diff.max()), float(np.mean(diff > 0)), None
    )


def _logits_range(source: Path, samples: np.ndarray) -> tuple[float, float]:
    """The smallest and largest output value of the exact int8 reference on ``samples``."""
    from edgeopt.measure.int8 import make_exact_session

    session = make_exact_session(source)
    feed = session.get_inputs()[0].name
    low, high = math.inf, -math.inf
    for start in range(0, len(samples), 64):
        batch = np.asarray(samples[start : start + 64], dtype=np.float32)
        for sample in batch:  # one at a time: the file's batch may be fixed at 1
            out = np.asarray(session.run(None, {feed: sample[None]})[0])
            low, high = min(low, float(out.min())), max(high, float(out.max()))
    return low, high


def write_tflite(
    model: str | Path,
    output: str | Path,
    *,
    calibration: np.ndarray | None = None,
    is_arena_measured: bool = True,
) -> TFLiteExport:
    """Write an int8 QDQ ONNX file (or a float one) as a ``.tflite`` flatbuffer, atomically.

    A QDQ file gives a full-int8 model: int8 input and output, edgeopt's own scales and zero
    points, per-channel int8 weights and int32 biases (TFLite quantization spec); a float file
    the same operators in float32. No TensorFlow is involved: the flatbuffer is written with
    the schema's object API (``ai_edge_litert.schema_py_generated``).

    Args:
        model: the ``.onnx`` file (``edgeopt quantize`` writes QDQ ones); not modified.
        output: the ``.tflite`` file to write (written via a temporary file and renamed; never
            the input).
        calibration: float inputs (N, C, H, W) whose logits set the int8 output's scale where
            the QDQ file's last layer writes float logits (it has no scale for them); without
            them, the widest range that layer can reach (never saturates, coarser).
        is_arena_measured: also measure TFLite Micro's arena for it (:func:`tflm_arena_bytes`;
            needs ``tflite-micro``).

    Returns:
        The file written, its size, operators, input/output quantization and TFLM arena.

    Raises:
        InputError: a missing or invalid file, activations that are not int8/uint8 (16-bit
            QDQ), an operator or attribute TFLite's kernels do not cover (the sentence names
            the node), an output that would overwrite the input, or the ``tflite`` extra
            missing.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> _ = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> done = write_tflite(work / "int8.onnx", work / "m.tflite", is_arena_measured=False)
        >>> done.is_int8, done.operators[0], done.input_shape
        (True, 'CONV_2D', (1, 8, 8, 1))
    """
    import flatbuffers

    from edgeopt._io import atomic_path
    from edgeopt._io import refuse_overwrite
    from edgeopt.export._tflite.convert import Converter
    from edgeopt.models import read_onnx

    source = Path(model)
    out = Path(output)
    refuse_overwrite([out], {"the model": source})
    schema = _schema()
    proto = read_onnx(source)
    try:
        logits = _logits_range(source, calibration) if calibration is not None else None
        converter = Converter(proto, str(source), schema, logits_range=logits)
        model_t = converter.run()
    except InputError as exc:  # the shared QDQ reader speaks of the C exporter
        raise InputError(str(exc).replace("the C exporter", "the TFLite exporter")) from None
    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    data = bytes(builder.Output())
    arena, planned = tflm_arena(data) if is_arena_measured else (None, None)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    names = _builtin_names(schema)
    subgraph = model_t.subgraphs[0]
    codes = [model_t.operatorCodes[op.opcodeIndex].builtinCode for op in subgraph.operators]

    def quantization(index: int) -> tuple[float, int] | None:
        params = subgraph.tensors[index].quantization
        if not converter.is_quantized or params is None:
            return None
        return float(params.scale[0]), int(params.zeroPoint[0])

    first, last = int(subgraph.inputs[0]), int(subgraph.outputs[0])
    return TFLiteExport(
        path=out,
        source=source,
        size_bytes=len(data),
        is_int8=converter.is_quantized,
        operators=tuple(names.get(code, str(code)) for code in codes),
        input_shape=tuple(int(d) for d in subgraph.tensors[first].shape),
        output_shape=tuple(int(d) for d in subgraph.tensors[last].shape),
        input_quantization=quantization(first),
        output_quantization=quantization(last),
        arena_bytes=arena,
        arena_planned_bytes=planned,
    )
