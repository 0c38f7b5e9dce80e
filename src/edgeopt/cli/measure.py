"""``edgeopt targets``, ``profile`` and ``bench``: the device profiles and what a model measures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli._common import DataOpt
from edgeopt.cli._common import ModelArg
from edgeopt.cli._common import WeightsOpt
from edgeopt.cli._common import comma_list
from edgeopt.cli._common import console
from edgeopt.cli._common import int_list
from edgeopt.cli._progress import status
from edgeopt.report.console import render_bench
from edgeopt.report.console import render_metrics
from edgeopt.report.console import render_targets


def targets() -> None:
    """List the built-in device profiles."""
    from edgeopt.target import Target
    from edgeopt.target import list_targets

    render_targets([Target.from_name(name) for name in list_targets()])


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
        batches=int_list(batch, "--batch"),
        threads=int_list(threads, "--threads"),
        providers=comma_list(provider),
        target=target,
    )
    with status("benching"):
        report = bench_model(model, config, data=data, weights=weights)
    render_bench(report)
    if json_path is not None:
        write_json(json_path, report.to_dict())
        console.print(f"wrote {json_path}")
