"""Build an exported C library with a real compiler: section sizes, and parity with ONNX Runtime.

``measure_c`` compiles each source file to an object and reads its sections with binutils'
``size``: flash is code + read-only data (+ initialized data, whose values are stored in flash),
RAM is initialized data + zero-initialized data (the arena). ``check_c`` compiles the library
with a small harness, runs it on samples and compares every output, and every int8 tensor of
the schedule, with ONNX Runtime running the same QDQ file on a path that computes exact integers
on this host (:mod:`edgeopt.measure.int8`). Nothing is written beside the
library: the builds happen in a temporary folder.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from dataclasses import field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.errors import InputError
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Ref
from edgeopt.export.c.generate import CExport

if TYPE_CHECKING:
    from edgeopt.measure.int8 import Int8Arithmetic

__all__ = [
    "CORTEX_M4_FLAGS",
    "STRICT_FLAGS",
    "CBuildError",
    "CBuildSize",
    "CParity",
    "check_c",
    "has_compiler",
    "measure_c",
    "require_exact",
    "run_c",
]

#: The flags every generated file must compile cleanly with.
STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")
#: Cortex-M4F with its single-precision FPU (Debian's gcc-arm-none-eabi).
CORTEX_M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
_HARNESS = "edgeopt_check.c"


class CBuildError(EdgeoptError):
    """The generated C code did not compile, run or match ONNX Runtime (a bug in edgeopt)."""


@dataclass(frozen=True)
class CBuildSize:
    """Section sizes of the compiled library (all object files together), in bytes."""

    compiler: str
    flags: tuple[str, ...]
    text_bytes: int
    rodata_bytes: int
    data_bytes: int
    bss_bytes: int
    objects: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def flash_bytes(self) -> int:
        return self.text_bytes + self.rodata_bytes + self.data_bytes

    @property
    def ram_bytes(self) -> int:
        return self.data_bytes + self.bss_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "compiler": self.compiler,
            "flags": list(self.flags),
            "text_bytes": self.text_bytes,
            "rodata_bytes": self.rodata_bytes,
            "data_bytes": self.data_bytes,
            "bss_bytes": self.bss_bytes,
            "flash_bytes": self.flash_bytes,
            "ram_bytes": self.ram_bytes,
            "objects": self.objects,
            "method": "measured (size -A on the object files)",
        }


@dataclass(frozen=True)
class CParity:
    """The C library against ONNX Runtime on the same samples.

    ``max_output_steps`` is the largest output difference in quantization steps: LSBs of a
    quantized output, or accumulator steps (input scale x weight scale) of float logits from a
    fully connected layer; None for a float Softmax output. ``tensor_lsb`` is the largest
    difference of every int8 tensor of the schedule, in LSBs, by ONNX tensor name.
    """

    samples: int
    top1_agreement: float
    max_output_diff: float
    max_output_steps: float | None
    max_tensor_lsb: int
    tensor_lsb: dict[str, int]
    compiler: str
    #: How ONNX Runtime computed the reference: the file as shipped, or its rewritten
    #: copy where ONNX Runtime would not compute the integers exactly here.
    arithmetic: Int8Arithmetic | None = None

    @property
    def is_exact(self) -> bool:
        """Same top-1 on every sample and every int8 tensor equal (0 LSB)."""
        return self.top1_agreement == 1.0 and self.max_tensor_lsb == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "top1_agreement": self.top1_agreement,
            "max_output_diff": self.max_output_diff,
            "max_output_steps": self.max_output_steps,
            "max_tensor_lsb": self.max_tensor_lsb,
            "tensor_lsb": self.tensor_lsb,
            "compiler": self.compiler,
            "reference": "ONNX Runtime, CPU provider, all graph optimizations (int8 kernels)",
            "int8": self.arithmetic.to_dict() if self.arithmetic is not None else None,
        }


def has_compiler(compiler: str = "gcc") -> bool:
    """Whether the C compiler and binutils' ``size`` of the same prefix are on PATH.

    Example:
        >>> has_compiler("no-such-cc")
        False
    """
    return shutil.which(compiler) is not None and shutil.which(_size_tool(compiler)) is not None


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise InputError(
            f"{tool} was not found on PATH; install it (Debian: apt-get install gcc, or "
            "gcc-arm-none-eabi for Cortex-M) to build the C library."
        )
    return path


def _run(command: list[str], *, cwd: Path | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[:600]
        raise CBuildError(f"{Path(command[0]).name} failed on the generated C code: {detail}")


def _library_sources(export: CExport) -> list[Path]:
    p = export.prefix
    return [export.out_dir / f"{p}.c", export.out_dir / f"{p}_weights.c"] + [
        export.out_dir / "edgeopt_kernels.c"
    ]


def _size_tool(compiler: str) -> str:
    name = Path(compiler).name
    return name[: -len("gcc")] + "size" if name.endswith("gcc") else "size"


def measure_c(
    export: CExport,
    *,
    compiler: str = "gcc",
    flags: tuple[str, ...] = (),
) -> CBuildSize:
    """Compile the library to object files and read their section sizes.

    Args:
        export: what :func:`export_c` wrote.
        compiler: the C compiler (``gcc``, ``arm-none-eabi-gcc``); binutils' ``size`` of the
            same prefix reads the objects.
        flags: added after :data:`STRICT_FLAGS` (e.g. :data:`CORTEX_M4_FLAGS`).

    Returns:
        ``.text``, ``.rodata``, ``.data`` and ``.bss`` bytes summed over the objects (flash:
        text + rodata + data; RAM: data + bss), and per object.

    Raises:
        InputError: the compiler or ``size`` is not installed.
        CBuildError: the code does not compile cleanly (a bug).

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.export.c.generate import export_c
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> q = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> exported = export_c(work / "int8.onnx", work / "c")
        >>> size = measure_c(exported)
        >>> size.bss_bytes == exported.arena_bytes, size.flash_bytes > exported.weights_bytes
        (True, True)
    """
    cc = _require(compiler)
    size = _require(_size_tool(compiler))
    totals = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    objects: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeopt-size-") as scratch:
        for source in _library_sources(export):
            obj = Path(scratch) / (source.stem + ".o")
            _run([cc, *STRICT_FLAGS, *flags, "-c", str(source), "-o", str(obj)])
            listing = subprocess.run(
                [size, "-A", str(obj)], capture_output=True, text=True, check=True
            ).stdout
            sections = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
            for line in listing.splitlines():
                parts = line.split()
                if len(parts) < 2 or not parts[0].startswith(".") or not parts[1].isdigit():
                    continue
                kind = parts[0].lstrip(".").split(".")[0]
                if parts[0].startswith(".data.rel.ro"):
                    kind = "rodata"  # const data with pointers, in position-independent builds
                if kind in sections:
                    sections[kind] += int(parts[1])
            objects[source.name] = sections
            for key, value in sections.items():
                totals[key] += value
    return CBuildSize(
        compiler=Path(cc).name,
        flags=(*STRICT_FLAGS, *flags),
        text_bytes=totals["text"],
        rodata_bytes=totals["rodata"],
        data_bytes=totals["data"],
        bss_bytes=totals["bss"],
        objects=objects,
    )


def _build_harness(export: CExport, scratch: Path, compiler: str) -> Path:
    cc = _require(compiler)
    p, u = export.prefix, export.prefix.upper()
    harness = scratch / _HARNESS
    harness.write_text(resources.files("edgeopt.export.c").joinpath(_HARNESS).read_text())
    binary = scratch / "check"
    defines = [
        "-DEDGEOPT_TRACE",
        f"-DEDGEOPT_RUN={p}_run",
        f"-DEDGEOPT_INPUT_IS_RAW={u}_INPUT_IS_RAW",
        f"-DEDGEOPT_INPUT_T={p}_input_t",
        f"-DEDGEOPT_OUTPUT_T={p}_output_t",
        f"-DEDGEOPT_INPUT_SIZE={u}_INPUT_SIZE",
        f"-DEDGEOPT_OUTPUT_SIZE={u}_OUTPUT_SIZE",
    ]
    if not export.has_raw_input:  # raw input has no quantization: samples go in as they are
        defines.append(f"-DEDGEOPT_QUANTIZE={p}_quantize_input")
    sources = [str(s) for s in _library_sources(export)]
    include = ["-I", str(export.out_dir), "-include", str(export.out_dir / f"{p}.h")]
    _run([cc, *STRICT_FLAGS, *defines, *include, *sources, str(harness), "-o", str(binary)])
    return binary


def _run_harness(
    export: CExport, x: np.ndarray, scratch: Path, compiler: str, *, is_traced: bool
) -> np.ndarray:
    """Build the host harness in ``scratch``, run it on the samples ``x`` (float32, or the raw
    values in the input type) and return the outputs as the library wrote them."""
    binary = _build_harness(export, scratch, compiler)
    (scratch / "inputs.bin").write_bytes(x.astype(x.dtype.newbyteorder("<")).tobytes())
    done = subprocess.run(
        [str(binary), "inputs.bin", "outputs.bin", *(["trace.bin"] if is_traced else [])],
        capture_output=True,
        text=True,
        check=False,
        cwd=scratch,
    )
    if done.returncode != 0:
        raise CBuildError(f"the C harness failed (exit {done.returncode}): {done.stderr[:300]}")
    return np.frombuffer((scratch / "outputs.bin").read_bytes(), dtype=output_dtype(export))


def output_dtype(export: CExport) -> str:
    """The numpy dtype (little-endian) of the library's output values."""
    return {"float32": "<f4", "uint8": "u1", "int8": "i1"}[export.output_type]


