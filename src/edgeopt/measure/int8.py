"""Exact int8 arithmetic on any host: ONNX Runtime made to compute what the device computes.

A device (edgeopt's C library, CMSIS-NN, TFLite Micro) multiplies 8-bit activations by 8-bit
weights and accumulates in 32 bits: nothing saturates. ONNX Runtime's x86 kernels for uint8
activations times int8 weights (U8S8, the format edgeopt writes) on CPUs without AVX-512 VNNI,
AVX-VNNI or AMX multiply with VPMADDUBSW, which adds two products into a *saturating* 16-bit
integer; large activations times large weights of one sign are clamped, and a model's logits move
(ONNX Runtime, "Quantize ONNX models", section "When and why do I need to try U8U8?"; OpenVINO,
"Saturation (overflow) issue workaround"). On such a host (an AVX2 CPU emulated by QEMU,
``benchmarks/int8_hosts.py``) cnn-s on digits read 95.3% where its integers give 99.2%.

The same file holds the same real numbers when its int8 values are stored as uint8 with the
zero point moved by 128: ``(q + 128) - (z + 128) = q - z``, bit for bit, rounding and clamping
included. ONNX Runtime runs uint8 x uint8 (U8U8) layers with kernels that widen to 16 bits before
they multiply (VPMADDWD) and cannot saturate; sub-byte weights (int4), which ONNX Runtime would
dequantize and compute in float, become uint8 too and run on the integer kernels. So the
*measurement* path feeds ONNX Runtime that re-encoded copy (``rewritten``) wherever the file as
shipped would not give the device's integers; the file the user gets is never changed, and is the
same bytes on every host.

One more operator needs it: an element-wise add of two int8 tensors. ONNX Runtime computes it in
float32 on x86 (near-ties round either way: 25 of 262,144 sums of a ResNet-8 block one step off)
and in its own 22-bit fixed point on Arm (MLAS ``qladd.cpp``), so no host's add is the integers.
The rewritten copy looks each add (and multiply) up in a 65,536-entry table of the integer
reference's result for every pair of inputs, which ONNX Runtime gathers exactly on every host.

Which host needs it is found out, not guessed from a CPU table: :func:`host_int8` runs a one-layer
probe whose products saturate a 16-bit sum once per process and compares ONNX Runtime with the
integer result (the CPU flags that decide it are reported beside). Every measurement records an
:class:`Int8Arithmetic`: the path, why, the host, and whether every int8 operator of the file is
one the integer reference (the generated C library, :mod:`edgeopt.export.c`) computes: a file
with an operator it lacks is measured as before and labelled *unchecked*.
"""

from __future__ import annotations

import functools
import math
import platform
from collections.abc import Collection
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import InputError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "AS_SHIPPED",
    "PATHS",
    "REWRITTEN",
    "ExactSession",
    "HostInt8",
    "Int8Arithmetic",
    "Reencoded",
    "cpu_flags",
    "elementwise_table",
    "host_int8",
    "int8_arithmetic",
    "make_exact_session",
    "uint8_encoding",
]

AS_SHIPPED = "as-shipped"
REWRITTEN = "rewritten"
#: What a caller may ask for: ``auto`` takes the rewritten copy only where it is needed.
PATHS = ("auto", AS_SHIPPED, REWRITTEN)

#: CPU features that decide how a host computes 8-bit dot products.
_X86_FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
_ARM_FLAGS = ("asimd", "asimddp", "i8mm", "sve")
_UINT8, _INT8, _INT32, _UINT4, _INT4 = 2, 3, 6, 21, 22
_SIGNED_TO_SHIFT = {_INT8: 128, _INT4: 128, _UINT4: 0}  # element type -> zero point move


def cpu_flags() -> tuple[str, ...]:
    """The CPU features of this host that decide its int8 kernels (read from /proc/cpuinfo):
    avx2, avx512bw, avx512_vnni, avx_vnni, amx_int8 on x86; asimd, asimddp, i8mm, sve on Arm.

    Example:
        >>> set(cpu_flags()) <= {"avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
        ...                      "asimd", "asimddp", "i8mm", "sve"}
        True
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ()
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(value.split())
            break  # every core lists the same features
    return tuple(flag for flag in (*_X86_FLAGS, *_ARM_FLAGS) if flag in found)


@dataclass(frozen=True)
class HostInt8:
    """How this host's ONNX Runtime computes int8 (U8S8) layers, as its probe found."""

    machine: str
    cpu_flags: tuple[str, ...]
    is_saturating: bool
    onnxruntime: str

    def describe(self) -> str:
        flags = ", ".join(self.cpu_flags) or "no listed int8 features"
        verdict = (
            "its U8S8 kernels saturate (16-bit sums, VPMADDUBSW)"
            if self.is_saturating
            else "its U8S8 kernels are exact"
        )
        return f"ONNX Runtime {self.onnxruntime} on {self.machine} ({flags}): {verdict}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "cpu_flags": list(self.cpu_flags),
            "is_saturating": self.is_saturating,
            "onnxruntime": self.onnxruntime,
        }


