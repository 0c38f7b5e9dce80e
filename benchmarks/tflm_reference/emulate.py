"""The layers of an edgeopt C library run through the TFLM reference kernels on an emulated core.

:func:`layers_of_export` turns each kernel call of an exported library that TFLite Micro has a
reference kernel for (convolution, depthwise, 1x1 pointwise, fully connected, average / max
pooling, add) into the :class:`~benchmarks.tflm_reference.port.Layer` TFLM would run: the same
shapes, strides and fused activation range, the weights transposed to TFLite's layout (OHWI,
1HWC), the bias with the input zero point unfolded, and edgeopt's multiplier ``m * 2^-s`` as
TFLM's ``(m, 31 - s)``. Padding is what TFLite's SAME (or VALID) gives for those shapes, as a
converted Keras model has it. A fully connected layer runs TFLM's per-tensor ``FullyConnected``
(what the v0.5 converter wrote); edgeopt's float-output last layer runs as an int8 one.

:func:`measure_layers` builds one bare-metal image with edgeopt's own Cortex-M harness
(``edgeopt_cortexm.c``: startup, CMSDK timer, semihosting; the same linker script and
``EDGEOPT_LAYER_END`` hook as :mod:`edgeopt.measure.cortexm`): the layers called one after
another, all reading one seeded random int8 input, the timer read after each; QEMU
``-icount shift=7`` turns the timer's ticks into instructions, as for edgeopt's library.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.tflm_reference.port import ADD
from benchmarks.tflm_reference.port import AVERAGE_POOL
from benchmarks.tflm_reference.port import CONV
from benchmarks.tflm_reference.port import DEPTHWISE
from benchmarks.tflm_reference.port import FLAGS
from benchmarks.tflm_reference.port import FOLDER
from benchmarks.tflm_reference.port import FULLY_CONNECTED
from benchmarks.tflm_reference.port import INT_FIELDS
from benchmarks.tflm_reference.port import MAX_POOL
from benchmarks.tflm_reference.port import Layer
from benchmarks.tflm_reference.port import add_parameters
from benchmarks.tflm_reference.port import same_padding

#: edgeopt kernel -> layer kind of the comparison; kernels not listed are "other".
KINDS = {
    "edgeopt_conv2d": "conv",
    "edgeopt_depthwise_conv2d": "depthwise",
    "edgeopt_pointwise_conv2d": "pointwise",
    "edgeopt_fully_connected": "fc",
    "edgeopt_fully_connected_f32": "fc",
    "edgeopt_global_avg_pool": "avgpool",
    "edgeopt_avg_pool2d": "avgpool",
    "edgeopt_max_pool2d": "maxpool",
    "edgeopt_add": "add",
}
OUTPUT_BYTES = 16


def kind_of(step: Any) -> str:
    """The comparison's layer kind of one edgeopt kernel call (a 1x1 convolution: pointwise)."""
    kind = KINDS.get(step.function, "other")
    p = step.params
    if kind == "conv" and p.get("groups", 1) != 1:
        return "other"  # grouped convolution: TFLM's conv would run it, not measured here
    if kind == "conv" and p["kernel_height"] == 1 and p["kernel_width"] == 1:
        return "pointwise"
    return kind


def _padding(size: int, out: int, kernel: int, stride: int, pad: int) -> int:
    """TFLite's SAME or VALID padding where the output size is one of theirs, else edgeopt's."""
    same_out, same_pad = same_padding(size, kernel, stride)
    if out == same_out:
        return same_pad
    if out == (size - kernel) // stride + 1:
        return 0
    return pad


def _array(step: Any, name: str) -> np.ndarray:
    for array in step.arrays:
        if array.name.endswith(name):
            return np.asarray(array.values)
    raise KeyError(f"{step.function} has no array {name}")


def _requantization(step: Any) -> tuple[np.ndarray, np.ndarray]:
    multipliers = _array(step, "multiplier").astype(np.int64)
    shifts = 31 - _array(step, "shift").astype(np.int64)
    return multipliers.astype(np.int32), shifts.astype(np.int32)


