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
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeopt.errors import EdgeoptError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fit trained neural networks to low-power devices, measured on the exported artifact.",
)
# No markup: file names, node names and error messages come from users' files, and a name such
# as "in/[red]x.onnx" must print as itself ("[/x]" would even crash Rich's markup parser).
console = Console(markup=False)
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


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"


def render_metrics(metrics: Any, *, max_layers: int = 40) -> None:
    """Print a Metrics record as a summary table and a per-layer table."""
    summary = Table(title=f"profile of {metrics.model}", show_header=True, header_style="bold")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_column("how", style="dim")
    summary.add_row("params", f"{metrics.params:,}", "counted")
    summary.add_row("MACs", f"{metrics.macs:,}", "counted")
    summary.add_row("size", _bytes(metrics.size_bytes), "measured (file)")
    summary.add_row("peak RAM", _bytes(metrics.peak_ram_bytes), "counted (liveness)")
    if metrics.latency_ms is not None:
        lat = metrics.latency_ms
        summary.add_row(
            "latency p50 / p90 / p99",
            f"{lat.p50:.4g} / {lat.p90:.4g} / {lat.p99:.4g} ms",
            f"measured (ORT, {lat.threads} thread, batch 1)",
        )
    if metrics.accuracy is not None:
        summary.add_row("accuracy (test)", f"{metrics.accuracy:.2%}", "measured (ONNX file)")
    if metrics.estimate is not None:
        est = metrics.estimate
        if est.frontend_latency_ms is not None:
            summary.add_row(
                f"model on {est.target}",
                f"{est.model_latency_ms:,.4g} ms, {est.model_energy_uj:,.1f} uJ",
                "estimated",
            )
            summary.add_row(
                f"audio front end on {est.target}",
                f"{est.frontend_latency_ms:,.4g} ms, {est.frontend_energy_uj or 0.0:,.1f} uJ",
                "estimated (FFT, mel, log, DCT)",
            )
        summary.add_row(f"latency on {est.target}", f"{est.latency_ms:,.4g} ms", "estimated")
        summary.add_row(f"energy on {est.target}", f"{est.energy_uj:,.1f} uJ", "estimated")
    if metrics.fits is not None:
        verdict = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in metrics.fits.items())
        summary.add_row(f"fits {metrics.target}", verdict, "flash: size, RAM: peak")
    console.print(summary)
    render_int8(metrics.int8, is_timed=metrics.latency_ms is not None, model=metrics.model)
    layers = Table(title="layers", header_style="bold")
    for column in ("layer", "op", "dtype", "output", "params", "MACs", "live RAM"):
        right = column in {"params", "MACs", "live RAM"}
        layers.add_column(column, justify="right" if right else "left", no_wrap=True)
    for layer in metrics.layers[:max_layers]:
        layers.add_row(
            layer.name.removeprefix("node_"),
            layer.op_type + (" (fused)" if layer.kind == "fused" else ""),
            layer.dtype,
            "x".join(str(d) for d in layer.output_shape),
            f"{layer.params:,}",
            f"{layer.macs:,}",
            _bytes(layer.live_bytes),
        )
    if len(metrics.layers) > max_layers:
        layers.caption = f"{len(metrics.layers) - max_layers} more layers in the JSON"
    console.print(layers)