def _probe_model() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """A 1x1 convolution (QDQ, U8S8) whose pairs of products overflow 16 bits, its input, and
    the device's (exact integer) output."""
    import onnx
    from onnx import helper
    from onnx import numpy_helper

    channels = 16
    w = np.full((4, channels, 1, 1), 127, dtype=np.int8)
    w[1] = -128
    w[2, ::2] = -128
    x = np.full((1, channels, 2, 2), 255, dtype=np.uint8)
    x[0, :, 1, 1] = np.arange(channels, dtype=np.uint8) * 16
    y_scale = 4096.0
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(1.0, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wf"]),
        helper.make_node("Conv", ["xf", "wf"], ["yf"]),
        helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zero"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "int8_probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, [1, 4, 2, 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    acc = np.einsum("nchw,oc->nohw", x.astype(np.int64), w[:, :, 0, 0].astype(np.int64))
    expected = np.clip(np.rint(acc / y_scale) + 128, 0, 255).astype(np.uint8)
    return model, x, expected


@functools.cache
def host_int8() -> HostInt8:
    """Probe this host's ONNX Runtime once per process: does its U8S8 convolution equal the
    32-bit integer result on products that overflow a 16-bit sum?

    Example:
        >>> host = host_int8()
        >>> isinstance(host.is_saturating, bool), host.machine == platform.machine()
        (True, True)
    """
    import onnxruntime as ort

    from edgeopt.measure._session import make_session

    model, x, expected = _probe_model()
    session = make_session(model.SerializeToString(), threads=1)
    got = np.asarray(session.run(None, {"x": x})[0])
    return HostInt8(
        machine=platform.machine(),
        cpu_flags=cpu_flags(),
        is_saturating=not np.array_equal(got, expected),
        onnxruntime=ort.__version__,
    )


@dataclass(frozen=True)
class Reencoded:
    """A model with its 8- and 4-bit integers stored as uint8 (the same real numbers)."""

    model: onnx.ModelProto
    weights: int  # constant tensors re-encoded (weights, constant operands)
    shifted: frozenset[str]  # int8 activations now uint8 with +128: subtract 128 to read them
    kept: tuple[str, ...]  # signed tensors left as they were, and why

    def restore(self, name: str, value: np.ndarray) -> np.ndarray:
        """The value of tensor ``name`` as the original file holds it."""
        if name not in self.shifted:
            return value
        return (np.asarray(value).astype(np.int16) - 128).astype(np.int8)


def _quantize_type(node: Any, inits: dict[str, Any]) -> int:
    """The element type a QuantizeLinear writes: its zero point's, else ``output_dtype``'s."""
    if len(node.input) > 2 and node.input[2]:
        init = inits.get(node.input[2])
        return int(init.data_type) if init is not None else 0
    for attr in node.attribute:
        if attr.name == "output_dtype" and attr.i:
            return int(attr.i)
    return _UINT8


def _zero_point(model_inits: dict[str, Any], node: Any, scale_shape: tuple[int, ...]) -> Any:
    from onnx import numpy_helper

    if len(node.input) > 2 and node.input[2]:
        init = model_inits.get(node.input[2])
        return None if init is None else numpy_helper.to_array(init).astype(np.int32)
    return np.zeros(scale_shape, dtype=np.int32)


def uint8_encoding(model: onnx.ModelProto) -> Reencoded:  # noqa: C901  (one case per QDQ node kind the rewrite moves to uint8; split, the invariant (every int8 integer shifted once) would be spread over helpers)
    """Store every int8 / int4 / uint4 tensor of a QDQ model as uint8, zero point moved by 128
    (0 for uint4): constants in the file, activations between QuantizeLinear and
    DequantizeLinear, an int8 graph input (converted by a Cast / Add / Cast in front). The
    model computes the same numbers; ONNX Runtime runs it with U8U8 kernels, which cannot
    saturate, and sub-byte weights on its integer kernels instead of in float.

    Args:
        model: a QDQ model (not modified).

    Returns:
        The re-encoded copy, how many constants changed, the activations read back with
        :meth:`Reencoded.restore`, and what was left as it was (named, with the reason).

    Example:
        >>> from edgeopt.measure.int8 import _probe_model
        >>> model, x, expected = _probe_model()
        >>> done = uint8_encoding(model)
        >>> done.weights, sorted(done.shifted), done.kept
        (1, [], ())
    """
    import onnx
    from onnx import helper
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name: o for o in graph.output}
    taken = set(inits) | {name for node in graph.node for name in node.output}
    taken |= {i.name for i in graph.input}
    added: dict[str, str] = {}  # (old initializer name + kind) -> new name
    kept: list[str] = []
    weights = 0

    def fresh(base: str) -> str:
        name, index = f"{base}_u8", 1
        while name in taken:
            name, index = f"{base}_u8_{index}", index + 1
        taken.add(name)
        return name

    def shifted_zero(node: Any, shift: int) -> str | None:
        """The name of ``node``'s zero point as uint8, moved by ``shift`` (made once per name)."""
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        if scale is None:
            return None
        zero = _zero_point(inits, node, tuple(scale.shape))
        if zero is None:
            return None
        key = f"zero:{node.input[2] if len(node.input) > 2 else ''}:{shift}:{scale.shape}"
        if key not in added:
            values = zero + shift
            if values.min(initial=0) < 0 or values.max(initial=0) > 255:
                return None
            name = fresh(node.input[2] if len(node.input) > 2 and node.input[2] else "zero")
            graph.initializer.append(numpy_helper.from_array(values.astype(np.uint8), name))
            added[key] = name
        return added[key]

    def set_zero(node: Any, name: str) -> None:
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)

    # constants: weights, constant operands of Add / Mul, biases stay int32
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        init = inits[node.input[0]]
        shift = _SIGNED_TO_SHIFT.get(init.data_type)
        if shift is None:
            continue  # uint8 already, or an int32 bias
        if any(c.op_type != "DequantizeLinear" for c in consumers[node.input[0]]):
            kept.append(f"{init.name} (read by other operators than DequantizeLinear)")
            continue
        zero = shifted_zero(node, shift)
        if zero is None:
            kept.append(f"{init.name} (its scale or zero point is not a constant)")
            continue
        key = f"value:{init.name}"
        if key not in added:
            values = numpy_helper.to_array(init).astype(np.int32) + shift
            name = fresh(init.name)
            graph.initializer.append(numpy_helper.from_array(values.astype(np.uint8), name))
            added[key] = name
            weights += 1
        node.input[0] = added[key]
        set_zero(node, zero)

    # activations: a QuantizeLinear with an int8 zero point, read only by DequantizeLinear
    shifted: set[str] = set()
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or _quantize_type(node, inits) != _INT8:
            continue
        tensor = node.output[0]
        readers = consumers.get(tensor, [])
        if any(r.op_type != "DequantizeLinear" or r.input[0] != tensor for r in readers):
            kept.append(f"{tensor} (an int8 activation read by other operators)")
            continue
        zeros = [shifted_zero(n, 128) for n in (node, *readers)]
        if any(z is None for z in zeros):
            kept.append(f"{tensor} (its scale or zero point is not a constant)")
            continue
        for n, z in zip((node, *readers), zeros, strict=True):
            set_zero(n, z)  # type: ignore[arg-type]
        for attr in [a for a in node.attribute if a.name == "output_dtype"]:
            node.attribute.remove(attr)  # the uint8 zero point now says the type
        shifted.add(tensor)
        if tensor in outputs:
            outputs[tensor].type.tensor_type.elem_type = _UINT8

    # an int8 graph input read by DequantizeLinear: converted to uint8 in the graph
    for arg in graph.input:
        if arg.name in inits or arg.type.tensor_type.elem_type != _INT8:
            continue
        readers = consumers.get(arg.name, [])
        if not readers or any(r.op_type != "DequantizeLinear" for r in readers):
            continue
        zeros = [shifted_zero(r, 128) for r in readers]
        if any(z is None for z in zeros):
            kept.append(f"{arg.name} (its scale or zero point is not a constant)")
            continue
        wide, moved, name = fresh(f"{arg.name}_i32"), fresh(f"{arg.name}_plus"), fresh(arg.name)
        offset = fresh("offset_128")
        graph.initializer.append(numpy_helper.from_array(np.array(128, np.int32), offset))
        graph.node.insert(0, helper.make_node("Cast", [moved], [name], to=_UINT8))
        graph.node.insert(0, helper.make_node("Add", [wide], [moved]))
        graph.node[0].input.append(offset)
        graph.node.insert(0, helper.make_node("Cast", [arg.name], [wide], to=_INT32))
        for reader, zero in zip(readers, zeros, strict=True):
            reader.input[0] = name
            set_zero(reader, zero)  # type: ignore[arg-type]

    # drop what the copy no longer reads, and stale types of the shifted tensors
    used = {name for node in graph.node for name in node.input}
    listed = {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name in used or i.name in listed]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    stale = [v for v in graph.value_info if v.name in shifted]
    for value in stale:
        graph.value_info.remove(value)
    return Reencoded(out, weights, frozenset(shifted), tuple(kept))


