"""``edgeopt export``: an int8 model as a C99 library, a raw-input or a U8U8 ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from edgeopt.report.console import render_c_export
from edgeopt.report.console import render_fold
from edgeopt.report.console import render_uint8

from edgeopt.cli._common import console


def export(
    model: Annotated[Path, typer.Argument(help="an int8 QDQ .onnx file (edgeopt quantize)")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the folder to write (c) | OUT.onnx (onnx)")
    ],
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="c: a C99 library with a static arena, no malloc | onnx: with --raw-input",
        ),
    ] = "c",
    raw_input: Annotated[
        bool,
        typer.Option(
            "--raw-input",
            help="fold the normalization of --data into the first layer: the file takes raw "
            "uint8, or int16 PCM for audio: data (its front end goes in the graph; --format "
            "onnx)",
        ),
    ] = False,
    target: Annotated[
        str | None, typer.Option(help="target name or YAML file: the arena must fit its RAM")
    ] = None,
    prefix: Annotated[str, typer.Option(help="C name prefix and file stem")] = "model",
    force: Annotated[bool, typer.Option("--force", help="replace a non-empty folder")] = False,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="compile with gcc and compare with ONNX Runtime here"),
    ] = None,
    samples: Annotated[int, typer.Option(help="test samples the check runs")] = 1000,
    weight_type: Annotated[
        str,
        typer.Option(
            "--weight-type",
            help="uint8: store int8 weights as uint8 (U8U8, same numbers), whose layers ONNX "
            "Runtime runs without saturating on x86 without VNNI (--format onnx)",
        ),
    ] = "int8",
) -> None:
    """Write an int8 QDQ model as a C99 library for microcontrollers, or (``--format onnx
    --raw-input``) an ONNX file that takes raw uint8 (or, for audio, int16 PCM) input, its
    normalization (and audio front end) folded in, or (``--format onnx --weight-type uint8``)
    the same model as U8U8, whose layers ONNX Runtime runs without saturating on any x86 CPU."""
    from edgeopt.data import load_data
    from edgeopt.errors import InputError
    from edgeopt.export.c import CBuildError
    from edgeopt.export.c import check_c
    from edgeopt.export.c import export_c
    from edgeopt.export.c import has_compiler
    from edgeopt.export.c import measure_c
    from edgeopt.export.uint8 import WEIGHT_TYPES

    if export_format not in ("c", "onnx"):
        raise InputError(f"unknown export format {export_format!r}; known: c, onnx.")
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}.")
    if weight_type not in WEIGHT_TYPES:
        raise InputError(f"--weight-type must be int8 or uint8, got {weight_type!r}.")
    if weight_type == "uint8":
        if export_format != "onnx" or raw_input:
            raise InputError(
                "--weight-type uint8 needs --format onnx without --raw-input (fold first, then "
                "export the folded file with --weight-type uint8)."
            )
        from edgeopt.export.uint8 import write_uint8

        with console.status("writing and measuring" if data else "writing"):
            done = write_uint8(model, output=output, data=data)
        render_uint8(done)
        return
    if export_format == "onnx" or raw_input:
        if export_format != "onnx" or not raw_input or data is None:
            raise InputError(
                "--raw-input needs --format onnx and --data SPEC (the data whose normalization "
                "is folded in); export the folded .onnx file with --format c for a C library "
                "that takes raw input."
            )
        from edgeopt.export.fold import fold_preprocessing
        from edgeopt.export.onnx import ExportError

        folded = fold_preprocessing(model, data, output=output, samples=samples)
        render_fold(folded, source=model)
        if folded.top1_agreement is not None and folded.top1_agreement < 1.0:
            raise ExportError(
                f"{output}: the folded model's top-1 differs from {model} on "
                f"{1 - folded.top1_agreement:.2%} of {data}'s test samples; please report it."
            )
        return
    result = export_c(model, output, target=target, prefix=prefix, is_forced=force)
    size = measure_c(result) if has_compiler() else None
    parity = None
    if data is not None:
        dataset = load_data(data)  # a folded model takes the raw values, others normalized ones
        x = dataset.raw["test"] if result.has_raw_input else dataset.arrays("test")[0]
        parity = check_c(result, x[:samples])
    command = f"edgeopt export {model} --format c -o {output}"
    command += f" --prefix {prefix}" if prefix != "model" else ""
    render_c_export(result, size, parity, command=command)
    if parity is not None and not parity.is_exact:
        int8 = parity.arithmetic
        if int8 is not None and not int8.is_exact:  # the reference itself is not the integers
            console.print(
                "not checked: ONNX Runtime does not compute this file's integers exactly on this "
                f"host ({int8.reason}).",
            )
            return
        raise CBuildError(
            f"{output}: the C library differs from the exact integers on {data} (top-1 "
            f"agreement {parity.top1_agreement:.2%}, {parity.max_tensor_lsb} LSB); please "
            "report it."
        )