def _window(step: Any, kind: str, zero_point: int) -> Layer:
    p = step.params
    is_depthwise = kind == "depthwise"
    ints = {
        "kind": DEPTHWISE if is_depthwise else CONV,
        "input_height": p["in_height"],
        "input_width": p["in_width"],
        "input_depth": p["in_channels"],
        "output_height": p["out_height"],
        "output_width": p["out_width"],
        "output_depth": p["out_channels"],
        "filter_height": p["kernel_height"],
        "filter_width": p["kernel_width"],
        "stride_height": p["stride_height"],
        "stride_width": p["stride_width"],
        "pad_height": _padding(
            p["in_height"], p["out_height"], p["kernel_height"], p["stride_height"], p["pad_top"]
        ),
        "pad_width": _padding(
            p["in_width"], p["out_width"], p["kernel_width"], p["stride_width"], p["pad_left"]
        ),
        "depth_multiplier": p["out_channels"] // p["in_channels"] if is_depthwise else 1,
        "input_offset": -zero_point,
        "output_offset": p["out_zero_point"],
        "activation_min": p["act_min"],
        "activation_max": p["act_max"],
    }
    kh, kw = p["kernel_height"], p["kernel_width"]
    weights = _array(step, "weights").astype(np.int8)
    bias = _array(step, "bias").astype(np.int64)
    if is_depthwise:  # [C*M][1][kh][kw] -> [1][kh][kw][C*M]
        filter_ = weights.reshape(p["out_channels"], kh, kw).transpose(1, 2, 0)[None]
    else:  # OIHW -> OHWI
        filter_ = weights.reshape(p["out_channels"], p["in_channels"], kh, kw).transpose(0, 2, 3, 1)
    if step.function == "edgeopt_pointwise_conv2d":  # the zero point was folded into the bias
        bias = bias + zero_point * filter_.reshape(p["out_channels"], -1).sum(axis=1)
    multipliers, shifts = _requantization(step)
    return Layer(
        ints,
        filter=np.ascontiguousarray(filter_),
        bias=np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32),
        multipliers=multipliers,
        shifts=shifts,
    )


def _fully_connected(step: Any, zero_point: int) -> Layer:
    p = step.params
    weights = _array(step, "weights").astype(np.int8).reshape(p["out_features"], p["in_features"])
    bias = _array(step, "bias").astype(np.int64) + zero_point * weights.sum(axis=1)
    if step.function == "edgeopt_fully_connected":
        multipliers, shifts = _requantization(step)
    else:  # float output: an int8 one at the scale of a typical layer
        multipliers = np.full(p["out_features"], 1 << 30, dtype=np.int32)
        shifts = np.full(p["out_features"], -8, dtype=np.int32)
    ints = {
        "kind": FULLY_CONNECTED,
        "input_height": 1,
        "input_width": 1,
        "input_depth": p["in_features"],
        "output_height": 1,
        "output_width": 1,
        "output_depth": p["out_features"],
        "input_offset": -zero_point,
        "weights_offset": 0,
        "output_offset": p["out_zero_point"],
        "activation_min": p["act_min"],
        "activation_max": p["act_max"],
        "output_multiplier": int(multipliers[0]),
        "output_shift": int(shifts[0]),
    }
    return Layer(
        ints,
        filter=weights,
        bias=np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32),
        multipliers=multipliers,
        shifts=shifts,
    )


def _pool(step: Any, kind: str) -> Layer:
    p = step.params
    is_global = step.function == "edgeopt_global_avg_pool"
    kh = p["in_height"] if is_global else p["kernel_height"]
    kw = p["in_width"] if is_global else p["kernel_width"]
    sh = 1 if is_global else p["stride_height"]
    sw = 1 if is_global else p["stride_width"]
    ints = {
        "kind": AVERAGE_POOL if kind == "avgpool" else MAX_POOL,
        "input_height": p["in_height"],
        "input_width": p["in_width"],
        "input_depth": p["channels"],
        "output_height": p["out_height"],
        "output_width": p["out_width"],
        "output_depth": p["channels"],
        "filter_height": kh,
        "filter_width": kw,
        "stride_height": sh,
        "stride_width": sw,
        "pad_height": _padding(p["in_height"], p["out_height"], kh, sh, p.get("pad_top", 0)),
        "pad_width": _padding(p["in_width"], p["out_width"], kw, sw, p.get("pad_left", 0)),
        "activation_min": -128,
        "activation_max": 127,
    }
    return Layer(ints)


def _add(step: Any) -> Layer:
    p = step.params
    # edgeopt: a_multiplier * 2^-shift = a_scale / out_scale (likewise b)
    a_ratio = p["a_multiplier"] * 2.0 ** -p["shift"]
    b_ratio = p["b_multiplier"] * 2.0 ** -p["shift"]
    ints = {
        "kind": ADD,
        "input_height": 1,
        "input_width": 1,
        "input_depth": p["size"],
        "output_height": 1,
        "output_width": 1,
        "output_depth": p["size"],
        "input_offset": -p["a_zero_point"],
        "input2_offset": -p["b_zero_point"],
        "output_offset": p["out_zero_point"],
        "activation_min": p["act_min"],
        "activation_max": p["act_max"],
        **add_parameters(a_ratio, b_ratio, 1.0),
    }
    return Layer(ints)


