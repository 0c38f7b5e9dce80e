"""The bare-metal image :mod:`edgeopt.measure.cortexm` runs: samples, linker script, the
layer hook, the build, and the parsing of what the image prints by semihosting."""

from __future__ import annotations

import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

if TYPE_CHECKING:
    from edgeopt.export.c import CExport
    from edgeopt.measure.cortexm import CortexMCore

HARNESS = "edgeopt_cortexm.c"
_MIB4 = 4 << 20


def _c_literal(value: Any, *, is_float: bool) -> str:
    from edgeopt.export.c._emit import c_float

    return c_float(value) if is_float else str(int(value))


def _write_samples(path: Path, x: np.ndarray, sample_type: str) -> None:
    is_float = sample_type == "float"
    rows = []
    for sample in x.reshape(len(x), -1):
        values = [_c_literal(v, is_float=is_float) for v in sample]
        lines = [", ".join(values[i : i + 8]) for i in range(0, len(values), 8)]
        rows.append("    {\n        " + ",\n        ".join(lines) + "\n    }")
    path.write_text(
        "/* samples baked into the image by edgeopt.measure.cortexm */\n"
        "#include <stdint.h>\n\n"
        f"const {sample_type} edgeopt_samples[{len(x)}][{x[0].size}] = {{\n"
        + ",\n".join(rows)
        + "\n};\n"
    )


def _linker_script(core: CortexMCore) -> str:
    if core.vector_origin is None:
        vectors_memory = ""
        vectors = """    .text :
    {
        LONG(ORIGIN(RAM) + LENGTH(RAM))
        KEEP(*(.vectors))
        *(.text*)
        *(.rodata*)
        . = ALIGN(4);
    } > CODE
"""
    else:
        # the core reads its vector table where the image does not fit: the table alone there
        vectors_memory = f"    VECTORS (rx) : ORIGIN = {core.vector_origin:#010x}, LENGTH = 0x400\n"
        vectors = """    .vectors :
    {
        LONG(ORIGIN(RAM) + LENGTH(RAM))
        KEEP(*(.vectors))
    } > VECTORS
    .text :
    {
        *(.text*)
        *(.rodata*)
        . = ALIGN(4);
    } > CODE
"""
    return f"""/* edgeopt Cortex-M image for QEMU {core.machine}: code and constants in 4 MiB, data,
 * arena and stack in another 4 MiB. */
MEMORY
{{
{vectors_memory}    CODE (rx) : ORIGIN = {core.code_origin:#010x}, LENGTH = {_MIB4:#x}
    RAM (rwx) : ORIGIN = {core.ram_origin:#010x}, LENGTH = {_MIB4:#x}
}}
ENTRY(edgeopt_reset)
SECTIONS
{{
{vectors}    .ARM.exidx : {{ *(.ARM.exidx*) }} > CODE
    .data : {{ *(.data*) . = ALIGN(4); }} > RAM
    .bss (NOLOAD) :
    {{
        edgeopt_bss_start = .;
        *(.bss*)
        *(COMMON)
        . = ALIGN(4);
        edgeopt_bss_end = .;
    }} > RAM
}}
"""


def _hook_header(core: CortexMCore) -> str:
    return (
        "/* EDGEOPT_LAYER_END for edgeopt.measure.cortexm: the timer's value after each layer */\n"
        "#include <stdint.h>\n"
        "extern volatile uint32_t edgeopt_stamps[];\n"
        "#define EDGEOPT_LAYER_END(step) (edgeopt_stamps[(step) + 1] = "
        f"*(volatile uint32_t *){core.timer_value_address:#x}u)\n"
    )


def timer_defines(core: CortexMCore) -> list[str]:
    """The harness's defines for the core's counters (a CMSDK timer and dual timer, or the
    SSE-300 System Counter)."""
    if core.has_system_counter:
        return ["-DEDGEOPT_SYSTEM_COUNTER=1", f"-DEDGEOPT_COUNTER_BASE={core.timer_base:#x}u"]
    assert core.dualtimer_base is not None
    return [
        "-DEDGEOPT_SYSTEM_COUNTER=0",
        f"-DEDGEOPT_TIMER_BASE={core.timer_base:#x}u",
        f"-DEDGEOPT_DUALTIMER_BASE={core.dualtimer_base:#x}u",
    ]


def _run(command: list[str], *, cwd: Path, what: str) -> None:
    from edgeopt.export.c import CBuildError

    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[:600]
        raise CBuildError(f"{what} failed on the generated C code: {detail}")


