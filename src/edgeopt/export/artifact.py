"""An int8 model as the artifact a device runs: a C99 library, a ``.tflite`` file, a raw-input or
a U8U8 ONNX file.

``edgeopt export`` is :class:`ExportConfig` -> :func:`export_model` -> a renderer ->
:func:`check_export`. The config refuses combinations that write nothing useful before any work;
:func:`export_model` writes the artifact with the exporter the config picks
(:func:`~edgeopt.export.c.export_c`, :func:`~edgeopt.export.tflite.write_tflite`,
:func:`~edgeopt.export.fold.fold_preprocessing` or :func:`~edgeopt.export.uint8.write_uint8`)
and measures it; :func:`check_export` is the verdict on the artifact's parity with its source,
kept apart so the numbers can be shown first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from edgeopt.config import Config
from edgeopt.errors import InputError
from edgeopt.export.uint8 import WEIGHT_TYPES

if TYPE_CHECKING:
    from edgeopt.data import Dataset
    from edgeopt.export.c import CBuildSize
    from edgeopt.export.c import CExport
    from edgeopt.export.c import CParity
    from edgeopt.export.fold import FoldResult
    from edgeopt.export.tflite import TFLiteExport
    from edgeopt.export.tflite import TFLiteParity
    from edgeopt.export.uint8 import Uint8Result
    from edgeopt.measure.cortexm import CortexMRun

__all__ = [
    "FORMATS",
    "CLibraryReport",
    "ExportConfig",
    "TFLiteReport",
    "check_export",
    "export_model",
]

#: ``--format`` values: a C99 library, a ``.tflite`` file, or an ONNX file (folded raw input,
#: or U8U8 weights).
FORMATS = ("c", "onnx", "tflite")

_RAW_INPUT_NEEDS = (
    "--raw-input needs --format onnx and --data SPEC (the data whose normalization is folded "
    "in); export the folded .onnx file with --format c for a C library that takes raw input."
)


@dataclass(frozen=True)
class ExportConfig(Config):
    """What to write: the format, raw input or uint8 weights (ONNX), the C names and checks.

    ``format="c"`` writes a C99 library (``prefix`` names its functions and files;
    ``is_forced`` replaces a non-empty folder; ``target`` must have the RAM for its arena);
    ``format="tflite"`` a ``.tflite`` file for TensorFlow Lite Micro (full int8 from a QDQ file,
    float32 from a float one), measured beside the C library of the same model;
    ``format="onnx"`` with ``is_raw_input`` folds the data's normalization into the first layer,
    or with ``weight_type="uint8"`` stores the int8 weights as uint8. ``samples`` test samples
    run the parity check where data is given. ``measure`` (a comma list of cores, C only) counts
    the library's instructions on emulated Cortex-M cores (:mod:`edgeopt.measure.cortexm`).
    """

    kind: ClassVar[str] = "export"
    format: str = "c"
    is_raw_input: bool = False
    weight_type: str = "int8"
    samples: int = 1000
    prefix: str = "model"
    is_forced: bool = False
    target: str | None = None
    measure: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown export format {self.format!r}; known: c, onnx, tflite.")
        if self.samples < 1:
            raise InputError(f"--samples must be at least 1, got {self.samples}.")
        if self.weight_type not in WEIGHT_TYPES:
            raise InputError(f"--weight-type must be int8 or uint8, got {self.weight_type!r}.")
        if self.weight_type == "uint8":
            if self.format != "onnx" or self.is_raw_input:
                raise InputError(
                    "--weight-type uint8 needs --format onnx without --raw-input (fold first, "
                    "then export the folded file with --weight-type uint8)."
                )
        elif (self.format == "onnx") != self.is_raw_input:
            raise InputError(_RAW_INPUT_NEEDS)
        if self.measure is not None:
            from edgeopt.measure.cortexm import check_cores

            if self.format != "c":
                raise InputError("--measure counts the C library's instructions: --format c.")
            check_cores(self.measure)


@dataclass(frozen=True)
class CLibraryReport:
    """The C library written, its build sizes (None without a compiler), with data its
    parity with ONNX Runtime, and with ``measure`` its instructions on emulated cores."""

    export: CExport
    size: CBuildSize | None
    parity: CParity | None
    cortex_m: tuple[CortexMRun, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "export": self.export.to_dict(),
            "size": self.size.to_dict() if self.size is not None else None,
            "parity": self.parity.to_dict() if self.parity is not None else None,
            "cortex_m": [run.to_dict() for run in self.cortex_m],
        }


@dataclass(frozen=True)
class TFLiteReport:
    """The ``.tflite`` file written and, side by side for the same model, edgeopt's C library:
    its planned arena and (with a compiler) its flash; None where the C exporter refuses the
    model (a float one) or no compiler is found. With data, TFLite Micro's parity with the
    exact int8 reference."""

    export: TFLiteExport
    c_arena_bytes: int | None
    c_flash_bytes: int | None
    c_note: str | None
    parity: TFLiteParity | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "export": self.export.to_dict(),
            "c_arena_bytes": self.c_arena_bytes,
            "c_flash_bytes": self.c_flash_bytes,
            "c_note": self.c_note,
            "parity": self.parity.to_dict() if self.parity is not None else None,
        }


def export_model(
    model: str | Path,
    config: ExportConfig,
    *,
    output: str | Path,
    data: str | Dataset | None = None,
) -> CLibraryReport | TFLiteReport | FoldResult | Uint8Result:
    """Write ``model`` as ``config`` says and measure what was written.

    Args:
        model: an int8 QDQ ``.onnx`` file (fp32 too, for ``is_raw_input``), or a ``.tflite``
            file (its ONNX import, :mod:`edgeopt.models.tflite`); not modified.
        config: the format and its options.
        output: the folder of the C library, or the ``.tflite`` / ``.onnx`` file to write.
        data: a C library is compiled and run on its test split against ONNX Runtime; a
            folded file takes its normalization (required) and is checked on its test split;
            a U8U8 file is profiled beside its source on it.

    Returns:
        A :class:`CLibraryReport` (``format="c"``), a :class:`TFLiteReport` (``"tflite"``), the
        :class:`~edgeopt.export.fold.FoldResult` (raw input) or the
        :class:`~edgeopt.export.uint8.Uint8Result` (uint8 weights).

    Raises:
        InputError: raw input without data, or what the exporter refuses (a missing or invalid
            file, an operator without a kernel, an arena over the target's RAM, ...).

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> _ = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> done = export_model(work / "int8.onnx", ExportConfig(), output=work / "c")
        >>> done.export.prefix, done.parity is None
        ('model', True)
    """
    if str(model).lower().endswith(".tflite"):  # exported from its ONNX import
        from edgeopt.models import load_model

        imported = load_model(str(model)).onnx_path
        try:
            return export_model(imported or model, config, output=output, data=data)
        except InputError as exc:  # name the user's file, not the private import
            raise InputError(str(exc).replace(str(imported), str(model))) from None
    if config.format == "tflite":
        return _export_tflite(model, config, output=Path(output), data=data)
    if config.weight_type == "uint8":
        from edgeopt.export.uint8 import write_uint8

        return write_uint8(model, output=output, data=data)
    if config.is_raw_input:
        if data is None:
            raise InputError(_RAW_INPUT_NEEDS)
        from edgeopt.export.fold import fold_preprocessing

        return fold_preprocessing(model, data, output=output, samples=config.samples)
    from edgeopt.data import load_data
    from edgeopt.export.c import check_c
    from edgeopt.export.c import export_c
    from edgeopt.export.c import has_compiler
    from edgeopt.export.c import measure_c

    cores = ()
    if config.measure is not None:  # before anything is written: the tools are there
        from edgeopt.measure.cortexm import require_cortexm_tools

        cores = require_cortexm_tools(config.measure)
    library = export_c(
        model, output, target=config.target, prefix=config.prefix, is_forced=config.is_forced
    )
    size = measure_c(library) if has_compiler() else None
    parity = None
    x = None
    if data is not None:
        from edgeopt.models import bind_data
        from edgeopt.models import load_model

        # a folded model takes the raw values, others what their metadata says
        dataset = bind_data(load_model(str(model)), load_data(data))
        x = dataset.raw["test"] if library.has_raw_input else dataset.arrays("test")[0]
        parity = check_c(library, x[: config.samples])
    runs = ()
    if cores:
        from edgeopt.measure.cortexm import measure_cores

        spec = None if data is None else data if isinstance(data, str) else data.spec
        runs = measure_cores(library, cores, inputs=x, data=spec)
    return CLibraryReport(library, size, parity, runs)


def _export_tflite(
    model: str | Path, config: ExportConfig, *, output: Path, data: str | Dataset | None
) -> TFLiteReport:
    """The ``.tflite`` file, then the C library of the same model in a scratch folder beside
    it (only its arena and flash are kept: the numbers a user weighs the two runtimes by)."""
    from edgeopt._io import scratch_dir
    from edgeopt.export.c import export_c
    from edgeopt.export.c import has_compiler
    from edgeopt.export.c import measure_c
    from edgeopt.export.tflite import check_tflite
    from edgeopt.export.tflite import write_tflite

    dataset = None
    calibration = None
    if data is not None:
        from edgeopt.data import load_data
        from edgeopt.models import bind_data
        from edgeopt.models import load_model

        dataset = bind_data(load_model(str(model)), load_data(data))
        # the training split sets the scale of float logits (the QDQ file has none for them)
        calibration = dataset.arrays("train")[0][: config.samples]
    written = write_tflite(model, output, calibration=calibration)
    c_arena = c_flash = note = None
    if written.is_int8:
        with scratch_dir(output.parent, "c") as folder:
            try:
                library = export_c(model, folder / "c", target=config.target)
            except InputError as exc:
                note = f"no C library to compare: {exc}"
            else:
                c_arena = library.arena_bytes
                if has_compiler():
                    c_flash = measure_c(library).flash_bytes
                else:
                    note = "C flash not measured: no C compiler (gcc) found"
    else:
        note = "no C library to compare: the C exporter writes int8 models only"
    parity = None
    if dataset is not None:
        parity = check_tflite(written, dataset.arrays("test")[0][: config.samples])
    return TFLiteReport(written, c_arena, c_flash, note, parity)


def check_export(
    result: CLibraryReport | TFLiteReport | FoldResult | Uint8Result,
    *,
    source: str | Path,
    data: str | Dataset | None,
) -> str | None:
    """The verdict on what :func:`export_model` wrote: does it compute what its source does?

    Args:
        result: what :func:`export_model` returned.
        source: the model exported, as the caller named it.
        data: the data given to :func:`export_model`.

    Returns:
        None where the artifact was accepted (or no parity was checked), or a sentence saying
        why the parity could not be judged on this host.

    Raises:
        ExportError: a folded file's top-1 differs from its source's on some test sample.
        CBuildError: the C library differs from the exact integers.

    Example:
        >>> from edgeopt.export.uint8 import Uint8Result
        >>> done = Uint8Result(Path("u8.onnx"), Path("int8.onnx"), 4, 0, ())
        >>> check_export(done, source="int8.onnx", data=None) is None
        True
    """
    from edgeopt.export.fold import FoldResult
    from edgeopt.export.fold import require_parity

    if isinstance(result, FoldResult) and data is not None:
        require_parity(result, source=source, data=data)
    elif isinstance(result, CLibraryReport) and result.parity is not None and data is not None:
        from edgeopt.export.c import require_exact

        spec = data if isinstance(data, str) else data.spec
        return require_exact(result.parity, library=result.export.out_dir, data=spec)
    elif isinstance(result, TFLiteReport) and result.parity is not None and result.parity.max_lsb:
        return (
            "TFLite Micro requantizes with a fixed-point multiplier and two roundings "
            "(gemmlowp), ONNX Runtime in float with one: values near a half step land one "
            "step apart (see edgeopt.export.tflite)."
        )
    return None