def layers_of_export(export: Any) -> list[tuple[int, str, Layer]]:
    """``(step index, kind, layer)`` for each kernel call TFLM has a reference kernel for."""
    program = export.program
    found = []
    for index, step in enumerate(program.steps):
        kind = kind_of(step)
        if kind == "other":
            continue
        source = step.inputs[0]
        zero_point = program.buffers[source].zero_point if isinstance(source, str) else 0
        if kind in ("conv", "depthwise", "pointwise"):
            layer = _window(step, kind, zero_point)
        elif kind == "fc":
            layer = _fully_connected(step, zero_point)
        elif kind in ("avgpool", "maxpool"):
            layer = _pool(step, kind)
        else:
            layer = _add(step)
        layer.name = step.node
        found.append((index, kind, layer))
    return found


def _c_array(name: str, ctype: str, values: np.ndarray) -> str:
    flat = [str(int(v)) for v in np.asarray(values).ravel()]
    rows = [", ".join(flat[i : i + 24]) for i in range(0, len(flat), 24)]
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"


def model_source(layers: list[Layer]) -> tuple[str, int]:
    """The C file that runs ``layers`` one after another, and the input size it reads."""
    parts = [
        "/* Written by benchmarks/tflm_reference/emulate.py: the layers of one model through the\n"
        " * TFLM reference kernels, the timer read after each (EDGEOPT_LAYER_END). */\n",
        '#include "tflm_model.h"\n#include "tflm_reference.h"\n\n',
    ]
    entries = []
    input_size = 0
    output_size = OUTPUT_BYTES
    for i, layer in enumerate(layers):
        pointers = {}
        for field_name, ctype in (
            ("filter", "int8_t"),
            ("bias", "int32_t"),
            ("multipliers", "int32_t"),
            ("shifts", "int32_t"),
        ):
            values = getattr(layer, field_name)
            if values is None:
                pointers[field_name] = "NULL"
            else:
                parts.append(_c_array(f"layer{i}_{field_name}", ctype, values))
                pointers[field_name] = f"layer{i}_{field_name}"
        fields = [f".{name} = {layer.value(name)}" for name in INT_FIELDS]
        fields += [f".{name} = {value}" for name, value in pointers.items()]
        entries.append("    {" + ", ".join(fields) + "}")
        size = layer.value("input_height") * layer.value("input_width") * layer.value("input_depth")
        input_size = max(input_size, 2 * size if layer.value("kind") == ADD else size)
        output_size = max(output_size, layer.output_size)
    parts.append(f"\nstatic const tflm_layer layers[{len(layers)}] = {{\n")
    parts.append(",\n".join(entries) + "\n};\n")
    parts.append(f"static int8_t scratch[{output_size}];\n\n")
    body = ["int tflm_model_run(const int8_t *input, int8_t *output)\n{\n    int32_t i;\n"]
    for i, layer in enumerate(layers):
        size = layer.value("input_height") * layer.value("input_width") * layer.value("input_depth")
        second = f"input + {size}" if layer.value("kind") == ADD else "NULL"
        body.append(
            f"    if (tflm_run_layer(&layers[{i}], input, {second}, scratch) != 0) {{\n"
            "        return 1;\n    }\n"
            f"    EDGEOPT_LAYER_END({i});\n"
        )
    body.append(
        f"    for (i = 0; i < {OUTPUT_BYTES}; i++) {{\n        output[i] = scratch[i];\n    }}\n"
        "    return 0;\n}\n"
    )
    parts.extend(body)
    return "".join(parts), input_size


