"""The lowered program: activation buffers, constant arrays and kernel calls."""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import numpy as np

from edgeopt.errors import InputError

UINT8 = 2
INT8 = 3


@dataclass
class Buffer:
    """An activation tensor the C code stores: int8 (with a zero point) or float32."""

    tensor: str  # the ONNX tensor name (a QuantizeLinear output, or a float tensor)
    shape: tuple[int, ...]
    dtype: str = "int8"  # int8 | float32
    scale: float = 1.0
    zero_point: int = 0  # of the int8 storage: an ONNX uint8 zero point minus 128
    onnx_type: int = INT8  # the ONNX type of the quantized tensor (UINT8 or INT8)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * (4 if self.dtype == "float32" else 1)

    @property
    def onnx_zero_point(self) -> int:
        return self.zero_point + (128 if self.onnx_type == UINT8 else 0)


@dataclass(frozen=True)
class Array:
    """A constant array the C code keeps in flash."""

    name: str
    ctype: str  # int8_t | int32_t | float
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * (1 if self.ctype == "int8_t" else 4)


@dataclass(frozen=True)
class Ref:
    """A pointer argument: a constant array (by name) or the user's input / output."""

    name: str


INPUT = Ref("input")
OUTPUT = Ref("output")


@dataclass
class Step:
    """One kernel call: ``function(&params, inputs..., output)`` or with explicit ``args``."""

    function: str
    node: str  # "name (OpType)" for the comment and the trace
    inputs: tuple[str | Ref, ...]  # buffer names (or INPUT)
    output: str | Ref  # buffer name (or OUTPUT)
    struct: str | None = None  # the params struct type; None: call with ``args``
    params: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()  # extra trailing arguments (sizes, scales, table refs)
    leading: tuple[Any, ...] = ()  # arguments before the inputs (a table)
    arrays: tuple[Array, ...] = ()
    summary: str = ""


@dataclass
class Program:
    """The lowered model: buffers, views, the schedule and the edges."""

    buffers: dict[str, Buffer]
    views: dict[str, str]  # buffer -> the buffer whose storage it shares
    steps: list[Step]
    input: Buffer  # the quantized input the caller passes (ONNX type, zero point)
    output: Buffer  # float32 for float logits / probabilities, else the quantized output
    input_name: str
    output_name: str
    #: uint8 | int8 when the caller passes raw values (a folded model: the first step maps them
    #: through tables to ``input``), None when it passes ``input`` quantized.
    raw_input: str | None = None

    def root(self, name: str) -> str:
        while name in self.views:
            name = self.views[name]
        return name

    @property
    def arrays(self) -> list[Array]:
        return [array for step in self.steps for array in step.arrays]


def fixed_point(multiplier: float, *, max_shift: int = 62) -> tuple[int, int]:
    """``multiplier`` as ``(m, shift)`` with ``m * 2**-shift == multiplier`` and m in [2^30, 2^31).

    Exact for a float32 multiplier (24 significant bits) unless the shift would pass
    ``max_shift``; then low bits of ``m`` are rounded off (a multiplier that small rounds
    every input to zero anyway). Jacob et al. 2018, section 2.2 (arXiv:1712.05877).
    """
    if not multiplier > 0:
        return 0, 1
    mantissa, exponent = math.frexp(multiplier)
    m = round(mantissa * (1 << 31))
    if m == 1 << 31:
        m, exponent = m // 2, exponent + 1
    shift = 31 - exponent
    if shift < 1:
        raise InputError(f"a requantization multiplier of {multiplier:.4g} is too large for int32.")
    if shift > max_shift:
        m, shift = round(m / (1 << (shift - max_shift))), max_shift
    return int(m), int(shift)


def f32(value: Any) -> np.float32:
    return np.float32(value)


def node_label(node: Any) -> str:
    return f"{node.name or node.output[0]} ({node.op_type})"


def quantize_values(y: np.ndarray, scale: float, zero_point: int, onnx_type: int) -> np.ndarray:
    """ONNX QuantizeLinear in float32: saturate(round_half_even(y / scale) + zero_point)."""
    low, high = (0, 255) if onnx_type == UINT8 else (-128, 127)
    q = np.rint(y.astype(np.float32) / f32(scale)).astype(np.float64) + zero_point
    result: np.ndarray = np.clip(np.nan_to_num(q), low, high).astype(np.int64)
    return result
