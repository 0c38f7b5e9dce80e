"""TensorFlow Lite Micro's reference int8 kernels in C (``tflm_reference.c``), for measuring.

``tflm_reference.c`` is edgeopt's own implementation of those kernels' integer arithmetic and
loop structure, written from their documented behaviour (the TFLite 8-bit quantization
specification; Jacob et al. 2018, https://arxiv.org/abs/1712.05877); it contains no TFLM source.
It is the measuring stick of ``benchmarks/kernel_compare.py``: the same layers as edgeopt's
C library, run through TFLM's reference kernels on the same emulated core. This module holds the
Python side: the C layer descriptor (``tflm_layer`` in ``tflm_reference.h``) as a ctypes
structure, the host build (a shared library ``tests/measure/test_tflm_reference.py`` checks
against TFLite Micro's own interpreter) and the arithmetic of TFLM's Prepare functions that
turns a file's scales into the kernels' integer parameters:

- ``quantize_multiplier``: ``QuantizeMultiplier`` (tensorflow/lite/kernels/internal/
  quantization_util.cc): frexp, the fraction rounded half away from zero to Q31.
- ``activation_range``: ``CalculateActivationRangeQuantized`` (tensorflow/lite/kernels/
  kernel_util.cc).
- ``same_padding``: ``ComputePaddingHeightWidth`` (tensorflow/lite/kernels/padding.h).
- ``add_parameters``: ``PrepareAdd`` / ``CalculateOpDataAdd`` (tensorflow/lite/micro/kernels/
  add_common.cc): a 20-bit left shift and three multipliers.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = Path(__file__).resolve().parent
SOURCE = FOLDER / "tflm_reference.c"
HEADER = FOLDER / "tflm_reference.h"
#: The flags edgeopt builds its C library with (edgeopt.export.c.STRICT_FLAGS).
FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")

CONV = 1
DEPTHWISE = 2
FULLY_CONNECTED = 3
FULLY_CONNECTED_PER_CHANNEL = 4
AVERAGE_POOL = 5
MAX_POOL = 6
ADD = 7

#: The integer fields of ``tflm_layer``, in the C order (the four pointers follow).
INT_FIELDS = (
    "kind",
    "input_height",
    "input_width",
    "input_depth",
    "output_height",
    "output_width",
    "output_depth",
    "filter_height",
    "filter_width",
    "stride_height",
    "stride_width",
    "pad_height",
    "pad_width",
    "depth_multiplier",
    "input_offset",
    "input2_offset",
    "weights_offset",
    "output_offset",
    "activation_min",
    "activation_max",
    "output_multiplier",
    "output_shift",
    "left_shift",
    "input1_multiplier",
    "input1_shift",
    "input2_multiplier",
    "input2_shift",
)


class CLayer(ctypes.Structure):
    """``tflm_layer`` of tflm_reference.h."""

    _fields_ = [(name, ctypes.c_int32) for name in INT_FIELDS] + [
        ("filter", ctypes.POINTER(ctypes.c_int8)),
        ("bias", ctypes.POINTER(ctypes.c_int32)),
        ("multipliers", ctypes.POINTER(ctypes.c_int32)),
        ("shifts", ctypes.POINTER(ctypes.c_int32)),
    ]


@dataclass
class Layer:
    """One layer for ``tflm_run_layer``: shapes NHWC (batch 1), TFLM's integer parameters, and
    the filter (OHWI, depthwise 1HWC, fully connected [out][in]), bias and per-channel
    multipliers and shifts."""

    ints: dict[str, int]
    filter: np.ndarray | None = None
    bias: np.ndarray | None = None
    multipliers: np.ndarray | None = None
    shifts: np.ndarray | None = None
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> int:
        return int(self.ints.get(name, 0))

    @property
    def output_size(self) -> int:
        return self.value("output_height") * self.value("output_width") * self.value("output_depth")


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLM's ``QuantizeMultiplier``: ``real = q * 2^(shift - 31)``, q in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    scaled = fraction * (1 << 31)
    q = int(math.floor(abs(scaled) + 0.5)) * (1 if scaled >= 0 else -1)  # TfLiteRound
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        shift, q = 0, 0
    return q, shift


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for int8: NONE, RELU or RELU6."""

    def quantize(value: float) -> int:
        scaled = value / scale
        return zero_point + int(math.floor(abs(scaled) + 0.5)) * (1 if scaled >= 0 else -1)

    low, high = -128, 127
    if activation == "RELU":
        return max(low, quantize(0.0)), high
    if activation == "RELU6":
        return max(low, quantize(0.0)), min(high, quantize(6.0))
    if activation == "NONE":
        return low, high
    raise ValueError(f"activation {activation!r}")


