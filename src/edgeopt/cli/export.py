"""``edgeopt export``: an int8 model as a C99 library, a ``.tflite`` file, a raw-input or a U8U8
ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli._common import console
from edgeopt.cli._progress import status
from edgeopt.report.console import render_export


def export(
    model: Annotated[Path, typer.Argument(help="an int8 QDQ .onnx file (edgeopt quantize)")],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="the folder to write (c) | OUT.tflite (tflite) | OUT.onnx (onnx)"
        ),
    ],
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="c: a C99 library with a static arena, no malloc | tflite: a full-int8 .tflite "
            "for TensorFlow Lite Micro (float32 from a float model) | onnx: with --raw-input",
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
        typer.Option(
            "--data",
            "-d",
            help="compare with ONNX Runtime's exact integers here (c: compiled with gcc; tflite: "
            "in TensorFlow Lite Micro)",
        ),
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
    measure: Annotated[
        str | None,
        typer.Option(
            "--measure",
            help="count the C library's instructions on emulated cores (QEMU -icount), per "
            "layer and per inference: cortex-m4, cortex-m7, cortex-m33, cortex-m55 (a comma list)",
        ),
    ] = None,
) -> None:
    """Write an int8 QDQ model as a C99 library for microcontrollers, a ``.tflite`` file for
    TensorFlow Lite Micro (``--format tflite``: full int8 with the file's own scales), or
    (``--format onnx --raw-input``) an ONNX file that takes raw uint8 (or, for audio, int16 PCM)
    input, its normalization (and audio front end) folded in, or (``--format onnx --weight-type
    uint8``) the same model as U8U8, whose layers ONNX Runtime runs without saturating on any
    x86 CPU."""
    from edgeopt.export.artifact import ExportConfig
    from edgeopt.export.artifact import check_export
    from edgeopt.export.artifact import export_model

    config = ExportConfig(
        format=export_format,
        is_raw_input=raw_input,
        weight_type=weight_type,
        samples=samples,
        prefix=prefix,
        is_forced=force,
        target=target,
        measure=measure,
    )
    with status("writing and measuring" if data or measure else "writing"):
        result = export_model(model, config, output=output, data=data)
    command = f"edgeopt export {model} --format {export_format} -o {output}"
    command += f" --prefix {prefix}" if prefix != "model" else ""
    render_export(result, source=model, command=command)
    note = check_export(result, source=model, data=data)
    if note is not None:
        console.print(note)