def _build(layers: list[Layer], core: Any, x: np.ndarray, scratch: Path) -> Path:
    from edgeopt.measure._cortexm_image import compile_and_link
    from edgeopt.measure._cortexm_image import timer_defines
    from edgeopt.measure._cortexm_image import write_harness
    from edgeopt.measure.cortexm import ARM_GCC

    compiler = shutil.which(ARM_GCC)
    assert compiler is not None
    source, input_size = model_source(layers)
    (scratch / "tflm_model.c").write_text(source)
    (scratch / "tflm_model.h").write_text(
        "#include <stddef.h>\n#include <stdint.h>\n"
        "int tflm_model_run(const int8_t *input, int8_t *output);\n"
    )
    harness = write_harness(scratch, core, x, "int8_t")
    defines = [
        "-DEDGEOPT_RUN=tflm_model_run",
        "-DEDGEOPT_INPUT_IS_RAW=1",
        "-DEDGEOPT_INPUT_T=int8_t",
        "-DEDGEOPT_OUTPUT_T=int8_t",
        f"-DEDGEOPT_INPUT_SIZE={x.shape[1]}",
        f"-DEDGEOPT_OUTPUT_SIZE={OUTPUT_BYTES}",
        f"-DEDGEOPT_LAYERS={len(layers)}",
        f"-DEDGEOPT_SAMPLES={len(x)}",
        "-DEDGEOPT_SAMPLE_T=int8_t",
        *timer_defines(core),
    ]
    cc = [compiler, *FLAGS, *core.flags, "-I", str(FOLDER), "-I", str(scratch)]
    jobs = [
        ([str(FOLDER / "tflm_reference.c")], "tflm_reference.o"),
        (
            [str(scratch / "tflm_model.c"), "-include", str(scratch / "edgeopt_cortexm_hook.h")],
            "tflm_model.o",
        ),
        ([str(scratch / "edgeopt_samples.c")], "samples.o"),
        ([str(harness), "-include", str(scratch / "tflm_model.h"), *defines], "harness.o"),
    ]
    image = compile_and_link(cc, jobs, core, scratch)
    assert input_size <= x.shape[1]
    return image


def _check_output(layer: Layer, x: np.ndarray, output: bytes) -> None:
    """The emulated build's last layer wrote what the host build of the kernels writes."""
    from benchmarks.tflm_reference.port import build_host_library
    from benchmarks.tflm_reference.port import run_host

    size = layer.value("input_height") * layer.value("input_width") * layer.value("input_depth")
    second = x[size : 2 * size] if layer.value("kind") == ADD else None
    with tempfile.TemporaryDirectory(prefix="edgeopt-tflmref-host-") as folder:
        expected = run_host(build_host_library(Path(folder)), layer, x[:size], second)
    if expected[:OUTPUT_BYTES].tobytes() != output[: len(expected[:OUTPUT_BYTES])]:
        raise RuntimeError("the emulated TFLM reference output differs from the host build's")


def measure_layers(
    layers: list[Layer], *, core: str = "cortex-m4", seed: int = 0, timeout_s: float = 900.0
) -> list[int]:
    """Instructions each layer's TFLM reference kernel executes on the emulated core; the last
    layer's first output bytes are checked against the host build of the kernels."""
    from edgeopt.measure._cortexm_image import parse_output
    from edgeopt.measure.cortexm import _COARSE_DIVIDER
    from edgeopt.measure.cortexm import _WRAP
    from edgeopt.measure.cortexm import ICOUNT_SHIFT
    from edgeopt.measure.cortexm import QEMU
    from edgeopt.measure.cortexm import _instructions
    from edgeopt.measure.cortexm import qemu_command
    from edgeopt.measure.cortexm import require_cortexm_tools

    (chosen,) = require_cortexm_tools([core])
    qemu = shutil.which(QEMU)
    assert qemu is not None
    sizes = []
    for layer in layers:
        size = layer.value("input_height") * layer.value("input_width") * layer.value("input_depth")
        sizes.append(2 * size if layer.value("kind") == ADD else size)
    x = np.random.default_rng(seed).integers(-128, 128, (1, max(sizes)), dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="edgeopt-tflmref-") as folder:
        scratch = Path(folder)
        image = _build(layers, chosen, x, scratch)
        command = qemu_command(qemu, chosen, image, ICOUNT_SHIFT)
        subprocess.run(
            command,
            capture_output=True,
            check=False,
            cwd=scratch,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        console = scratch / "semihosting.txt"
        text = console.read_text(errors="replace") if console.is_file() else ""
    ((coarse, stamps, output),) = parse_output(text, 1)
    _check_output(layers[-1], x[0], output)
    ticks = [(stamps[i] - stamps[i + 1]) % _WRAP for i in range(len(stamps) - 1)]
    coarse_ticks = ((coarse[0] - coarse[1]) % _WRAP) * _COARSE_DIVIDER
    if abs(sum(ticks) - coarse_ticks) > 2 * _COARSE_DIVIDER:
        raise RuntimeError("an interval ran past the 32-bit timer's wrap; the count is wrong")
    return [_instructions(t, chosen, ICOUNT_SHIFT) for t in ticks[:-1]]
