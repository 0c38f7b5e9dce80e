"""The ``edgeopt`` command: parse arguments, call the library, render the result.

No logic lives here: every command is one library call plus a Rich rendering. Errors raised on
purpose (:class:`edgeopt.errors.EdgeoptError`) become one line on stderr and their exit code (2
for bad input); nothing is written when a command fails.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from edgeopt.errors import EdgeoptError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fit trained neural networks to low-power devices, measured on the exported artifact.",
)
console = Console()
err_console = Console(stderr=True)

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
        summary.add_row(f"latency on {est.target}", f"{est.latency_ms:,.4g} ms", "estimated")
        summary.add_row(f"energy on {est.target}", f"{est.energy_uj:,.1f} uJ", "estimated")
    if metrics.fits is not None:
        verdict = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in metrics.fits.items())
        summary.add_row(f"fits {metrics.target}", verdict, "flash: size, RAM: peak")
    console.print(summary)
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
def profile(
    model: ModelArg,
    data: DataOpt = None,
    target: Annotated[str | None, typer.Option(help="target name or YAML file")] = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for latency")] = 1,
    json_path: Annotated[Path | None, typer.Option("--json", help="write Metrics as JSON")] = None,
    weights: WeightsOpt = None,
) -> None:
    """Measure a model on its exported ONNX artifact (a PyTorch model is exported first)."""
    from edgeopt._io import write_json
    from edgeopt.measure import profile as profile_model

    metrics = profile_model(model, data=data, target=target, threads=threads, weights=weights)
    render_metrics(metrics)
    if json_path is not None:
        write_json(json_path, metrics.to_dict())
        console.print(f"wrote {json_path}")


def main() -> None:
    """Entry point: run the app, turning edgeopt's own errors into one line and an exit code."""
    try:
        app()
    except EdgeoptError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
