"""Instructions executed by edgeopt's C library on emulated Cortex-M cores (QEMU, ``-icount``).

No microcontroller is on hand, so the library :func:`~edgeopt.export.c.export_c` wrote is built
with ``arm-none-eabi-gcc`` for the core (the flags of a real build, hard-float ABI) into a
bare-metal image for one of QEMU's MPS2 / MPS3 boards, and run under ``qemu-system-arm -icount``:

- ``-icount shift=N`` makes QEMU's virtual clock advance 2^N ns per guest instruction executed,
  and nothing else (``sleep=off``), so a device clocked from it counts instructions
  deterministically (QEMU System Emulation User's Guide, "Invocation", ``-icount``; QEMU docs
  devel/tcg-icount.rst). The CMSDK APB timer 0 of the board counts down at the board's
  peripheral clock (Arm Cortex-M System Design Kit TRM, Arm DDI 0479, "APB timer"; QEMU's
  hw/timer/cmsdk-apb-timer.c); QEMU models it with ``SYSCLK_FRQ`` 25 MHz on mps2-an386 / an500
  (hw/arm/mps2.c; Arm AN386 and AN500 application notes) and 20 MHz on mps2-an505
  (hw/arm/mps2-tz.c; Arm AN505), at 0x40000000 (AN386, AN500) and its Secure alias 0x50000000
  (AN505, where the core starts Secure). The SSE-300 of mps3-an547 (Cortex-M55) has no CMSDK
  timer on its main clock; there the count is its System Counter's (a 64-bit count up at
  MAINCLK, 32 MHz; hw/timer/sse-counter.c, hw/arm/armsse.c; Arm Corstone SSE-300 TRM, 101773),
  printed negated so that every board's values count down. At shift 7 one instruction is
  128 ns, 3.2 (2.56, 4.096) ticks, so a tick difference rounds to a whole number of
  instructions (a count of ticks is off by less than one tick, under half an instruction).
  Where in its instruction a timer read lands depends on how QEMU split the code into
  translation blocks, so a reading can be one instruction early or late: the resolution is one
  instruction per reading.
  Shift 0 (the default) gave one tick per 40 instructions.
- What QEMU does not model: the cycle counter DWT_CYCCNT (reads 0 in QEMU 7.2), caches, wait
  states and pipelines, so it counts instructions, never cycles. Time on a target is an
  estimate: instructions x a cycles-per-instruction figure per core (:data:`CORES`, with its
  source) / the clock of the target profile.
- Per layer: the generated ``PREFIX.c`` calls ``EDGEOPT_LAYER_END(step)`` after each kernel,
  nothing unless a build defines it; this build defines it as a store of the timer's value
  (``edgeopt_stamps[step + 1] = TIMER0->VALUE``: counted in the layer it ends; on cnn-s the
  seven timestamps added 18 instructions in all, on each core). The harness reads the timer
  before the call and after the return: the inference is the difference of those two, and the
  layers plus the return sum to it within a reading's resolution. A second counter (dual
  timer 1 at clock / 256; on the M55 bits 8 to 39 of the System Counter) checks that no
  interval wrapped timer 0's 32 bits (2^32 ticks: 1.3 billion instructions, 1.0 on the M55).
- Outputs go out by Arm semihosting and are compared with the host build of the same library
  (:func:`~edgeopt.export.c.run_c`) byte for byte; a difference raises :class:`CBuildError`.

QEMU runs from an argument list in a temporary folder with a timeout; nothing is written
beside the library.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import InputError
from edgeopt.measure._cortexm_image import build_image
from edgeopt.measure._cortexm_image import parse_output

if TYPE_CHECKING:
    from edgeopt.export.c import CExport
    from edgeopt.export.c._program import Step

__all__ = [
    "CORES",
    "INSTALL_HINT",
    "MAX_SAMPLE_BYTES",
    "MEASURE_SAMPLES",
    "CortexMCore",
    "CortexMRun",
    "LayerInstructions",
    "check_cores",
    "fixed_inputs",
    "has_cortexm_tools",
    "measure_cores",
    "measure_cortexm",
    "require_cortexm_tools",
]

ARM_GCC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
INSTALL_HINT = (
    "measuring on emulated Cortex-M cores needs arm-none-eabi-gcc with newlib, qemu-system-arm "
    "and gcc (Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
    "qemu-system-arm gcc)."
)
#: 2^7 ns per instruction: more than two timer ticks, so ticks give whole instructions.
ICOUNT_SHIFT = 7
_WRAP = 1 << 32
#: Samples baked into an image, at most (as float32 or raw bytes).
MAX_SAMPLE_BYTES = 1 << 20
_COARSE_DIVIDER = 256

#: Cortex-M4 cycles per instruction for edgeopt's int8 loops (the base of the others).
_M4_CPI = 1.4
_M4_CPI_SOURCE = (
    "assumption from the Cortex-M4 TRM instruction timings (Arm DDI 0439B, section 3.3.1, "
    "Table 3-1: 1 cycle for ALU and multiply-accumulate instructions, 2 for a load, 1 for a "
    "load pipelined after another, 1 + 1..3 for a taken branch) applied to the inner loop gcc "
    "-O2 makes of an int8 multiply-accumulate (two byte loads, MLA, pointer updates, compare, "
    "branch: about 9 cycles for 6-7 instructions), zero-wait-state memory; unverified on "
    "hardware"
)


@dataclass(frozen=True)
class CortexMCore:
    """An emulated core: QEMU's board, the compiler flags, where the timers and memories are,
    and the cycles-per-instruction figure that turns instructions into an estimated time."""

    name: str
    machine: str  # qemu-system-arm -M
    flags: tuple[str, ...]  # arm-none-eabi-gcc
    timer_hz: int  # the clock of the counter read, as QEMU models it on that board
    timer_base: int  # CMSDK APB timer 0, or the SSE-300 System Counter's control frame
    dualtimer_base: int | None  # CMSDK APB dual timer; None with the System Counter
    code_origin: int  # 4 MiB of memory the code and constants are loaded into
    ram_origin: int  # 4 MiB of SRAM for data, arena and stack
    cpi: float  # estimated cycles per instruction
    cpi_basis: str  # the source in a few words
    cpi_source: str
    target: str | None  # the target profile whose clock gives a time, if any
    #: Where the core reads its reset vector table when that is not code_origin (a tightly
    #: coupled memory too small for the image).
    vector_origin: int | None = None
    #: The counter read is the SSE-300 System Counter (64 bits, counting up), not a CMSDK timer.
    has_system_counter: bool = False

    @property
    def timer_value_address(self) -> int:
        """The register the harness reads: CMSDK VALUE (+0x4) or the counter's CNTCV_LO (+0x8)."""
        return self.timer_base + (0x8 if self.has_system_counter else 0x4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "qemu_machine": self.machine,
            "flags": list(self.flags),
            "timer_hz": self.timer_hz,
            "cpi": self.cpi,
            "cpi_basis": self.cpi_basis,
            "cpi_source": self.cpi_source,
            "target": self.target,
        }


