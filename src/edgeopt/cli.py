"""The ``edgeopt`` command: parse arguments, call the library, render the result.

No logic lives here: every command is one library call plus a Rich rendering. Errors raised on
purpose (:class:`edgeopt.errors.EdgeoptError`) become one line on stderr and their exit code (2
for bad input); nothing is written when a command fails.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from edgeopt.errors import EdgeoptError
from edgeopt.report.console import STDOUT
from edgeopt.report.console import render_bench
from edgeopt.report.console import render_c_export
from edgeopt.report.console import render_distill
from edgeopt.report.console import render_fold
from edgeopt.report.console import render_metrics
from edgeopt.report.console import render_optimize
from edgeopt.report.console import render_prune
from edgeopt.report.console import render_quantize
from edgeopt.report.console import render_targets
from edgeopt.report.console import render_train
from edgeopt.report.console import render_uint8

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fit trained neural networks to low-power devices, measured on the exported artifact.",
)
# No markup: file names, node names and error messages come from users' files, and a name such
# as "in/[red]x.onnx" must print as itself ("[/x]" would even crash Rich's markup parser).
console = STDOUT
err_console = Console(stderr=True, markup=False)

ModelArg = Annotated[
    str, typer.Argument(help="model.onnx | program.pt2 | package.module:factory | zoo:NAME?width=")
]
DataOpt = Annotated[
    str | None,
    typer.Option("--data", "-d", help="digits | idx:DIR | npz:FILE | images:DIR | audio:DIR"),
]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="state dict for a zoo or factory model")
]


@app.command()
def targets() -> None:
    """List the built-in device profiles."""
    from edgeopt.target import Target
    from edgeopt.target import list_targets

    render_targets([Target.from_name(name) for name in list_targets()])


@app.command()
def train(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx (weights: OUT.pt)")],
    data: DataOpt = "digits",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 10,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 64,
    learning_rate: Annotated[float, typer.Option("--lr", help="Adam learning rate")] = 3e-3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    weights: WeightsOpt = None,
) -> None:
    """Train a PyTorch model, export it to ONNX and save its weights beside it."""
    from rich.progress import BarColumn
    from rich.progress import MofNCompleteColumn
    from rich.progress import Progress
    from rich.progress import TextColumn
    from rich.progress import TimeRemainingColumn

    from edgeopt._io import refuse_overwrite
    from edgeopt.config import TrainConfig
    from edgeopt.data import load_data
    from edgeopt.models import load_model
    from edgeopt.training import save_trained
    from edgeopt.training import train as train_model

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed
    )
    if output.suffix != ".onnx":
        raise typer.BadParameter("the output must end in .onnx", param_hint="--output")
    written = [output.with_suffix(suffix) for suffix in (".onnx", ".pt", ".json")]
    refuse_overwrite(written, {"the model": model, "the weights": weights, "the data": data})
    dataset = load_data(data or "digits")
    handle = load_model(model, weights=weights, data=dataset)
    columns = (
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("train", total=None, epoch=0, epochs=epochs, loss=float("nan"))

        def progress(epoch: int, total: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, total=total * steps, completed=epoch * steps + step + 1)
            bar.update(task, epoch=epoch + 1, loss=loss)

        result = train_model(handle, dataset, config, progress=progress)
    files = save_trained(result, dataset, output)
    render_train(result, files, title=f"trained {model} on {dataset.spec}")


@app.command()
def distill(
    teacher: Annotated[
        list[str],
        typer.Option(
            help="trained teacher: model.onnx | zoo:NAME | module:factory | .pt2; repeat it for "
            "an ensemble (mean logits)"
        ),
    ],
    student: Annotated[str, typer.Option(help="PyTorch student: zoo:NAME?width= | module:factory")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx (weights: OUT.pt)")],
    data: DataOpt = "digits",
    temperature: Annotated[float, typer.Option(help="softmax temperature T")] = 4.0,
    alpha: Annotated[float, typer.Option(help="weight of the soft-target loss")] = 0.9,
    feature_weight: Annotated[
        float, typer.Option(help="weight of the FitNets feature loss (0: off)")
    ] = 0.0,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 10,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 64,
    learning_rate: Annotated[float, typer.Option("--lr", help="Adam learning rate")] = 3e-3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    teacher_weights: Annotated[
        list[Path] | None,
        typer.Option(help="state dict for a zoo or factory teacher (once per --teacher)"),
    ] = None,
    weights: WeightsOpt = None,
) -> None:
    """Distil a teacher into a student (Hinton et al. 2015), export it like `train` does."""
    from rich.progress import BarColumn
    from rich.progress import MofNCompleteColumn
    from rich.progress import Progress
    from rich.progress import TextColumn
    from rich.progress import TimeRemainingColumn

    from edgeopt._io import refuse_overwrite
    from edgeopt.data import load_data
    from edgeopt.errors import InputError
    from edgeopt.models import load_model
    from edgeopt.stages.distill import DistillConfig
    from edgeopt.stages.distill import distill as distill_model
    from edgeopt.training import save_trained

    config = DistillConfig(
        temperature=temperature,
        alpha=alpha,
        feature_weight=feature_weight,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )
    if output.suffix != ".onnx":
        raise typer.BadParameter("the output must end in .onnx", param_hint="--output")
    teacher_paths = list(teacher_weights or [])
    inputs: dict[str, str | Path | None] = {
        "the student": student,
        "the weights": weights,
        "the data": data,
        **{f"teacher {spec}": spec for spec in teacher},
        **{f"the weights of teacher {i + 1}": path for i, path in enumerate(teacher_paths)},
    }
    written = [output.with_suffix(suffix) for suffix in (".onnx", ".pt", ".json")]
    refuse_overwrite(written, inputs)
    dataset = load_data(data or "digits")
    if teacher_paths and len(teacher_paths) != len(teacher):
        raise InputError(
            f"--teacher-weights: give one per --teacher ({len(teacher)}), or none; got "
            f"{len(teacher_paths)}."
        )
    teacher_handles = [
        load_model(spec, weights=teacher_paths[i] if teacher_paths else None, data=dataset)
        for i, spec in enumerate(teacher)
    ]
    student_handle = load_model(student, weights=weights, data=dataset)
    columns = (
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("distill", total=None, epoch=0, epochs=epochs, loss=float("nan"))

        def progress(epoch: int, total: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, total=total * steps, completed=epoch * steps + step + 1)
            bar.update(task, epoch=epoch + 1, loss=loss)

        result = distill_model(
            teacher_handles, student_handle, config, data=dataset, progress=progress
        )
    files = save_trained(result, dataset, output)
    title = f"distilled {' + '.join(teacher)} into {student} on {dataset.spec}"
    render_distill(result, files, title=title)


@app.command()
def profile(
    model: ModelArg,
    data: DataOpt = None,
    target: Annotated[str | None, typer.Option(help="target name or YAML file")] = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for latency")] = 1,
    json_path: Annotated[Path | None, typer.Option("--json", help="write Metrics as JSON")] = None,
    weights: WeightsOpt = None,
) -> None:
    """Measure a model on its exported ONNX artifact (a PyTorch model is exported first)."""
    from edgeopt._io import refuse_overwrite
    from edgeopt._io import write_json
    from edgeopt.measure import profile as profile_model

    inputs = {"the model": model, "the weights": weights, "the data": data, "the target": target}
    refuse_overwrite([json_path] if json_path else [], inputs)
    metrics = profile_model(model, data=data, target=target, threads=threads, weights=weights)
    render_metrics(metrics)
    if json_path is not None:
        write_json(json_path, metrics.to_dict())
        console.print(f"wrote {json_path}")


def _names(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ("a", "b", "c"): the items of a comma-list option."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _float_list(text: str, option: str) -> tuple[float, ...]:
    """``0.5,0.25`` as numbers; anything else is one sentence naming the option."""
    from edgeopt.errors import InputError

    try:
        return tuple(float(item) for item in _names(text))
    except ValueError:
        raise InputError(f"{option}: give a comma list of numbers, got {text!r}.") from None


def _int_list(text: str, option: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32); anything but whole numbers is one sentence of bad input."""
    from edgeopt.errors import InputError

    items = _names(text)
    for item in items:
        if not item.lstrip("-").isdigit():
            raise InputError(
                f"{option}: {item!r} is not a whole number; give a comma-separated list such as "
                "1,8,32."
            )
    return tuple(int(item) for item in items)