@dataclass(frozen=True)
class Int8Arithmetic:
    """How a quantized file's outputs were computed on this host, for the provenance.

    ``path`` is ``as-shipped`` (ONNX Runtime ran the file itself: its kernels are exact here)
    or ``rewritten`` (it ran a copy that computes the same numbers exactly: int8 stored as uint8,
    whose kernels cannot saturate, and adds and multiplies looked up in integer tables).
    ``is_exact`` says the result is the device's integer arithmetic on this host;
    ``is_checked`` that every int8 operator is one the integer reference (the C library)
    computes, which the tests hold ONNX Runtime's path equal to, bit for bit.
    """

    path: str
    reason: str
    host: HostInt8
    is_exact: bool
    is_checked: bool
    unchecked: str | None = None
    #: ONNX Runtime computes the file as shipped exactly on this host (what ``bench`` times).
    is_shipped_exact: bool = True

    def describe(self) -> str:
        """One line for a provenance entry or a console."""
        exact = "exact integers" if self.is_exact else "NOT the device's integers"
        ran = {AS_SHIPPED: "the file as shipped"}.get(self.path, "its rewritten copy")
        checked = "" if self.is_checked else f"; unchecked: {self.unchecked}"
        return f"int8 arithmetic: {exact}, ran {ran} ({self.path}) - {self.reason}{checked}"

    def summary(self) -> dict[str, Any]:
        """The three facts a report row carries: path, exact, checked."""
        return {"path": self.path, "is_exact": self.is_exact, "is_checked": self.is_checked}

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "reason": self.reason,
            "is_exact": self.is_exact,
            "is_shipped_exact": self.is_shipped_exact,
            "is_checked": self.is_checked,
            "unchecked": self.unchecked,
            "host": self.host.to_dict(),
        }