#: The cores measured: Cortex-M4F (mps2-an386), Cortex-M7 (mps2-an500), Cortex-M33 (mps2-an505),
#: Cortex-M55 (mps3-an547).
CORES: dict[str, CortexMCore] = {
    "cortex-m4": CortexMCore(
        name="cortex-m4",
        machine="mps2-an386",
        flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
        timer_hz=25_000_000,
        timer_base=0x40000000,
        dualtimer_base=0x40002000,
        code_origin=0x00000000,
        ram_origin=0x20000000,
        cpi=_M4_CPI,
        cpi_basis="assumed from the Cortex-M4 TRM's cycle timings",
        cpi_source=_M4_CPI_SOURCE,
        target="cortex-m4",
    ),
    "cortex-m7": CortexMCore(
        name="cortex-m7",
        machine="mps2-an500",
        flags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
        timer_hz=25_000_000,
        timer_base=0x40000000,
        dualtimer_base=0x40002000,
        code_origin=0x00000000,
        ram_origin=0x20000000,
        cpi=round(_M4_CPI * 3.40 / 5.01, 2),
        cpi_basis="the Cortex-M4 figure x CoreMark/MHz 3.40 / 5.01",
        cpi_source=(
            "the Cortex-M4 figure scaled by published CoreMark/MHz, Cortex-M4 3.40 / Cortex-M7 "
            "5.01 (Arm's Cortex-M figures, as tabulated in D. Ibrahim, 'ARM-Based "
            "Microcontroller Projects Using MBED', 2019, Table 3.2): the dual-issue M7 does "
            "about 1.47x the work per cycle; assumes the same instruction mix; unverified on "
            "hardware"
        ),
        target="cortex-m7",
    ),
    "cortex-m33": CortexMCore(
        name="cortex-m33",
        machine="mps2-an505",
        flags=("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
        timer_hz=20_000_000,
        timer_base=0x50000000,
        dualtimer_base=0x50002000,
        code_origin=0x10000000,
        ram_origin=0x38000000,
        cpi=round(_M4_CPI * 3.40 / 4.02, 2),
        cpi_basis="the Cortex-M4 figure x CoreMark/MHz 3.40 / 4.02",
        cpi_source=(
            "the Cortex-M4 figure scaled by CoreMark/MHz, Cortex-M4 3.40 / Cortex-M33 4.02 "
            "(Arm's Cortex-M33 product page figure, not re-checked here); assumes the same "
            "instruction mix; unverified on hardware"
        ),
        target=None,
    ),
    # QEMU mps3-an547 (hw/arm/mps2-tz.c, mps3tz_an547_class_init; hw/arm/armsse.c, the SSE-300;
    # Arm AN547 and the Corstone SSE-300 TRM, Arm 101773): the M55 starts Secure with its vector
    # table at 0x0 (init-svtor 0, the 512 KiB ITCM), too small for an image, so the table sits
    # there and the code in the QSPI flash's Secure alias 0x38000000 (8 MiB, ROM to the core);
    # data in the SSE-300's 4 MiB SRAM, Secure alias 0x31000000. The SSE-300 has no CMSDK timer
    # on its main clock (timers 0-3 are System Timers, the only CMSDK timer runs at 32 kHz): the
    # count is the System Counter's, control frame 0x58100000 (Secure only), CNTCV counting up
    # at MAINCLK, SYSCLK 32 MHz on an547 (1 instruction = 4.096 ticks at shift 7).
    "cortex-m55": CortexMCore(
        name="cortex-m55",
        machine="mps3-an547",
        flags=("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
        timer_hz=32_000_000,
        timer_base=0x58100000,
        dualtimer_base=None,
        code_origin=0x38000000,
        ram_origin=0x31000000,
        cpi=round(_M4_CPI * 3.40 / 4.2, 2),
        cpi_basis="the Cortex-M4 figure x CoreMark/MHz 3.40 / 4.2",
        cpi_source=(
            "the Cortex-M4 figure scaled by CoreMark/MHz, Cortex-M4 3.40 / Cortex-M55 4.2 "
            "(Arm's self-reported Cortex-M55 figure as WikiChip's Cortex-M55 page lists it, not "
            "re-checked on Arm's page here); assumes the same instruction mix (MVE vector code "
            "would change it); unverified on hardware"
        ),
        target=None,
        vector_origin=0x00000000,
        has_system_counter=True,
    ),
}


@dataclass(frozen=True)
class LayerInstructions:
    """One kernel call of the schedule and the instructions it executed."""

    index: int
    node: str  # the ONNX node as the generated C comment names it (allow-listed characters)
    function: str  # the edgeopt kernel
    macs: int | None  # multiply-accumulates of a convolution / fully connected layer
    instructions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "node": self.node,
            "function": self.function,
            "macs": self.macs,
            "instructions": self.instructions,
        }


@dataclass(frozen=True)
class CortexMRun:
    """Instructions the library executed on an emulated core, per inference and per layer.

    ``instructions`` holds one count per sample (whole ``PREFIX_run`` calls); ``layers`` the
    first sample's counts per kernel call, ``return_instructions`` what follows the last layer
    up to the return; ``sum(layers) + return_instructions`` equals ``instructions[0]`` within
    ``resolution_instructions`` per reading (one reading per layer, and the return).
    """

    core: CortexMCore
    samples: int
    instructions: tuple[int, ...]
    layers: tuple[LayerInstructions, ...]
    return_instructions: int
    resolution_instructions: int
    icount_shift: int
    compiler: str
    qemu: str
    clock_hz: int | None  # of ``core.target``, for the time estimate
    inputs: str  # where the samples came from
    #: The emulated build's outputs, ``(samples, output size)`` in the output type: equal,
    #: byte for byte, to the host build's.
    outputs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False, compare=False)

    @property
    def instructions_per_inference(self) -> int:
        """The largest count over the samples (int8 kernels barely depend on the data)."""
        return max(self.instructions)

    @property
    def estimated_cycles(self) -> float:
        return self.instructions_per_inference * self.core.cpi

    @property
    def estimated_ms(self) -> float | None:
        if self.clock_hz is None:
            return None
        return self.estimated_cycles / self.clock_hz * 1e3

    def by_function(self) -> dict[str, int]:
        """Instructions of the first sample summed by kernel (layer kind)."""
        totals: dict[str, int] = defaultdict(int)
        for layer in self.layers:
            totals[layer.function] += layer.instructions
        return dict(totals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "core": self.core.to_dict(),
            "samples": self.samples,
            "inputs": self.inputs,
            "instructions_per_inference": self.instructions_per_inference,
            "instructions": list(self.instructions),
            "layers": [layer.to_dict() for layer in self.layers],
            "return_instructions": self.return_instructions,
            "by_function": self.by_function(),
            "resolution_instructions": self.resolution_instructions,
            "method": (
                f"measured (instructions, emulated): QEMU {self.core.machine} -icount "
                f"shift={self.icount_shift}, CMSDK timer 0; outputs equal to the host build"
            ),
            "estimated_cycles": self.estimated_cycles,
            "estimated_ms": self.estimated_ms,
            "clock_hz": self.clock_hz,
            "estimate": (
                f"estimated: instructions x {self.core.cpi} cycles per instruction "
                f"({self.core.cpi_source}) / the clock of target {self.core.target}"
            ),
            "compiler": self.compiler,
            "qemu": self.qemu,
        }