@app.command()
def bench(
    model: ModelArg,
    batch: Annotated[str, typer.Option("--batch", help="batch sizes, e.g. 1,8,32")] = "1,8,32",
    threads: Annotated[str, typer.Option("--threads", help="intra-op threads, e.g. 1,2")] = "1",
    provider: Annotated[
        str,
        typer.Option(
            "--provider", help="cpu, cuda, tensorrt, openvino, dml, coreml, rocm, qnn (comma list)"
        ),
    ] = "cpu",
    data: DataOpt = None,
    target: Annotated[
        str | None, typer.Option(help="target name or YAML file: energy estimate without counters")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the report as JSON")
    ] = None,
    weights: WeightsOpt = None,
) -> None:
    """Latency percentiles and throughput per provider, batch size and thread count."""
    from edgeopt._io import refuse_overwrite
    from edgeopt._io import write_json
    from edgeopt.measure.bench import BenchConfig
    from edgeopt.measure.bench import bench as bench_model

    inputs = {"the model": model, "the weights": weights, "the data": data, "the target": target}
    refuse_overwrite([json_path] if json_path else [], inputs)

    config = BenchConfig(
        batches=_int_list(batch, "--batch"),
        threads=_int_list(threads, "--threads"),
        providers=_names(provider),
        target=target,
    )
    with console.status("benching"):
        report = bench_model(model, config, data=data, weights=weights)
    render_bench(report)
    if json_path is not None:
        write_json(json_path, report.to_dict())
        console.print(f"wrote {json_path}")