def run_c(export: CExport, inputs: np.ndarray, *, compiler: str = "gcc") -> np.ndarray:
    """Compile the library with the host harness and return its outputs on ``inputs``.

    Args:
        export: what :func:`export_c` wrote.
        inputs: samples ``(N, *input_shape)``: float, or raw values for a raw-input library.
        compiler: the host C compiler.

    Returns:
        The outputs as the library wrote them, shape ``(N, output size)``, in the output type.

    Raises:
        InputError: samples of the wrong shape, or no compiler.
        CBuildError: the code does not compile or the harness fails (a bug).

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.data import load_data
        >>> from edgeopt.export.c.generate import export_c
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> q = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> x = load_data("digits").arrays("test")[0][:3]
        >>> run_c(export_c(work / "int8.onnx", work / "c"), x).shape
        (3, 10)
    """
    x = c_samples(export, inputs)
    with tempfile.TemporaryDirectory(prefix="edgeopt-run-") as folder:
        got = _run_harness(export, x, Path(folder), compiler, is_traced=False)
    return got.reshape(len(x), -1).copy()


def c_samples(export: CExport, inputs: np.ndarray) -> np.ndarray:
    """``inputs`` as the harnesses take them: float32, or the raw input type (checked)."""
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(export.input_shape):
        expected = "x".join(map(str, export.input_shape))
        raise InputError(f"samples of shape {expected} expected, got {x.shape}.")
    if export.has_raw_input:
        x = _raw_samples(np.asarray(inputs), export.input_type)
    return x