def _quantized_types(model: onnx.ModelProto) -> set[int]:
    """Element types of the integers a QDQ model dequantizes (weights and activations)."""
    inits = {init.name: init for init in model.graph.initializer}
    types = set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            types.add(int(inits[node.input[0]].data_type))
        elif node.op_type == "QuantizeLinear":
            types.add(_quantize_type(node, inits))
    return types - {_INT32}


def _has_signed_activations(model: onnx.ModelProto) -> bool:
    """Whether a QuantizeLinear writes an int8 activation (not a constant)."""
    inits = {init.name: init for init in model.graph.initializer}
    return any(
        node.op_type == "QuantizeLinear"
        and node.input[0] not in inits
        and _quantize_type(node, inits) == _INT8
        for node in model.graph.node
    )


def _quantized_adds(model: onnx.ModelProto) -> set[str]:
    """Labels (``"name (Add)"``, as the reference names its steps) of the Add nodes whose
    inputs are all dequantized int8 tensors: ONNX Runtime fuses those into its own int8 add."""
    from edgeopt.export.c._program import node_label

    producers = {out: node for node in model.graph.node for out in node.output}
    return {
        node_label(node)
        for node in model.graph.node
        if node.op_type == "Add"
        and all(
            name in producers and producers[name].op_type == "DequantizeLinear"
            for name in node.input
        )
    }


def _lowered(model: onnx.ModelProto) -> tuple[Any, str | None]:
    """The integer reference's program of ``model``, or None and why it cannot compute it."""
    from edgeopt.export.c._lower import lower

    try:
        return lower(model, source="the model"), None
    except InputError as exc:
        return None, str(exc).removeprefix("the model: ")
    except Exception as exc:  # a reference that cannot read a file is no reason to stop measuring
        return None, f"the integer reference cannot read it ({type(exc).__name__})"