@app.command()
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
    from rich.progress import BarColumn
    from rich.progress import MofNCompleteColumn
    from rich.progress import Progress
    from rich.progress import TextColumn

    from edgeopt.data import load_data
    from edgeopt.models import load_model
    from edgeopt.stages.quantize import make_config
    from edgeopt.stages.quantize_report import quantize_and_profile

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
    dataset = load_data(data or "digits")
    handle = load_model(model, weights=weights, data=dataset)
    columns = (
        TextColumn("QAT epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("qat", total=None, epoch=0, epochs=0, loss=float("nan"))

        def progress(epoch: int, total: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, total=total * steps, completed=epoch * steps + step + 1)
            bar.update(task, epoch=epoch + 1, epochs=total, loss=loss)

        report = quantize_and_profile(
            handle, config, data=dataset, output=output, target=target, progress=progress
        )
    render_quantize(report)


@app.command()
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
    from edgeopt._io import refuse_overwrite
    from edgeopt.data import load_data
    from edgeopt.models import load_model
    from edgeopt.stages.prune import PruneConfig
    from edgeopt.stages.prune_report import prune_and_profile

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
    written = [output.with_suffix(suffix) for suffix in (".onnx", ".pt", ".json", ".edc")]
    inputs = {"the model": model, "the weights": weights, "the data": data, "the target": target}
    refuse_overwrite(written, inputs)
    dataset = load_data(data or "digits")
    handle = load_model(model, weights=weights, data=dataset)
    with console.status("pruning and fine-tuning"):
        report = prune_and_profile(
            handle,
            config,
            data=dataset,
            output=output,
            target=target,
            is_compressed=compress,
            bits_conv=bits_conv,
            bits_fc=bits_fc,
        )
    render_prune(report)


@app.command()
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


@app.command()
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


@app.command()
def optimize(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="RUNDIR: study, trials, report")],
    target: Annotated[str, typer.Option(help="target name or YAML file")],
    data: DataOpt = "digits",
    max_accuracy_drop: Annotated[
        float | None, typer.Option("--max-accuracy-drop", help="percentage points")
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="estimated on the target")
    ] = None,
    max_energy_uj: Annotated[
        float | None, typer.Option("--max-energy-uj", help="estimated on the target")
    ] = None,
    max_flash: Annotated[
        int | None, typer.Option("--max-flash", help="bytes (default: the target's flash)")
    ] = None,
    max_ram: Annotated[
        int | None, typer.Option("--max-ram", help="bytes (default: the target's RAM)")
    ] = None,
    objectives: Annotated[
        str, typer.Option(help="comma list of accuracy, latency, energy, flash, ram")
    ] = "accuracy,energy",
    trials: Annotated[int, typer.Option(help="completed trials to reach")] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="seconds after which no trial starts")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="RDB URL (default sqlite:///RUNDIR/study.db)")
    ] = None,
    study: Annotated[str, typer.Option(help="study name in the storage")] = "edgeopt",
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    wait: Annotated[
        float,
        typer.Option(help="seconds to wait for trials still running on other workers"),
    ] = 3600.0,
    sampler: Annotated[str, typer.Option(help="tpe | nsga2")] = "tpe",
    quantize: Annotated[
        str, typer.Option(help="quantization choices: none, ptq8, qat8, ptq4, mixed")
    ] = "none,ptq8,qat8,ptq4,mixed",
    epochs: Annotated[int, typer.Option(help="distillation epochs per trial")] = 5,
    finetune_epochs: Annotated[int, typer.Option(help="pruning / QAT epochs per trial")] = 2,
    students: Annotated[
        str, typer.Option(help="extra students, comma list of zoo specs (zoo:ds-cnn-s,...)")
    ] = "",
    student_widths: Annotated[
        str, typer.Option(help="students: the model's zoo architecture at these widths")
    ] = "0.5,0.25",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    weights: WeightsOpt = None,
) -> None:
    """Search compression recipes under the device budget; keep the best one that fits."""
    from rich.progress import BarColumn
    from rich.progress import MofNCompleteColumn
    from rich.progress import Progress
    from rich.progress import TextColumn
    from rich.progress import TimeElapsedColumn

    from edgeopt.errors import BudgetError
    from edgeopt.search import OptimizeConfig
    from edgeopt.search import optimize as run_search

    config = OptimizeConfig(
        max_accuracy_drop_pp=max_accuracy_drop,
        max_latency_ms=max_latency_ms,
        max_energy_uj=max_energy_uj,
        max_flash_bytes=max_flash,
        max_ram_bytes=max_ram,
        objectives=_names(objectives),
        trials=trials,
        timeout_s=timeout,
        storage=storage,
        study=study,
        workers=workers,
        wait_s=wait,
        sampler=sampler,
        quantize_methods=_names(quantize),
        distill_epochs=epochs,
        finetune_epochs=finetune_epochs,
        students=_names(students),
        student_widths=_float_list(student_widths, "--student-widths"),
        seed=seed,
    )
    columns = (
        TextColumn("trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("optimize", total=trials)

        def progress(complete: int, total: int) -> None:
            bar.update(task, completed=complete, total=total)

        result = run_search(
            model,
            data or "digits",
            target,
            config,
            rundir=output,
            weights=weights,
            progress=progress,
        )
    render_optimize(result)
    if not result.is_feasible:
        raise BudgetError(result.explanation or "no candidate meets the budget.")


@app.command()
def apply(
    model: ModelArg,
    recipe: Annotated[Path, typer.Option(help="recipe.yaml written by optimize")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx")],
    data: DataOpt = "digits",
    target: Annotated[str | None, typer.Option(help="target name: profile the file on it")] = None,
    weights: WeightsOpt = None,
) -> None:
    """Replay a saved recipe on the model: the same seed gives the same artifact."""
    from edgeopt.data import load_data
    from edgeopt.measure import profile as profile_model
    from edgeopt.search import Recipe
    from edgeopt.search import apply_recipe

    parsed = Recipe.from_yaml(recipe)
    dataset = load_data(data or "digits")
    with console.status(f"applying {parsed.describe()}"):
        written = apply_recipe(model, dataset, parsed, output, weights=weights)
    metrics = profile_model(str(written), data=dataset, target=target)
    console.print(
        f"wrote {written} ({parsed.describe()}): test accuracy {metrics.accuracy:.2%} "
        f"(measured on the ONNX file), {metrics.size_bytes:,} bytes"
    )


#: Errors of the machine, not of edgeopt: a full disk or quota, a read-only or forbidden place.
_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _log_internal_error(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file (passwords scrubbed); its
    path, or None."""
    import tempfile
    import time
    import traceback

    from edgeopt._secrets import scrub

    try:
        folder = Path(tempfile.gettempdir()) / "edgeopt-logs"
        folder.mkdir(exist_ok=True)
        path = folder / f"edgeopt-{time.strftime('%Y%m%d-%H%M%S')}-{id(exc):x}.log"
        text = "".join(traceback.format_exception(exc))
        path.write_text(scrub(f"edgeopt {' '.join(sys.argv[1:])}\n\n{text}"))
        return path
    except OSError:
        return None


def main() -> None:
    """Entry point: run the app. edgeopt's own errors become one line and their exit code (2
    for bad input); anything else is a bug: one line, exit code 1, and the traceback in a log
    file to report."""
    from edgeopt._secrets import scrub

    try:
        app()
    except EdgeoptError as exc:
        error = Text.assemble(("error:", "bold red"), f" {scrub(str(exc))}")
        err_console.print(error, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing was written by the step that was running.")
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRORS:
            raise _internal(exc) from None
        where = f" {exc.filename}" if exc.filename else ""
        error = Text.assemble(
            ("error:", "bold red"),
            f" cannot write{where} ({exc.strerror}); nothing half-written was kept.",
        )
        err_console.print(error, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # a bug: never a bare traceback
        raise _internal(exc) from None


def _internal(exc: BaseException) -> SystemExit:
    """Report an unexpected error in one sentence with its log file; the exit (code 1)."""
    from edgeopt._secrets import scrub

    log = _log_internal_error(exc)
    where = f"; the traceback is in {log}" if log else ""
    first = scrub(" ".join(str(exc).split())[:200])
    error = Text.assemble(
        ("internal error:", "bold red"),
        f" {type(exc).__name__}: {first}{where}. This is a bug in edgeopt, not in your input:"
        " please report it with that file (README: Exit codes and reporting a bug).",
    )
    err_console.print(error, highlight=False, soft_wrap=True)
    return SystemExit(1)


if __name__ == "__main__":
    main()