def _has_newlib() -> bool:
    gcc = shutil.which(ARM_GCC)
    if gcc is None:
        return False
    done = subprocess.run(
        [gcc, "-mcpu=cortex-m4", "-mthumb", "-print-file-name=libc.a"],
        capture_output=True,
        text=True,
        check=False,
    )
    return Path(done.stdout.strip()).is_absolute() and Path(done.stdout.strip()).is_file()


def has_cortexm_tools() -> bool:
    """Whether arm-none-eabi-gcc with newlib, qemu-system-arm and the host gcc are installed.

    Example:
        >>> isinstance(has_cortexm_tools(), bool)
        True
    """
    from edgeopt.export.c import has_compiler

    return shutil.which(QEMU) is not None and has_compiler("gcc") and _has_newlib()


def require_cortexm_tools(cores: str | list[str] | tuple[str, ...]) -> tuple[CortexMCore, ...]:
    """The cores named (a comma list), once the tools to build and emulate them are there.

    Args:
        cores: core names from :data:`CORES` (``cortex-m4,cortex-m7``).

    Returns:
        The cores, in the order given.

    Raises:
        InputError: an unknown core, or a tool missing (the sentence says what to install).

    Example:
        >>> try:
        ...     require_cortexm_tools("cortex-m99")
        ... except InputError as error:
        ...     print(str(error)[:31])
        unknown core 'cortex-m99' for -
    """
    chosen = check_cores(cores)
    if not has_cortexm_tools():
        raise InputError(INSTALL_HINT)
    return chosen


