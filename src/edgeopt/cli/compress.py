"""``edgeopt quantize``, ``prune``, ``decompress``: smaller models, measured against the source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli._common import DataOpt
from edgeopt.cli._common import ModelArg
from edgeopt.cli._common import WeightsOpt
from edgeopt.cli._common import console
from edgeopt.cli._progress import epoch_progress
from edgeopt.cli._progress import status
from edgeopt.report.console import render_prune
from edgeopt.report.console import render_quantize


def quantize(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx (record: OUT.json)")],
    data: DataOpt = "digits",
    method: Annotated[str, typer.Option(help="ptq | qat | dynamic")] = "ptq",
    calibration: Annotated[
        str | None, typer.Option(help="minmax | percentile | entropy | mse (default mse)")
    ] = None,
    per_channel: Annotated[
        bool | None,
        typer.Option("--per-channel/--per-tensor", help="weight scales per output channel"),
    ] = None,
    bits: Annotated[int | None, typer.Option(help="weight bits: 8 (default) or 4")] = None,
    max_flash: Annotated[
        int | None, typer.Option("--max-flash", help="flash budget in bytes: mixed precision")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="QAT epochs (default 2)")] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--lr", help="QAT Adam learning rate (default 1e-4)")
    ] = None,
    equalize: Annotated[bool, typer.Option("--equalize", help="cross-layer equalization")] = False,
    bias_correction: Annotated[
        bool, typer.Option("--bias-correction", help="empirical bias correction")
    ] = False,
    adaround: Annotated[bool, typer.Option("--adaround", help="AdaRound the weights")] = False,
    weights: WeightsOpt = None,
    target: Annotated[str, typer.Option(help="target name or YAML file")] = "cortex-m4",
) -> None:
    """Quantize a model to QDQ ONNX and compare it with the fp32 file, both measured."""
    from edgeopt.pipeline import Recipe
    from edgeopt.pipeline import Step
    from edgeopt.pipeline import run
    from edgeopt.stages.quantize import make_config

    config = make_config(
        method,
        calibration=calibration,
        is_per_channel=per_channel,
        bits=bits,
        max_flash_bytes=max_flash,
        epochs=epochs,
        learning_rate=learning_rate,
        is_equalized=equalize,
        is_bias_corrected=bias_correction,
        is_adarounded=adaround,
    )
    recipe = Recipe(steps=(Step(config),))
    with epoch_progress("QAT") as progress:
        result = run(
            model,
            recipe,
            data=data or "digits",
            output=output,
            target=target,
            weights=weights,
            progress=progress,
        )
    render_quantize(result)


def prune(
    model: ModelArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="OUT.onnx (also OUT.pt, OUT.json, OUT.edc)")
    ],
    data: DataOpt = "digits",
    kind: Annotated[str, typer.Option(help="unstructured | channel | 2:4")] = "unstructured",
    ratio: Annotated[float, typer.Option(help="fraction pruned, in [0, 1)")] = 0.5,
    ratio_of: Annotated[
        str, typer.Option(help="units (weights or channels) | macs (channel only)")
    ] = "units",
    schedule: Annotated[str, typer.Option(help="oneshot | gradual (unstructured)")] = "oneshot",
    finetune_epochs: Annotated[int, typer.Option(help="fine-tuning epochs")] = 2,
    scope: Annotated[str, typer.Option(help="global | layer")] = "global",
    importance: Annotated[str, typer.Option(help="channel ranking: l1 | l2 | taylor")] = "l1",
    guided: Annotated[
        bool, typer.Option("--guided", help="per-layer ratios from the sensitivity analysis")
    ] = False,
    channel_multiple: Annotated[
        int, typer.Option(help="channels kept per layer rounded to a multiple (channel)")
    ] = 1,
    learning_rate: Annotated[float, typer.Option("--lr", help="fine-tuning learning rate")] = 1e-3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    compress: Annotated[
        bool, typer.Option("--compress", help="also write OUT.edc (Deep Compression)")
    ] = False,
    bits_conv: Annotated[int, typer.Option(help="codebook bits of conv weights (.edc)")] = 8,
    bits_fc: Annotated[int, typer.Option(help="codebook bits of fc weights (.edc)")] = 5,
    weights: WeightsOpt = None,
    target: Annotated[str, typer.Option(help="target name or YAML file")] = "cortex-m4",
) -> None:
    """Prune a PyTorch model, fine-tune it, export it and compare it with the source, measured."""
    from edgeopt.pipeline import Compression
    from edgeopt.pipeline import Recipe
    from edgeopt.pipeline import Step
    from edgeopt.pipeline import run
    from edgeopt.stages.prune import PruneConfig

    config = PruneConfig(
        granularity=kind,
        ratio=ratio,
        ratio_of=ratio_of,
        schedule=schedule,
        finetune_epochs=finetune_epochs,
        scope=scope,
        importance=importance,
        is_sensitivity_guided=guided,
        channel_multiple=channel_multiple,
        learning_rate=learning_rate,
        seed=seed,
    )
    with status("pruning and fine-tuning"):
        result = run(
            model,
            Recipe(seed=seed, steps=(Step(config),)),
            data=data or "digits",
            output=output,
            target=target,
            weights=weights,
            compress=Compression(bits_conv, bits_fc) if compress else None,
        )
    render_prune(result)


def decompress(
    path: Annotated[Path, typer.Argument(help="a compressed model (.edc) written by prune")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx")],
    max_bytes: Annotated[
        int,
        typer.Option(help="the largest model decoded, bytes (the file is untrusted)"),
    ] = 1 << 30,
) -> None:
    """Decode a Deep Compression file (.edc) back into a runnable ONNX model."""
    from edgeopt.export.compressed import decompress as decode

    written = decode(path, output, max_bytes=max_bytes)
    console.print(f"wrote {written} ({written.stat().st_size:,} bytes, from {path})")