def _read_trace(path: Path, samples: int) -> dict[int, list[bytes]]:
    blob = path.read_bytes()
    records: dict[int, list[bytes]] = {}
    position = 0
    while position < len(blob):
        step, nbytes = np.frombuffer(blob, dtype="<i4", count=2, offset=position)
        position += 8
        records.setdefault(int(step), []).append(blob[position : position + int(nbytes)])
        position += int(nbytes)
    return {step: data for step, data in records.items() if len(data) == samples}


def _reference(
    onnx_path: Path, x: np.ndarray, tensors: list[str], *, path: str
) -> tuple[dict[str, np.ndarray], Int8Arithmetic | None]:
    """ONNX Runtime's outputs (the graph's, then ``tensors``) for every sample, fed as ``x``'s
    dtype (float32, or the raw uint8 / int8 of a folded model), computed on the int8 path
    ``path`` (:func:`edgeopt.measure.int8.make_exact_session`), and how they were computed."""
    from edgeopt.measure.int8 import make_exact_session

    session = make_exact_session(onnx_path, path=path, tensors=tensors)
    names = [o.name for o in session.get_outputs()]
    feed = session.get_inputs()[0]
    batch = feed.shape[0] if feed.shape else None
    chunks = [x] if not isinstance(batch, int) else [x[i : i + batch] for i in range(len(x))]
    results = [session.run(names, {feed.name: chunk}) for chunk in chunks]
    outputs = {
        name: np.concatenate([np.asarray(r[i]) for r in results]) for i, name in enumerate(names)
    }
    return outputs, session.arithmetic


def _raw_samples(inputs: np.ndarray, dtype: str) -> np.ndarray:
    """Raw samples as ``dtype``, refused where a value would change (a float or out of range)."""
    info = np.iinfo(dtype)
    values = inputs.astype(np.float64)
    if not np.all(np.isfinite(values) & (values == np.round(values))) or (
        values.size and (values.min() < info.min or values.max() > info.max)
    ):
        raise InputError(
            f"check_c: the library takes raw {dtype} input, so the samples must be integers "
            f"from {info.min} to {info.max} (the dataset's raw values, not normalized ones)."
        )
    return inputs.astype(dtype)