def same_padding(size: int, filter_size: int, stride: int) -> tuple[int, int]:
    """Output size and TFLM's padding (the leading side) for SAME padding."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + filter_size - size, 0)
    return out, total // 2


def add_parameters(scale1: float, scale2: float, scale_out: float) -> dict[str, int]:
    """The int8 add's shifts and multipliers, as ``CalculateOpDataAdd`` computes them."""
    left_shift = 20
    twice_max = 2.0 * max(float(np.float32(scale1)), float(np.float32(scale2)))
    q1, s1 = quantize_multiplier(float(np.float32(scale1)) / twice_max)
    q2, s2 = quantize_multiplier(float(np.float32(scale2)) / twice_max)
    qo, so = quantize_multiplier(twice_max / ((1 << left_shift) * float(np.float32(scale_out))))
    return {
        "left_shift": left_shift,
        "input1_multiplier": q1,
        "input1_shift": s1,
        "input2_multiplier": q2,
        "input2_shift": s2,
        "output_multiplier": qo,
        "output_shift": so,
    }


def build_host_library(folder: Path, compiler: str = "gcc") -> Path:
    """Compile ``tflm_reference.c`` as a shared library for the host."""
    library = folder / "libtflm_reference.so"
    command = [compiler, *FLAGS, "-shared", "-fPIC", str(SOURCE), "-o", str(library)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return library


def _pointer(array: np.ndarray | None, ctype: Any) -> Any:
    if array is None:
        return ctypes.POINTER(ctype)()
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def run_host(
    library: Path, layer: Layer, x: np.ndarray, x2: np.ndarray | None = None
) -> np.ndarray:
    """Run one layer through the host build: int8 NHWC input(s) in, int8 NHWC output out."""
    lib = ctypes.CDLL(str(library))
    lib.tflm_run_layer.restype = ctypes.c_int
    keep = {
        "filter": None if layer.filter is None else np.ascontiguousarray(layer.filter, np.int8),
        "bias": None if layer.bias is None else np.ascontiguousarray(layer.bias, np.int32),
        "multipliers": None
        if layer.multipliers is None
        else np.ascontiguousarray(layer.multipliers, np.int32),
        "shifts": None if layer.shifts is None else np.ascontiguousarray(layer.shifts, np.int32),
    }
    c_layer = CLayer(
        *[layer.value(name) for name in INT_FIELDS],
        _pointer(keep["filter"], ctypes.c_int8),
        _pointer(keep["bias"], ctypes.c_int32),
        _pointer(keep["multipliers"], ctypes.c_int32),
        _pointer(keep["shifts"], ctypes.c_int32),
    )
    x = np.ascontiguousarray(x, np.int8)
    second = None if x2 is None else np.ascontiguousarray(x2, np.int8)
    out = np.zeros(layer.output_size, np.int8)
    status = lib.tflm_run_layer(
        ctypes.byref(c_layer),
        _pointer(x, ctypes.c_int8),
        _pointer(second, ctypes.c_int8),
        _pointer(out, ctypes.c_int8),
    )
    if status != 0:
        raise RuntimeError(f"tflm_run_layer returned {status}")
    return out