@app.command()
def targets() -> None:
    """List the built-in device profiles."""
    from edgeopt.target import Target
    from edgeopt.target import list_targets

    table = Table(title="targets", header_style="bold")
    for column in ("name", "device", "clock", "flash", "RAM", "power", "runtime"):
        table.add_column(column, no_wrap=column in {"name", "clock", "flash", "RAM", "power"})
    for name in list_targets():
        target = Target.from_name(name)
        table.add_row(
            name,
            target.description,
            f"{target.clock_hz / 1e6:,.0f} MHz",
            _bytes(target.flash_bytes),
            _bytes(target.ram_bytes),
            f"{target.active_power_mw:,.1f} mW",
            target.runtime,
        )
    console.print(table)


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
    table = Table(title=f"trained {model} on {dataset.spec}", header_style="bold")
    table.add_column("epoch", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("val accuracy", justify="right")
    for record in result.history:
        table.add_row(str(record.epoch), f"{record.loss:.4f}", f"{record.val_accuracy:.2%}")
    console.print(table)
    console.print(
        f"test accuracy: PyTorch {result.test_accuracy:.2%}, "
        f"ONNX file {files.onnx_test_accuracy:.2%} (measured)"
    )
    console.print(f"wrote {files.onnx_path}, {files.weights_path}, {files.record_path}")


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
    table = Table(
        title=f"distilled {' + '.join(teacher)} into {student} on {dataset.spec}",
        header_style="bold",
    )
    table.add_column("epoch", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("val accuracy", justify="right")
    for record in result.history:
        table.add_row(str(record.epoch), f"{record.loss:.4f}", f"{record.val_accuracy:.2%}")
    console.print(table)
    for note in result.notes:
        console.print(note, style="dim")
    console.print(
        f"test accuracy: teacher {result.teacher_test_accuracy:.2%} ({result.teacher_runtime}), "
        f"student PyTorch {result.test_accuracy:.2%}, ONNX file "
        f"{files.onnx_test_accuracy:.2%} (measured)"
    )
    console.print(f"wrote {files.onnx_path}, {files.weights_path}, {files.record_path}")


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


def render_bench(report: Any) -> None:
    """Print one row per (provider, threads, batch): latency, throughput, energy; then why any
    cell did not run and how each energy figure was obtained (p90 is in the JSON)."""
    from rich import box

    table = Table(title=f"bench of {report.model}", header_style="bold", box=box.SIMPLE_HEAD)
    table.show_edge = False
    columns = ("provider", "threads", "batch", "p50 ms", "p99 ms", "samples/s", "uJ/sample")
    for column in columns:
        table.add_column(column, justify="left" if column == "provider" else "right")
    table.add_column("status")
    notes: dict[str, None] = {}
    for row in report.rows:
        cells = [row.provider, str(row.threads or "—"), str(row.batch or "—")]
        status = row.status.split(":", 1)[0]
        if row.is_ok:
            energy = "—"
            if row.energy_uj is not None:
                energy = f"{row.energy_uj:,.4g}"
                notes[f"energy per sample: {row.energy_method}"] = None
            elif row.energy_note:
                why = f"no energy figure: {row.energy_note}; --target NAME gives an estimate"
                notes[why] = None
            cells += [f"{row.p50_ms:.3g}", f"{row.p99_ms:.3g}"]
            cells += [f"{row.throughput_per_s:,.0f}", energy, status]
        else:
            cells += ["", "", "", "", status]
            where = ", ".join(
                f"{key} {value}"
                for key, value in (("threads", row.threads), ("batch", row.batch))
                if value is not None
            )
            notes[f"{row.provider}{' ' + where if where else ''}: {row.status}"] = None
        table.add_row(*cells)
    env = report.environment
    table.caption = f"ONNX Runtime {env['onnxruntime']}; input: {report.input}"
    console.print(table)
    for note in notes:
        console.print(note, style="dim", highlight=False)
    render_int8(report.int8, is_timed=True, model=report.model)


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


def _change(before: float | None, after: float | None, *, ratio: bool = False) -> str:
    if before is None or after is None:
        return ""
    if ratio:
        return f"{before / after:.2f}x smaller" if after else ""
    return f"{(after - before) * 100:+.2f} pp"


def render_quantize(report: Any) -> None:
    """Print fp32 and quantized side by side, the float operators, and QAT / mixed details."""
    result, fp32, quantized = report.result, report.fp32, report.quantized
    config = result.config
    table = Table(title=f"fp32 vs {config.describe()}", header_style="bold")
    for column in ("metric", "fp32", "quantized", "change", "how"):
        right = column in {"fp32", "quantized"}
        table.add_column(column, justify="right" if right else "left", no_wrap=column != "how")
    if fp32.accuracy is not None and quantized.accuracy is not None:
        table.add_row(
            "accuracy (test)",
            f"{fp32.accuracy:.2%}",
            f"{quantized.accuracy:.2%}",
            _change(fp32.accuracy, quantized.accuracy),
            "measured",
        )
    table.add_row(
        "size",
        f"{fp32.size_bytes:,} B",
        f"{quantized.size_bytes:,} B",
        _change(fp32.size_bytes, quantized.size_bytes, ratio=True),
        "measured",
    )
    if fp32.latency_ms is not None and quantized.latency_ms is not None:
        before, after = fp32.latency_ms.p50, quantized.latency_ms.p50
        table.add_row(
            "latency p50",
            f"{before:.4g} ms",
            f"{after:.4g} ms",
            f"{before / after:.2f}x faster" if after < before else f"{after / before:.2f}x slower",
            f"measured, {quantized.latency_ms.threads} thread",
        )
    if fp32.estimate is not None and quantized.estimate is not None:
        target = quantized.estimate.target
        for name, unit, key in (("energy", "uJ", "energy_uj"), ("latency", "ms", "latency_ms")):
            before, after = getattr(fp32.estimate, key), getattr(quantized.estimate, key)
            table.add_row(
                f"{name} on {target}",
                f"{before:,.4g} {unit}",
                f"{after:,.4g} {unit}",
                f"{after / before - 1:+.0%}" if before else "",
                "estimated",
            )
    console.print(table)
    model = str(result.model.onnx_path)
    render_int8(quantized.int8, is_timed=quantized.latency_ms is not None, model=model)
    if result.qat_accuracy is not None:
        epochs = Table(title="QAT fine-tuning (PyTorch, fake quantization)", header_style="bold")
        for column in ("epoch", "loss", "val accuracy"):
            epochs.add_column(column, justify="right")
        for record in result.history:
            epochs.add_row(str(record.epoch), f"{record.loss:.4f}", f"{record.val_accuracy:.2%}")
        console.print(epochs)
        console.print(
            f"QAT model test accuracy: PyTorch (fake-quant) {result.qat_accuracy:.2%}, "
            f"exported file {quantized.accuracy:.2%} (measured)"
        )
    if result.plan is not None:
        plan = result.plan
        rows = Table(title="per-layer sensitivity (validation, only that layer quantized)")
        headers = ("layer", "op", "params", "float B", "8-bit B", "4-bit B", "drop 8", "drop 4")
        for column in headers:
            rows.add_column(column, justify="left" if column in {"layer", "op"} else "right")
        rows.add_column("chosen", justify="right", style="bold")
        rows.caption = "drops in percentage points of validation accuracy"

        def pp(value: float | None) -> str:
            return "" if value is None else f"{100 * value:+.2f}"

        for row in plan.sensitivity:
            rows.add_row(
                row.layer.removeprefix("node_"),
                row.op_type,
                f"{row.params:,}",
                f"{row.float_bytes:,}",
                f"{row.int8_bytes:,}",
                f"{row.int4_bytes:,}",
                pp(row.drop_8),
                pp(row.drop_4),
                str(plan.bits[row.layer]),
            )
        console.print(rows)
        console.print(
            f"flash budget {plan.budget_bytes:,} B: predicted {plan.predicted_bytes:,} B, "
            f"written {plan.size_bytes:,} B (measured); predicted drop "
            f"{100 * plan.predicted_drop:.2f} pp, validation drop {100 * plan.validation_drop:.2f}"
            " pp (measured)"
        )
    floats = ", ".join(result.float_nodes) if result.float_nodes else "none"
    console.print(f"operators left in float: {floats}")
    console.print(f"wrote {result.model.onnx_path}, {report.record_path}")


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


def render_prune(report: Any) -> None:
    """Print source, pruned and decoded side by side, the per-layer table and the skipped."""
    result = report.result
    config = result.config
    columns = [("source", report.source), ("pruned", report.pruned)]
    if report.decoded is not None:
        columns.append(("decoded .edc", report.decoded))
    table = Table(
        title=f"{config.granularity} pruning, ratio {config.ratio} ({result.model.spec})",
        header_style="bold",
    )
    table.add_column("metric", no_wrap=True)
    for name, _ in columns:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("how", style="dim")
    threads = report.pruned.latency_ms.threads
    table.caption = f"latency: ONNX Runtime, {threads} thread, batch 1; MACs: dense"

    def row(label: str, how: str, cell: Any) -> None:
        table.add_row(label, *(cell(metrics) for _, metrics in columns), how)

    row("accuracy", "measured", lambda m: f"{m.accuracy:.2%}")
    row("params", "counted", lambda m: f"{m.params:,}")
    row("MACs", "counted", lambda m: f"{m.macs:,}")
    row("size_bytes", "measured", lambda m: f"{m.size_bytes:,}")
    if report.compression is not None:
        edc = report.compression.compressed_bytes
        table.add_row(
            "compressed_bytes",
            f"{report.source_compressed_bytes:,}",
            "",
            f"{edc:,} ({report.compression_ratio:.1f}x)",
            "measured",
        )
    row("latency p50", "measured", lambda m: f"{m.latency_ms.p50:.4g} ms")
    target = report.pruned.estimate.target
    row(f"energy {target}", "estimated", lambda m: f"{m.estimate.energy_uj:,.1f} uJ")
    console.print(table)
    layers = Table(title="per layer", header_style="bold")
    unit = result.layers[0].unit if result.layers else "weights"
    for column in ("layer", "type", f"{unit} before", f"{unit} kept", "pruned"):
        layers.add_column(column, justify="left" if column in {"layer", "type"} else "right")
    for layer in result.layers:
        layers.add_row(
            layer.name,
            layer.layer_type,
            f"{layer.original:,}",
            f"{layer.remaining:,}",
            f"{layer.sparsity:.1%}",
        )
    layers.caption = (
        f"{result.sparsity:.1%} of Conv/Linear weights pruned, "
        f"{result.mac_reduction:.1%} of dense MACs removed"
    )
    console.print(layers)
    for skipped in result.skipped:
        console.print(f"skipped {skipped.name}: {skipped.reason}")
    for note in result.notes:
        console.print(note, style="dim")
    written = [report.onnx_path, report.weights_path, report.record_path]
    if report.compressed_path is not None:
        written.append(report.compressed_path)
    console.print(f"wrote {', '.join(str(path) for path in written)}")


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


def render_fold(folded: Any, *, source: Path) -> None:
    """Print where the normalization went and the parity of the folded file with its source."""
    norm = folded.normalization
    mean = ", ".join(f"{v:.4g}" for v in norm.mean)
    std = ", ".join(f"{v:.4g}" for v in norm.std)
    console.print(
        f"wrote {folded.path}: input {folded.raw_dtype} (raw), normalization (x - [{mean}]) / "
        f"[{std}] {folded.method}"
    )
    if folded.top1_agreement is not None:
        console.print(
            f"parity with {source} on {folded.samples} test samples (raw vs normalized input): "
            f"top-1 agreement {folded.top1_agreement:.2%}, largest output difference "
            f"{folded.max_abs_diff:.3g} (measured, ONNX Runtime)"
        )


def render_int8(int8: Any, *, is_timed: bool = False, model: str = "FILE") -> None:
    """One line on how an int8 file's numbers were computed on this host; with ``is_timed``,
    a warning where ONNX Runtime does not compute the timed file (as shipped) exactly here."""
    if int8 is None:
        return
    console.print(int8.describe(), style="dim", highlight=False)
    if is_timed and not int8.is_shipped_exact:
        hint = ""
        if int8.host.is_saturating:
            hint = (
                f" For ONNX Runtime on this host, edgeopt export {model} --format onnx "
                "--weight-type uint8 -o OUT.onnx writes a file whose layers do not saturate."
            )
        console.print(
            "note: ONNX Runtime on this host does not compute this file's int8 layers as a "
            "device does; latencies are of the file as shipped, and its outputs here differ "
            "from the integers (edgeopt's accuracy figures take the exact path)." + hint,
            style="yellow",
            highlight=False,
        )


def render_uint8(done: Any) -> None:
    """Print what ``--weight-type uint8`` changed and, with data, both files side by side."""
    console.print(
        f"wrote {done.path}: {done.constants} weight tensors and {done.activations} int8 "
        "activations stored as uint8 with the zero point moved by 128 (the same numbers)",
        highlight=False,
    )
    if done.uint8_outputs:
        names = ", ".join(done.uint8_outputs)
        console.print(f"outputs now uint8 (+128): {names}", highlight=False)
    before, after = done.source_metrics, done.metrics
    if before is None or after is None:
        return
    table = Table(title="int8 weights (as quantized) vs uint8 weights", header_style="bold")
    for column in ("metric", "int8 weights", "uint8 weights", "how"):
        table.add_column(column, justify="left" if column in ("metric", "how") else "right")
    table.add_row(
        "accuracy (test)",
        f"{before.accuracy:.2%}",
        f"{after.accuracy:.2%}",
        "measured, exact integers",
    )
    if before.latency_ms is not None and after.latency_ms is not None:
        table.add_row(
            "latency p50",
            f"{before.latency_ms.p50:.4g} ms",
            f"{after.latency_ms.p50:.4g} ms",
            f"measured, file as shipped, {after.latency_ms.threads} thread",
        )
    if before.int8 is not None and after.int8 is not None:
        verdicts = ["exact" if m.int8.is_shipped_exact else "NOT exact" for m in (before, after)]
        table.add_row("ONNX Runtime here", *verdicts, "the file as shipped vs the integers")
    console.print(table)
    if before.int8 is not None:
        console.print(before.int8.host.describe(), style="dim", highlight=False)


def render_c_export(export: Any, size: Any, parity: Any, *, command: str) -> None:
    """Print what the C exporter wrote, its build sizes and the parity check (or its command)."""
    table = Table(title=f"C library {export.out_dir}", header_style="bold")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_column("how", style="dim")
    for path in export.files:
        table.add_row(path.name, _bytes(path.stat().st_size), "file")
    table.add_row("arena (RAM)", _bytes(export.arena_bytes), "planned: first fit over liveness")
    table.add_row("liveness peak", _bytes(export.peak_ram_bytes), "counted (lower bound)")
    table.add_row("weights (flash)", _bytes(export.weights_bytes), "counted: const arrays")
    if size is not None:
        table.add_row(
            "flash",
            _bytes(size.flash_bytes),
            f"measured: text + rodata + data, {size.compiler} -O2",
        )
        table.add_row("RAM", _bytes(size.ram_bytes), "measured: data + bss")
    else:
        table.add_row("flash", _bytes(export.weights_bytes), "estimated: weights, code not counted")
    x = f"{export.input_type} {'x'.join(map(str, export.input_shape))}"
    if export.has_raw_input:
        how = "raw values (normalization folded in, a 256-entry table)"
    else:
        how = f"scale {export.input_scale:.6g}, zero point {export.input_zero_point}"
    table.add_row("input", x, how)
    y = f"{export.output_type} {'x'.join(map(str, export.output_shape))}"
    how = "float" if export.output_scale is None else f"scale {export.output_scale:.6g}"
    table.add_row("output", y, how)
    console.print(table)
    if parity is not None:
        steps = "" if parity.max_output_steps is None else f", {parity.max_output_steps:g} steps"
        console.print(
            f"parity with ONNX Runtime on {parity.samples} samples: top-1 agreement "
            f"{parity.top1_agreement:.2%}, largest int8 difference {parity.max_tensor_lsb} LSB, "
            f"output difference {parity.max_output_diff:.3g}{steps} (measured, {parity.compiler})"
        )
        render_int8(parity.arithmetic)
    else:
        console.print(f"check it against ONNX Runtime: {command} --force --data SPEC")


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


def render_optimize(result: Any) -> None:
    """Print the Pareto front (and the closest candidates when none fits), the choice, the files."""
    report = result.report
    from rich import box

    shown = {report["chosen"], *report["closest"]}
    rows = [c for c in report["candidates"] if c["is_pareto"] or c["trial"] in shown]
    study = report["study"]
    table = Table(
        title=f"optimize {report['model']} for {report['target']['name']}: "
        f"{study['trials_complete']} trials complete, {study['trials_failed']} failed",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for column in ("#", "recipe", "acc", "drop", "ms", "uJ", "flash", "RAM", "fits"):
        table.add_column(column, justify="left" if column == "recipe" else "right", no_wrap=True)
    table.columns[1].no_wrap = False
    table.columns[1].min_width = 20
    baseline = report["baseline"]

    def add(record: dict[str, Any], name: str, style: str | None = None) -> None:
        from edgeopt.search import Recipe

        recipe = name or Recipe.from_dict(record["recipe"]).describe()
        table.add_row(
            str(record["trial"]),
            recipe,
            f"{record['accuracy']:.2%}",
            f"{record['accuracy_drop_pp']:+.2f}",
            f"{record['latency_ms']:,.3g}",
            f"{record['energy_uj']:,.1f}",
            _bytes(record["flash_bytes"]),
            _bytes(record["ram_bytes"]),
            "yes" if record["is_feasible"] else "NO",
            style=style,
        )

    add(baseline, "baseline", "dim")
    for record in rows:
        add(record, "", "bold green" if record["trial"] == report["chosen"] else None)
    table.caption = (
        "the Pareto front (and the pick); accuracy measured on the ONNX test split (drop in "
        f"pp), latency (ms) and energy (uJ) estimated for {report['target']['name']}; chosen in "
        "green"
    )
    console.print(table)
    if result.is_feasible:
        console.print(f"chosen: trial {report['chosen']}, wrote {result.model_path}")
    else:
        console.print(Text.assemble(("no candidate fits:", "bold red"), f" {result.explanation}"))
        for path in result.closest_paths:
            console.print(f"closest candidate saved: {path}")
    paths = ", ".join(str(path) for path in result.report_paths)
    console.print(f"report: {paths}; study {study['name']} in {study['storage']}")
    running = study.get("trials_running") or []
    if running:
        numbers = ", ".join(str(number) for number in running)
        console.print(
            f"warning: trial(s) {numbers} were still running on other workers after the wait; "
            "this report leaves them out. Run the same command again once they finish: it "
            "reports on the whole study.",
            style="yellow",
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