def check_c(
    export: CExport,
    inputs: np.ndarray,
    *,
    compiler: str = "gcc",
    path: str = "auto",
) -> CParity:
    """Compile the exported library, run it on ``inputs`` and compare it with ONNX Runtime.

    Args:
        export: what :func:`export_c` wrote (the schedule is read from it).
        inputs: samples, shape ``(N, *input_shape)``: float (e.g. a dataset's normalized test
            split), or for a library with raw input (``export.has_raw_input``) the raw values
            (``Dataset.raw["test"]``), integers in the range of ``export.input_type``; the
            library and ONNX Runtime are both fed the same values in that type.
        compiler: the host C compiler.
        path: how ONNX Runtime computes the int8 reference: ``auto`` (the file as shipped
            where ONNX Runtime computes it exactly here, its rewritten copy where not), or
            a forced ``as-shipped`` / ``rewritten``
            (:mod:`edgeopt.measure.int8`).

    Returns:
        Samples, top-1 agreement, the largest output difference (also in quantization steps)
        and the largest difference of every int8 tensor, in LSBs.

    Raises:
        InputError: inputs of the wrong shape, raw inputs that are not integers of the input
            type, or no compiler.
        CBuildError: the code does not compile or the harness fails (a bug).

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.data import load_data
        >>> from edgeopt.export.c.generate import export_c
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> q = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> x = load_data("digits").arrays("test")[0][:50]
        >>> parity = check_c(export_c(work / "int8.onnx", work / "c"), x)
        >>> parity.samples, parity.top1_agreement, parity.max_tensor_lsb
        (50, 1.0, 0)
    """
    program = export.program
    if program is None:
        raise InputError("check_c needs the CExport that export_c returned.")
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(export.input_shape):
        expected = "x".join(map(str, export.input_shape))
        raise InputError(f"check_c: samples of shape {expected} expected, got {x.shape}.")
    if export.has_raw_input:
        x = _raw_samples(np.asarray(inputs), export.input_type)
    samples = len(x)
    # the last step writing each int8 buffer holds its complete value
    writers: dict[str, int] = {}
    for index, step in enumerate(program.steps):
        if not isinstance(step.output, Ref) and program.buffers[step.output].dtype == "int8":
            writers[step.output] = index
    with tempfile.TemporaryDirectory(prefix="edgeopt-check-") as folder:
        scratch = Path(folder)
        got = _run_harness(export, x, scratch, compiler, is_traced=True)
        trace = _read_trace(scratch / "trace.bin", samples)
    got = got.reshape(samples, -1).astype(np.float64)
    step_size: np.ndarray | float | None = None
    if export.output_type != "float32":  # ONNX Runtime gives the dequantized values
        assert export.output_scale is not None and export.output_zero_point is not None
        scale = np.float32(export.output_scale)
        got = ((got - export.output_zero_point).astype(np.float32) * scale).astype(np.float64)
        step_size = float(scale)
    elif program.steps[-1].function == "edgeopt_fully_connected_f32":
        scales = next(a.values for a in program.steps[-1].arrays if a.name.endswith("_scale"))
        step_size = scales.astype(np.float64)[None, :]
    reference, arithmetic = _reference(export.onnx_path, x, list(writers), path=path)
    want = reference[program.output_name].reshape(samples, -1).astype(np.float64)
    diff = np.abs(got - want)
    steps = None if step_size is None else float((diff / step_size).max(initial=0.0))
    tensor_lsb: dict[str, int] = {}
    for name, index in writers.items():
        if index not in trace or name not in reference:
            continue
        buffer = program.buffers[name]
        c_values = np.frombuffer(b"".join(trace[index]), dtype=np.int8).astype(np.int64)
        if buffer.onnx_type == UINT8:
            c_values = c_values + 128
        ort_values = reference[name].astype(np.int64).ravel()
        if c_values.size == ort_values.size:
            tensor_lsb[name] = int(np.abs(c_values - ort_values).max())
    agree = float(np.mean(got.argmax(axis=1) == want.argmax(axis=1))) if got.shape[1] > 1 else 1.0
    return CParity(
        samples=samples,
        top1_agreement=agree,
        max_output_diff=float(diff.max()) if diff.size else 0.0,
        max_output_steps=steps,
        max_tensor_lsb=max(tensor_lsb.values(), default=0),
        tensor_lsb=tensor_lsb,
        compiler=Path(_require(compiler)).name,
        arithmetic=arithmetic,
    )


def require_exact(parity: CParity, *, library: str | Path, data: str) -> str | None:
    """Judge a parity check: the C library must compute the exact integers on every sample.

    Kept apart from :func:`check_c` so a caller can show the parity before the verdict.

    Args:
        parity: what :func:`check_c` returned.
        library: the library's folder, as the caller named it.
        data: the data spec the samples came from.

    Returns:
        None where the library is exact (same top-1 on every sample, 0 LSB on every int8
        tensor), or a sentence saying it was not checked where ONNX Runtime itself does not
        compute the file's integers exactly on this host (the reference is not the integers).

    Raises:
        CBuildError: the library differs from the exact integers (a bug in edgeopt).

    Example:
        >>> exact = CParity(10, 1.0, 0.0, 0.0, 0, {}, "gcc")
        >>> require_exact(exact, library="c", data="digits") is None
        True
    """
    if parity.is_exact:
        return None
    int8 = parity.arithmetic
    if int8 is not None and not int8.is_exact:
        return (
            "not checked: ONNX Runtime does not compute this file's integers exactly on this "
            f"host ({int8.reason})."
        )
    raise CBuildError(
        f"{library}: the C library differs from the exact integers on {data} (top-1 "
        f"agreement {parity.top1_agreement:.2%}, {parity.max_tensor_lsb} LSB); please "
        "report it."
    )