def check_cores(cores: str | list[str] | tuple[str, ...]) -> tuple[CortexMCore, ...]:
    """The cores named (a comma list), refusing an unknown name; no tool is looked for.

    Example:
        >>> [core.machine for core in check_cores("cortex-m4,cortex-m33")]
        ['mps2-an386', 'mps2-an505']
    """
    names = cores.split(",") if isinstance(cores, str) else list(cores)
    chosen = []
    for name in (n.strip() for n in names):
        if name not in CORES:
            known = ", ".join(CORES)
            raise InputError(f"unknown core {name!r} for --measure; known: {known}.")
        chosen.append(CORES[name])
    return tuple(chosen)


def step_macs(step: Step) -> int | None:
    """Multiply-accumulates of a convolution or fully connected kernel call, else None."""
    p = step.params
    if {"out_channels", "out_height", "out_width", "kernel_height"} <= p.keys():
        per_output = (p["in_channels"] // max(p.get("groups", 1), 1)) * p["kernel_height"]
        return int(p["out_channels"] * p["out_height"] * p["out_width"] * per_output) * int(
            p["kernel_width"]
        )
    if {"in_features", "out_features"} <= p.keys():
        return int(p["in_features"] * p["out_features"])
    return None


def _version(tool: str) -> str:
    done = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout.splitlines() or [Path(tool).name])[0].strip()


def _instructions(ticks: int, core: CortexMCore, shift: int) -> int:
    return round(ticks * (1e9 / core.timer_hz) / (1 << shift))


