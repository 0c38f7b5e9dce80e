"""``export_c``: write an int8 QDQ ONNX model as a self-contained C99 library.

The folder holds ``PREFIX.h`` (one entry point, the input/output quantization, shapes, arena
size), ``PREFIX.c`` (the schedule: one kernel call per layer into one static arena),
``PREFIX_weights.c`` (const int8 weights, int32 biases and fixed-point multipliers) and the
portable kernels ``edgeopt_kernels.c`` / ``.h``. The folder appears complete or not at all: it
is written beside ``out_dir`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from dataclasses import field
from importlib import resources
from pathlib import Path
from typing import Any

from edgeopt._io import check_writable
from edgeopt._io import scratch_prefix
from edgeopt._io import sweep_scratch
from edgeopt.errors import InputError
from edgeopt.export.c._arena import ArenaPlan
from edgeopt.export.c._arena import plan_arena
from edgeopt.export.c._emit import c_comment
from edgeopt.export.c._emit import emit
from edgeopt.export.c._lower import lower
from edgeopt.export.c._program import UINT8
from edgeopt.export.c._program import Program
from edgeopt.models import read_onnx
from edgeopt.target import Target

__all__ = ["KERNEL_FILES", "CExport", "export_c"]

KERNEL_FILES = ("edgeopt_kernels.h", "edgeopt_kernels.c")
_PREFIX = re.compile(r"[a-z_][a-z0-9_]*")


def _type_name(buffer: Any) -> str:
    if buffer.dtype == "float32":
        return "float32"
    return "uint8" if buffer.onnx_type == UINT8 else "int8"


@dataclass(frozen=True)
class CExport:
    """What :func:`export_c` wrote: the files, the arena, the weights and the edges."""

    onnx_path: Path
    out_dir: Path
    prefix: str
    files: tuple[Path, ...]
    arena_bytes: int
    peak_ram_bytes: int  # the liveness peak of the ONNX graph (edgeopt.measure.memory)
    weights_bytes: int  # const arrays: weights, biases, multipliers, tables
    layers: int  # kernel calls in the schedule
    input_shape: tuple[int, ...]
    input_type: str  # uint8 | int8
    input_scale: float | None  # None for raw input (the normalization is folded in)
    input_zero_point: int | None
    output_shape: tuple[int, ...]
    output_type: str  # float32 | uint8 | int8
    output_scale: float | None
    output_zero_point: int | None
    target: str | None = None
    #: The entry point takes raw values (uint8 pixels): a model folded by ``--raw-input``.
    has_raw_input: bool = False
    program: Program | None = field(default=None, repr=False, compare=False)
    plan: ArenaPlan | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx_path": str(self.onnx_path),
            "out_dir": str(self.out_dir),
            "prefix": self.prefix,
            "files": [str(f) for f in self.files],
            "arena_bytes": self.arena_bytes,
            "peak_ram_bytes": self.peak_ram_bytes,
            "weights_bytes": self.weights_bytes,
            "layers": self.layers,
            "input": {
                "shape": list(self.input_shape),
                "type": self.input_type,
                "scale": self.input_scale,
                "zero_point": self.input_zero_point,
                "is_raw": self.has_raw_input,
            },
            "output": {
                "shape": list(self.output_shape),
                "type": self.output_type,
                "scale": self.output_scale,
                "zero_point": self.output_zero_point,
            },
            "target": self.target,
        }


def _check_fits(plan: ArenaPlan, weights_bytes: int, target: Target, source: str) -> None:
    if plan.arena_bytes > target.ram_bytes:
        over = plan.arena_bytes - target.ram_bytes
        raise InputError(
            f"{source}: the activation arena needs {plan.arena_bytes:,} bytes, {over:,} bytes "
            f"({over / target.ram_bytes:.0%}) more than the {target.ram_bytes:,} bytes of RAM "
            f"of target {target.name}; use a smaller input or width, or prune the model."
        )
    if weights_bytes > target.flash_bytes:
        over = weights_bytes - target.flash_bytes
        raise InputError(
            f"{source}: the weights need {weights_bytes:,} bytes, {over:,} bytes more than the "
            f"{target.flash_bytes:,} bytes of flash of target {target.name}."
        )


def _prepare_dir(out_dir: Path, *, is_forced: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_forced:
        raise InputError(
            f"{out_dir}: the folder exists and is not empty; pick another or replace it (--force)."
        )


def _commit(scratch: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; an existing one is moved aside, then deleted."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=scratch_prefix("old-"), dir=out_dir.parent))
        os.rename(out_dir, old / out_dir.name)
    try:
        os.rename(scratch, out_dir)
    except OSError:
        if old is not None:  # put the old folder back
            os.rename(old / out_dir.name, out_dir)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def export_c(
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    target: str | Target | None = None,
    prefix: str = "model",
    is_forced: bool = False,
) -> CExport:
    """Write an int8 QDQ ONNX model as a C99 library with a static arena and no malloc.

    The entry point takes the quantized input in the ONNX input quantization (uint8 for models
    from :func:`edgeopt.quantize`), or, for a model folded to raw input
    (:func:`edgeopt.export.fold.fold_preprocessing`), the raw uint8 / int8 values, which a
    256-entry table per channel maps to the first int8 buffer. It writes the model's output:
    float logits when the last layer writes float (as ``edgeopt.quantize`` leaves the last
    Gemm), else the quantized output; the header has the scales and zero points. Layout is
    NCHW. Every kernel is int8 with fixed-point requantization, except Softmax (float).

    Args:
        onnx_path: the int8 QDQ ``.onnx`` file (see :func:`edgeopt.quantize`).
        out_dir: the folder to write; it must not exist or be empty, unless ``is_forced``, in
            which case it is replaced as a whole.
        target: a profile name, YAML file or :class:`Target`; the arena must fit its RAM and the
            weights its flash.
        prefix: the C name prefix and file stem (``model`` -> ``model.h``, ``model_run``).
        is_forced: replace an existing non-empty ``out_dir``.

    Returns:
        The written files, the arena and weight bytes, the input and output quantization.

    Raises:
        InputError: a bad file or prefix, a float model (quantize it first), an unsupported
            operator (named with its node), a folded audio model (int16 PCM through a float
            front end), an arena larger than the target's RAM (by how
            much), an existing non-empty folder without ``is_forced``.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> q = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> out = export_c(work / "int8.onnx", work / "c")
        >>> sorted(p.name for p in out.files)[:3], out.input_type, out.output_type
        (['edgeopt_kernels.c', 'edgeopt_kernels.h', 'model.c'], 'uint8', 'float32')
    """
    from edgeopt.graph import read_graph
    from edgeopt.measure.memory import plan_memory

    source = Path(onnx_path)
    out = Path(out_dir)
    if not _PREFIX.fullmatch(prefix) or prefix.startswith("edgeopt"):
        raise InputError(
            f"prefix {prefix!r} must be a lower-case C identifier not starting with 'edgeopt'."
        )
    resolved = Target.from_name(target) if isinstance(target, str) else target
    check_writable(out)
    if source.resolve().is_relative_to(out.resolve()):
        raise InputError(
            f"{out}: the folder holds the input model {source}, which --force would delete; "
            "pick another folder."
        )
    _prepare_dir(out, is_forced=is_forced)
    model = read_onnx(source)
    program = lower(model, source=str(source))
    plan = plan_arena(program)
    weights_bytes = sum(a.nbytes for a in program.arrays)
    if resolved is not None:
        _check_fits(plan, weights_bytes, resolved, str(source))
    texts = emit(program, plan, prefix=prefix, source=source.name)
    record_name = f"{prefix}.json"
    names = sorted([*texts, *KERNEL_FILES, record_name])
    x, y = program.input, program.output
    result = CExport(
        onnx_path=source,
        out_dir=out,
        prefix=prefix,
        files=tuple(out / name for name in names),
        arena_bytes=plan.arena_bytes,
        peak_ram_bytes=plan_memory(read_graph(model)).peak_bytes,
        weights_bytes=weights_bytes,
        layers=len(program.steps),
        input_shape=x.shape[1:],
        input_type=program.raw_input or _type_name(x),
        input_scale=None if program.raw_input else x.scale,
        input_zero_point=None if program.raw_input else x.onnx_zero_point,
        output_shape=y.shape[1:],
        output_type=_type_name(y),
        output_scale=None if y.dtype == "float32" else y.scale,
        output_zero_point=None if y.dtype == "float32" else y.onnx_zero_point,
        target=resolved.name if resolved is not None else None,
        has_raw_input=program.raw_input is not None,
        program=program,
        plan=plan,
    )
    renamed = {
        f"{index}": step.node
        for index, step in enumerate(program.steps)
        if c_comment(step.node) != step.node
    }
    record = {
        **result.to_dict(),
        # node names that the generated comments had to change, by step: the file is untrusted
        "comment_names": {i: {"in_c": c_comment(n), "in_onnx": n} for i, n in renamed.items()},
        "onnx_path": source.name,
        "onnx_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "files": names,
        "edgeopt_version": _version(),
    }
    del record["out_dir"]
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_scratch(out.parent)
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix(f"{out.name}."), dir=out.parent))
    try:
        for name, text in texts.items():
            (scratch / name).write_text(text)
        kernels = resources.files("edgeopt.export.c")
        for name in KERNEL_FILES:
            (scratch / name).write_text(kernels.joinpath(name).read_text())
        (scratch / record_name).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(scratch, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual mode
        _commit(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _version() -> str:
    from edgeopt import __version__

    return __version__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