def _round_shift(values: np.ndarray, shift: int) -> np.ndarray:
    """round(values / 2^shift), ties to even (the C library's ``edgeopt_round_shift``)."""
    quotient, remainder = np.divmod(values, np.int64(1) << shift)  # floor division
    half = np.int64(1) << (shift - 1)
    up = (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
    return quotient + up


def elementwise_table(function: str, params: dict[str, Any]) -> np.ndarray:
    """The output of the C library's ``edgeopt_add`` / ``edgeopt_mul`` for every pair of inputs,
    as uint8 (value + 128), indexed ``a * 256 + b`` by the uint8 (value + 128) inputs.

    Add is integer arithmetic: ``round((a - za) * ma + (b - zb) * mb, shift) + zy``. Mul is the
    float32 arithmetic of ONNX Runtime's QLinearMul, which the C library reproduces: the product
    of the two differences times the float32 scale ratio, plus the zero point, each rounded to
    float32, then to the nearest integer (ties to even).
    """
    a = np.arange(256, dtype=np.int64)[:, None] - 128 - params["a_zero_point"]
    b = np.arange(256, dtype=np.int64)[None, :] - 128 - params["b_zero_point"]
    if function == "edgeopt_add":
        total = a * params["a_multiplier"] + b * params["b_multiplier"]
        out = _round_shift(total, params["shift"]) + params["out_zero_point"]
    else:
        ratio = np.float32(math.ldexp(params["multiplier"], -params["shift"]))
        offset = params["out_offset"]
        scaled = (a * b).astype(np.float32) * ratio
        total = scaled + np.float32(params["out_zero_point"] + offset)
        out = np.rint(total).astype(np.int64) - offset
    out = np.clip(out, params["act_min"], params["act_max"]) + 128
    return out.astype(np.uint8).ravel()


def _integer_elementwise(reencoded: Reencoded, program: Any) -> set[str]:
    """Replace each quantized Add and Mul of the re-encoded model by a lookup of the integer
    reference's result (:func:`elementwise_table`): ONNX Runtime adds int8 tensors in float32
    on x86 and in its own fixed point on Arm, and each rounds near-ties its own way."""
    from onnx import helper
    from onnx import numpy_helper

    graph = reencoded.model.graph
    producers = {out: node for node in graph.node for out in node.output}
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {init.name for init in graph.initializer}
    replaced: set[str] = set()  # the ONNX nodes whose result is now looked up
    for index, step in enumerate(program.steps):
        if step.function not in ("edgeopt_add", "edgeopt_mul"):
            continue
        a, b = step.inputs
        if not (isinstance(a, str) and isinstance(b, str) and isinstance(step.output, str)):
            continue
        writer = producers.get(step.output)
        if writer is None or writer.op_type != "QuantizeLinear" or not {a, b} <= taken:
            continue  # not a tensor of the graph (a view): ONNX Runtime computes it as before
        base = f"edgeopt_table_{index}"
        names = [f"{base}_{part}" for part in ("values", "a", "b", "a256", "index")]
        if any(name in taken for name in names):
            continue
        table, wide_a, wide_b, scaled_a, position = names
        graph.initializer.append(
            numpy_helper.from_array(elementwise_table(step.function, step.params), table)
        )
        graph.initializer.append(numpy_helper.from_array(np.array(256, np.int32), f"{base}_256"))
        writer.output[0] = f"{base}_unused"  # the float result is computed and dropped
        graph.node.extend(
            [
                helper.make_node("Cast", [a], [wide_a], to=_INT32),
                helper.make_node("Cast", [b], [wide_b], to=_INT32),
                helper.make_node("Mul", [wide_a, f"{base}_256"], [scaled_a]),
                helper.make_node("Add", [scaled_a, wide_b], [position]),
                helper.make_node("Gather", [table, position], [step.output]),
            ]
        )
        replaced.add(step.node)
    if replaced:
        _sort_nodes(graph)
    return replaced


def _quantized_conv_transposes(model: onnx.ModelProto) -> set[str]:
    """Labels of the ConvTranspose nodes whose input and weight are dequantized integers: ONNX
    Runtime's CPU provider computes them in float (it has no int8 ConvTranspose)."""
    from edgeopt.export.c._program import node_label

    producers = {out: node for node in model.graph.node for out in node.output}
    return {
        node_label(node)
        for node in model.graph.node
        if node.op_type == "ConvTranspose"
        and all(
            name in producers and producers[name].op_type == "DequantizeLinear"
            for name in node.input[:2]
        )
    }


def _as_convolution(
    graph: Any, node: Any, inits: dict[str, Any], shapes: dict[str, tuple[int, ...]], fresh: Any
) -> bool:
    """Rewrite one quantized 2-D ConvTranspose (group 1, no dilation) as the convolution ONNX
    Runtime runs on integers (QLinearConv): its quantized input with ``stride - 1`` zero-point
    pixels inserted between pixels (Reshape, Pad, Reshape), padded by ``kernel - 1 - pad`` (a
    negative pad crops: ONNX Pad), dequantized, and convolved with the kernel flipped and its
    channel axes swapped. The inserted pixels add ``(zx - zx) * w = 0``: the integer sum is the
    ConvTranspose's, the one the C library computes. False: left as it was."""
    from onnx import helper
    from onnx import numpy_helper

    from edgeopt.graph import attributes

    producers = {out: n for n in graph.node for out in n.output}
    dq_x, dq_w = producers[node.input[0]], producers[node.input[1]]
    attrs = attributes(node)
    weight = inits.get(dq_w.input[0])
    if (
        weight is None
        or len(weight.dims) != 4
        or int(attrs.get("group", 1)) != 1
        or any(d != 1 for d in attrs.get("dilations", [1, 1]))
        or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"")
        or "output_shape" in attrs
        or len(dq_x.input) < 3
    ):
        return False
    w = numpy_helper.to_array(weight)  # (in, out, kh, kw)
    channels, _, kh, kw = w.shape
    sh, sw = attrs.get("strides", [1, 1])
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    extra_h, extra_w = attrs.get("output_padding", [0, 0])
    names = {
        part: fresh(f"{node.name or 'convtranspose'}_{part}")
        for part in (
            "wide_shape",
            "wide",
            "spread",
            "plane_shape",
            "plane",
            "border",
            "padded",
            "x",
            "w",
            "weight",
            "spread_out",
        )
    }
    flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    spread = [0] * 6 + [0, 0, 0, sh - 1, 0, sw - 1]
    border = [0, 0, kh - 1 - top, kw - 1 - left]
    border += [0, 0, kh - 1 - bottom + extra_h - (sh - 1), kw - 1 - right + extra_w - (sw - 1)]
    shape = shapes.get(dq_x.input[0])
    if shape is None or len(shape) != 4:
        return False
    _, _, height, width = shape
    graph.initializer.extend(
        [
            numpy_helper.from_array(
                np.array([0, channels, height, 1, width, 1]), names["wide_shape"]
            ),
            numpy_helper.from_array(np.array(spread, np.int64), names["spread"]),
            numpy_helper.from_array(
                np.array([0, channels, height * sh, width * sw]), names["plane_shape"]
            ),
            numpy_helper.from_array(np.array(border, np.int64), names["border"]),
            numpy_helper.from_array(flipped, names["weight"]),
        ]
    )
    zero = dq_x.input[2]
    w_axis = {"axis": 0} if inits[dq_w.input[1]].dims else {}
    w_inputs = [names["weight"], *dq_w.input[1:]]
    graph.node.extend(
        [
            helper.make_node("Reshape", [dq_x.input[0], names["wide_shape"]], [names["wide"]]),
            helper.make_node("Pad", [names["wide"], names["spread"], zero], [names["spread_out"]]),
            helper.make_node(
                "Reshape", [names["spread_out"], names["plane_shape"]], [names["plane"]]
            ),
            helper.make_node("Pad", [names["plane"], names["border"], zero], [names["padded"]]),
            helper.make_node("DequantizeLinear", [names["padded"], *dq_x.input[1:]], [names["x"]]),
            helper.make_node("DequantizeLinear", w_inputs, [names["w"]], **w_axis),
            helper.make_node(
                "Conv",
                [names["x"], names["w"], *node.input[2:]],
                list(node.output),
                name=fresh(f"{node.name or 'convtranspose'}_as_conv"),
                kernel_shape=[kh, kw],
            ),
        ]
    )
    graph.node.remove(node)
    return True