def qemu_command(qemu: str, core: CortexMCore, image: Path, icount_shift: int) -> list[str]:
    """The QEMU command line that runs a bare-metal ``image`` on ``core``'s board, counting
    instructions (``-icount``), with semihosting's console written to ``semihosting.txt`` in the
    working folder (QEMU sends it to stdout or stderr depending on what they are)."""
    return [
        qemu,
        "-M",
        core.machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-chardev",
        "file,id=edgeopt,path=semihosting.txt",
        "-semihosting-config",
        "enable=on,target=native,chardev=edgeopt",
        "-icount",
        f"shift={icount_shift},sleep=off",
        "-kernel",
        str(image),
    ]


def measure_cortexm(
    export: CExport,
    inputs: np.ndarray,
    *,
    core: str = "cortex-m4",
    inputs_source: str = "given samples",
    timeout_s: float = 600.0,
    icount_shift: int = ICOUNT_SHIFT,
) -> CortexMRun:
    """Run the exported library on an emulated Cortex-M core and count its instructions.

    Args:
        export: what :func:`~edgeopt.export.c.export_c` wrote.
        inputs: samples ``(N, *input_shape)`` (float, or raw values for a raw-input library),
            baked into the image: keep N small (a few).
        core: a name from :data:`CORES`.
        inputs_source: where the samples came from, for the record.
        timeout_s: QEMU is stopped after this many seconds.
        icount_shift: QEMU's ``-icount shift``; 7 and up count single instructions.

    Returns:
        Instructions per inference per sample and per layer, measured on the emulated core;
        the estimated cycles and time come from the core's cycles per instruction.

    Raises:
        InputError: an unknown core, a missing tool, samples of the wrong shape, not finite,
            or over :data:`MAX_SAMPLE_BYTES`.
        CBuildError: the image does not build, faults, times out, overflows the timer, or its
            outputs differ from the host build's (a bug).

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.data import load_data
        >>> from edgeopt.export.c import export_c
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> q = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> x = load_data("digits").arrays("test")[0][:2]
        >>> if has_cortexm_tools():
        ...     run = measure_cortexm(export_c(work / "int8.onnx", work / "c"), x)
        ...     layers = sum(layer.instructions for layer in run.layers)
        ...     readings = len(run.layers) + 1
        ...     assert abs(layers + run.return_instructions - run.instructions[0]) <= readings
    """
    from edgeopt.export.c import CBuildError
    from edgeopt.export.c.check import c_samples
    from edgeopt.export.c.check import run_c
    from edgeopt.target import Target

    (chosen,) = require_cortexm_tools([core])
    program = export.program
    if program is None:
        raise InputError("measure_cortexm needs the CExport that export_c returned.")
    if not 0 <= icount_shift <= 10:
        raise InputError(f"icount_shift must be 0 to 10 (QEMU's range), got {icount_shift}.")
    x = c_samples(export, inputs)
    if not np.isfinite(x).all():
        raise InputError("measure_cortexm: the samples must be finite numbers (no NaN or inf).")
    if x.nbytes > MAX_SAMPLE_BYTES:
        raise InputError(
            f"measure_cortexm: {len(x)} samples take {x.nbytes:,} bytes; the image holds at most "
            f"{MAX_SAMPLE_BYTES:,} (its 4 MiB also hold the weights): give fewer samples."
        )
    host = run_c(export, x)
    compiler = shutil.which(ARM_GCC)
    qemu = shutil.which(QEMU)
    assert compiler is not None and qemu is not None
    with tempfile.TemporaryDirectory(prefix="edgeopt-cortexm-") as folder:
        scratch = Path(folder)
        image = build_image(export, chosen, x, scratch, compiler)
        command = qemu_command(qemu, chosen, image, icount_shift)
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                check=False,
                cwd=scratch,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise CBuildError(
                f"QEMU {chosen.machine} did not finish in {timeout_s:g} s; measure fewer samples "
                "or a smaller model."
            ) from None
        console = scratch / "semihosting.txt"
        text = console.read_text(errors="replace") if console.is_file() else ""
    if done.returncode != 0 and "F 1" not in text:
        detail = " ".join((done.stderr or done.stdout).split())[-400:]
        raise CBuildError(f"QEMU {chosen.machine} failed (exit {done.returncode}): {detail}")
    records = parse_output(text, len(x))
    dtype = np.dtype(host.dtype)
    outputs = []
    counts: list[int] = []
    per_layer: list[int] = []
    tail = 0
    tick_ns = 1e9 / chosen.timer_hz
    for index, (coarse, stamps, output) in enumerate(records):
        got = np.frombuffer(output, dtype=dtype)
        if got.shape != host[index].shape or got.tobytes() != host[index].tobytes():
            raise CBuildError(
                f"the {chosen.name} build's outputs differ from the host build's on sample "
                f"{index} (a bug in edgeopt or the compiler); please report it."
            )
        outputs.append(got)
        ticks = [(stamps[i] - stamps[i + 1]) % _WRAP for i in range(len(stamps) - 1)]
        coarse_ns = ((coarse[0] - coarse[1]) % _WRAP) * _COARSE_DIVIDER * tick_ns
        if abs(sum(ticks) * tick_ns - coarse_ns) > 2 * _COARSE_DIVIDER * tick_ns:
            raise CBuildError(
                f"an interval on {chosen.name} ran past the 32-bit timer's wrap (2^32 ticks); "
                "the count would be wrong."
            )
        steps = [_instructions(t, chosen, icount_shift) for t in ticks]
        # the intervals' ticks telescope: their sum is the inference's, converted once
        counts.append(_instructions(sum(ticks), chosen, icount_shift))
        if index == 0:
            per_layer, tail = steps[:-1], steps[-1]
    from edgeopt.export.c._emit import c_comment

    layers = tuple(
        LayerInstructions(
            index=i,
            node=c_comment(step.node),
            function=step.function,
            macs=step_macs(step),
            instructions=per_layer[i],
        )
        for i, step in enumerate(program.steps)
    )
    insn_ns = float(1 << icount_shift)
    resolution = 1 if insn_ns > 2 * tick_ns else math.ceil(tick_ns / insn_ns) + 1
    clock = Target.from_name(chosen.target).clock_hz if chosen.target else None
    return CortexMRun(
        core=chosen,
        samples=len(x),
        instructions=tuple(counts),
        layers=layers,
        return_instructions=tail,
        resolution_instructions=resolution,
        icount_shift=icount_shift,
        compiler=_version(compiler),
        qemu=_version(qemu),
        clock_hz=int(clock) if clock else None,
        inputs=inputs_source,
        outputs=np.stack(outputs),
    )