def build_image(
    export: CExport, core: CortexMCore, x: np.ndarray, scratch: Path, compiler: str
) -> Path:
    from edgeopt.export.c import STRICT_FLAGS

    assert export.program is not None
    p, u = export.prefix, export.prefix.upper()
    sample_type = f"{export.input_type}_t" if export.has_raw_input else "float"
    harness = write_harness(scratch, core, x, sample_type)
    defines = [
        f"-DEDGEOPT_RUN={p}_run",
        f"-DEDGEOPT_INPUT_IS_RAW={u}_INPUT_IS_RAW",
        f"-DEDGEOPT_INPUT_T={p}_input_t",
        f"-DEDGEOPT_OUTPUT_T={p}_output_t",
        f"-DEDGEOPT_INPUT_SIZE={u}_INPUT_SIZE",
        f"-DEDGEOPT_OUTPUT_SIZE={u}_OUTPUT_SIZE",
        f"-DEDGEOPT_LAYERS={len(export.program.steps)}",
        f"-DEDGEOPT_SAMPLES={len(x)}",
        f"-DEDGEOPT_SAMPLE_T={sample_type}",
        *timer_defines(core),
    ]
    if not export.has_raw_input:
        defines.append(f"-DEDGEOPT_QUANTIZE={p}_quantize_input")
    out = export.out_dir.resolve()
    cc = [compiler, *STRICT_FLAGS, *core.flags, "-I", str(out)]
    jobs = [
        ([str(out / f"{p}.c"), "-include", str(scratch / "edgeopt_cortexm_hook.h")], f"{p}.o"),
        ([str(out / f"{p}_weights.c")], "weights.o"),
        ([str(out / "edgeopt_kernels.c")], "kernels.o"),
        ([str(scratch / "edgeopt_samples.c")], "samples.o"),
        ([str(harness), "-include", str(out / f"{p}.h"), *defines], "harness.o"),
    ]
    return compile_and_link(cc, jobs, core, scratch)


def write_harness(scratch: Path, core: CortexMCore, x: np.ndarray, sample_type: str) -> Path:
    """Write what every bare-metal image for ``core`` needs beside the code it measures into
    ``scratch``: the samples ``x`` as a C array of ``sample_type``, the layer-timestamp hook
    header, the linker script and the harness (``edgeopt_cortexm.c``); the harness's path."""
    _write_samples(scratch / "edgeopt_samples.c", x, sample_type)
    (scratch / "edgeopt_cortexm_hook.h").write_text(_hook_header(core))
    (scratch / "edgeopt.ld").write_text(_linker_script(core))
    harness = scratch / HARNESS
    harness.write_text(resources.files("edgeopt.export.c").joinpath(HARNESS).read_text())
    return harness


def compile_and_link(
    cc: list[str], jobs: list[tuple[list[str], str]], core: CortexMCore, scratch: Path
) -> Path:
    """Compile each ``(arguments, object name)`` job with the command ``cc`` (compiler first)
    in ``scratch`` and link the objects with the linker script :func:`write_harness` wrote into
    ``scratch/image.elf``; a failing step is a :class:`CBuildError` naming it."""
    compiler = cc[0]
    objects = []
    for arguments, name in jobs:
        _run([*cc, "-c", *arguments, "-o", str(scratch / name)], cwd=scratch, what=compiler)
        objects.append(str(scratch / name))
    image = scratch / "image.elf"
    link = [compiler, *core.flags, "-nostartfiles", "--specs=nosys.specs", "-T", "edgeopt.ld"]
    _run([*link, *objects, "-o", str(image)], cwd=scratch, what=f"{compiler} (link)")
    return image


_LINE = re.compile(r"^([SCLOEF])((?: [0-9a-f]+)*)$")


def parse_output(text: str, samples: int) -> list[tuple[list[int], list[int], bytes]]:
    """(coarse counts, timer values, output bytes) per sample from the image's lines."""
    from edgeopt.export.c import CBuildError

    records: list[tuple[list[int], list[int], bytes]] = []
    coarse: list[int] = []
    stamps: list[int] = []
    is_done = False
    for raw in text.splitlines():
        match = _LINE.match(raw.strip())
        if match is None:
            continue
        kind, fields = match.group(1), match.group(2).split()
        if kind == "F":
            raise CBuildError("the image faulted on the emulated core (a bug in edgeopt).")
        if kind == "C":
            coarse = [int(v) for v in fields]
        elif kind == "L":
            stamps = [int(v) for v in fields]
        elif kind == "O":
            records.append((coarse, stamps, bytes.fromhex(fields[0] if fields else "")))
        elif kind == "E":
            is_done = True
    if not is_done or len(records) != samples:
        raise CBuildError(
            f"the emulated image printed {len(records)} of {samples} samples"
            + ("" if is_done else " and did not finish")
            + f": {text[-300:]!r}"
        )
    return records