def _integer_conv_transposes(reencoded: Reencoded) -> set[str]:
    """Rewrite each quantized ConvTranspose of the re-encoded model as an integer convolution
    (:func:`_as_convolution`); the labels of those rewritten."""
    from edgeopt.export.c._program import node_label

    graph = reencoded.model.graph
    wanted = _quantized_conv_transposes(reencoded.model)
    if not wanted:
        return set()
    taken = {name for node in graph.node for name in (*node.input, *node.output, node.name)}
    taken |= {init.name for init in graph.initializer}

    def fresh(base: str) -> str:
        name, number = base, 0
        while name in taken:
            number += 1
            name = f"{base}_{number}"
        taken.add(name)
        return name

    from edgeopt.graph import read_graph

    inits = {init.name: init for init in graph.initializer}
    tensors = read_graph(reencoded.model).tensors
    shapes = {name: tuple(info.shape) for name, info in tensors.items()}
    done = set()
    for node in [n for n in graph.node if node_label(n) in wanted]:
        if _as_convolution(graph, node, inits, shapes, fresh):
            done.add(node_label(node))
    if done:
        _sort_nodes(graph)
    return done


def _sort_nodes(graph: Any) -> None:
    """Put the nodes back in an order where each follows what it reads (ONNX wants it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            ordered.extend(pending)  # a cycle or a missing input: ONNX Runtime will say so
            break
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    copies = [type(node)() for node in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def int8_arithmetic(
    model: onnx.ModelProto, *, path: str = "auto"
) -> tuple[Reencoded | None, Int8Arithmetic | None]:
    """Decide how ONNX Runtime must run ``model`` to compute the device's integers here.

    ``auto`` keeps the file as shipped where ONNX Runtime computes it exactly on this host, and
    runs a rewritten copy where it does not: a host whose U8S8 kernels saturate (probed), 4-bit
    weights (ONNX Runtime computes those in float), element-wise adds (ONNX Runtime's own
    rounding). The copy stores every int8 integer as uint8 (:func:`uint8_encoding`) and its
    adds and multiplies as lookups of the integer reference's result. ``as-shipped`` and
    ``rewritten`` force a path (tests run the latter on every host).

    Args:
        model: the file's model (not modified).
        path: ``auto``, ``as-shipped`` or ``rewritten``.

    Returns:
        The rewritten model (None when the file runs as shipped) and the record of the path;
        ``(None, None)`` for a float model.

    Raises:
        InputError: an unknown path.

    Example:
        >>> from edgeopt.measure.int8 import _probe_model
        >>> model, _, _ = _probe_model()
        >>> done, how = int8_arithmetic(model, path="rewritten")
        >>> how.path, how.is_exact, done.weights
        ('rewritten', True, 1)
    """
    if path not in PATHS:
        raise InputError(f"int8 path must be one of {', '.join(PATHS)}, got {path!r}.")
    types = _quantized_types(model)
    if not types:
        return None, None
    host = host_int8()
    program, gap = _lowered(model)
    signed = bool(types & {_INT8, _INT4})
    sub_byte = bool(types & {_INT4, _UINT4})
    adds = _quantized_adds(model)
    transposed = _quantized_conv_transposes(model)
    inexact = []  # why ONNX Runtime does not compute the file as shipped exactly here
    if sub_byte:
        inexact.append("ONNX Runtime computes 4-bit weights in float, not in integers")
    if signed and host.is_saturating:
        inexact.append(host.describe())
    if adds:
        inexact.append("ONNX Runtime rounds int8 adds its own way (float32 on x86)")
    if transposed:
        inexact.append("ONNX Runtime computes ConvTranspose in float")
    if _has_signed_activations(model):
        # edgeopt writes uint8 activations; an imported TFLite file has int8 ones, whose ONNX
        # Runtime kernels the probe does not cover: its depthwise convolution of them is 1 LSB
        # from the integers on TFLM's person_detect, and its U8U8 copy is not
        inexact.append("ONNX Runtime rounds convolutions of int8 (signed) activations its own way")
    is_shipped_exact = not inexact
    if path == "auto":
        path = AS_SHIPPED if is_shipped_exact else REWRITTEN
    reencoded = None
    if path == AS_SHIPPED:
        is_exact = is_shipped_exact
        exact_reason = host.describe() if signed else "uint8 weights (U8U8) cannot saturate"
        reason = "; ".join(inexact) or exact_reason
    else:
        reencoded = uint8_encoding(model)
        tables = _integer_elementwise(reencoded, program) if program is not None else set()
        convolutions = _integer_conv_transposes(reencoded)
        why = "; ".join(inexact) or "it was asked for (the file as shipped is exact here too)"
        how = "int8 stored as uint8" + (", adds and multiplies as integer tables" * bool(tables))
        how += ", ConvTranspose as an integer convolution" * bool(convolutions)
        reason = f"{how}, because {why}"
        # what stays signed runs as shipped, and an add left to ONNX Runtime rounds its way
        is_exact = (
            (is_shipped_exact or not reencoded.kept)
            and adds <= tables
            and transposed <= convolutions
        )
        if not adds <= tables:
            reason += f"; adds left to ONNX Runtime: {', '.join(sorted(adds - tables)[:3])}"
        if not transposed <= convolutions:
            left = ", ".join(sorted(transposed - convolutions)[:3])
            reason += f"; ConvTranspose left to ONNX Runtime's float: {left}"
        if reencoded.kept:
            reason += f"; left as they were: {', '.join(reencoded.kept[:3])}"
    return reencoded, Int8Arithmetic(
        path=path,
        reason=reason,
        host=host,
        is_exact=is_exact,
        is_checked=gap is None,
        unchecked=gap,
        is_shipped_exact=is_shipped_exact,
    )


class ExactSession:
    """An ONNX Runtime session that computes a quantized file's integers as the device does.

    It runs the file as shipped or its uint8 re-encoding (see :func:`int8_arithmetic`) and reads
    int8 tensors back as the file holds them, so callers use it as a plain session
    (``run``, ``get_inputs``, ``get_outputs``, ``get_providers``). ``arithmetic`` is the record
    for the provenance (None for a float model).
    """

    def __init__(self, session: Any, reencoded: Reencoded | None, arithmetic: Any) -> None:
        self._session = session
        self._reencoded = reencoded
        self.arithmetic: Int8Arithmetic | None = arithmetic

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]:
        values = self._session.run(names, feed)
        if self._reencoded is None or not self._reencoded.shifted:
            return list(values)
        names = names or [o.name for o in self._session.get_outputs()]
        return [self._reencoded.restore(n, v) for n, v in zip(names, values, strict=True)]

    def get_inputs(self) -> Any:
        return self._session.get_inputs()

    def get_outputs(self) -> Any:
        return self._session.get_outputs()

    def get_providers(self) -> Any:
        return self._session.get_providers()


def make_exact_session(
    model: str | Path | onnx.ModelProto,
    *,
    threads: int = 1,
    path: str = "auto",
    tensors: Collection[str] = (),
) -> ExactSession:
    """A CPU session whose int8 results are the device's exact integers on this host.

    Args:
        model: an ONNX file or model (float models run as they are).
        threads: ONNX Runtime intra-op threads.
        path: ``auto`` (default), or a forced ``as-shipped`` / ``rewritten``.
        tensors: intermediate tensors to add to the session's outputs (int8 ones read back as
            the file holds them).

    Returns:
        The session, with ``arithmetic`` saying which path runs and why.

    Raises:
        InputError: a file that is missing, not ONNX, or that ONNX Runtime cannot load.

    Example:
        >>> from edgeopt.measure.int8 import _probe_model
        >>> model, x, expected = _probe_model()
        >>> session = make_exact_session(model, path="rewritten")
        >>> bool((session.run(None, {"x": x})[0] == expected).all())
        True
    """
    from edgeopt.measure._session import make_session
    from edgeopt.models import read_onnx

    proto = read_onnx(Path(model)) if isinstance(model, str | Path) else model
    label = str(model) if isinstance(model, str | Path) else "the model"
    reencoded, arithmetic = int8_arithmetic(proto, path=path)

    def start(runs: onnx.ModelProto, is_copy: bool) -> Any:
        known = {o.name for o in runs.graph.output}
        extra = [name for name in dict.fromkeys(tensors) if name not in known]
        if extra:
            import onnx

            if not is_copy:  # never add outputs to the caller's model
                runs = onnx.ModelProto.FromString(runs.SerializeToString())
            runs.graph.output.extend(onnx.ValueInfoProto(name=name) for name in extra)
        return make_session(runs.SerializeToString(), threads=threads)

    try:
        session = start(reencoded.model if reencoded is not None else proto, reencoded is not None)
    except InputError as exc:
        if reencoded is None or arithmetic is None:
            raise InputError(str(exc).replace("the model", label, 1)) from None
        # the rewritten copy is edgeopt's own: measure the file as shipped, and say so
        try:
            session = start(proto, False)
        except InputError as again:
            raise InputError(str(again).replace("the model", label, 1)) from None
        why = str(exc).removeprefix("the model: ")
        arithmetic = replace(
            arithmetic,
            path=AS_SHIPPED,
            is_exact=arithmetic.is_shipped_exact,
            reason=f"the rewritten copy did not load ({why}); {arithmetic.reason}",
        )
        reencoded = None
    return ExactSession(session, reencoded, arithmetic)