#: Test samples baked into an image by :func:`measure_cores`: the count barely depends on them.
MEASURE_SAMPLES = 4


def fixed_inputs(export: CExport, *, samples: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded random inputs that span the library's input range, where no data is given.

    Quantized values drawn uniformly over the input type, as floats the library quantizes
    back to the same values (raw values as they are, for a raw-input library).

    Example:
        >>> from types import SimpleNamespace
        >>> stub = SimpleNamespace(input_shape=(1, 2, 2), input_type="uint8", has_raw_input=False,
        ...                        input_scale=0.5, input_zero_point=128)
        >>> fixed_inputs(stub).shape
        (2, 1, 2, 2)
    """
    rng = np.random.default_rng(seed)
    low, high = (0, 256) if export.input_type == "uint8" else (-128, 128)
    q = rng.integers(low, high, size=(samples, *export.input_shape))
    if export.has_raw_input:
        return q.astype(export.input_type)
    assert export.input_scale is not None and export.input_zero_point is not None
    scale = np.float32(export.input_scale)
    values: np.ndarray = ((q - export.input_zero_point).astype(np.float32) * scale).astype(
        np.float32
    )
    return values


def measure_cores(
    export: CExport,
    cores: tuple[CortexMCore, ...],
    *,
    inputs: np.ndarray | None,
    data: str | None,
) -> tuple[CortexMRun, ...]:
    """Count the library's instructions on each core: on the first :data:`MEASURE_SAMPLES`
    of ``inputs`` (the test split of ``data``), or on :func:`fixed_inputs` without them.

    Args:
        export: what :func:`~edgeopt.export.c.export_c` wrote.
        cores: from :func:`require_cortexm_tools`.
        inputs: test samples (float, or raw values for a raw-input library), or None.
        data: the data spec the samples came from, for the record.

    Returns:
        One run per core, in order.

    Raises:
        CBuildError: see :func:`measure_cortexm`.

    Example:
        >>> measure_cores(None, (), inputs=None, data=None)
        ()
    """
    if not cores:
        return ()
    if inputs is None:
        x, source = fixed_inputs(export), "2 seeded random inputs (no --data)"
    else:
        x = np.asarray(inputs)[:MEASURE_SAMPLES]
        source = f"the first {len(x)} test samples of {data}"
    return tuple(measure_cortexm(export, x, core=core.name, inputs_source=source) for core in cores)
