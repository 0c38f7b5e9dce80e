"""The Rich tables and lines the ``edgeopt`` command prints, one ``render_*`` per result.

Renderers only lay out numbers recorded before (they never measure or train), so a script can
show a result as the command does (``examples/demo.py``). Each prints to ``console``, by default
:data:`STDOUT`, which has no markup: file names, node names and error messages come from users'
files, and a name such as "in/[red]x.onnx" must print as itself ("[/x]" would even crash Rich's
markup parser).
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeopt.search.select import DEFAULT_MAX_ACCURACY_DROP_PP

__all__ = [
    "STDOUT",
    "accuracy_budget",
    "format_bytes",
    "render_bench",
    "render_c_export",
    "render_distill",
    "render_export",
    "render_fold",
    "render_int8",
    "render_metrics",
    "render_optimize",
    "render_prune",
    "render_quantize",
    "render_run",
    "render_targets",
    "render_tflite",
    "render_train",
    "render_uint8",
]

#: Where the renderers print unless given a console: stdout, without markup.
STDOUT = Console(markup=False)


def format_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"


def _table(title: str, *, is_compact: bool = False) -> Table:
    """A table of the console; ``is_compact``: no lines between columns and one space of padding
    (tables with many columns, which must fit 80 columns)."""
    if not is_compact:
        return Table(title=title, header_style="bold")
    return Table(
        title=title,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )


def _columns(
    table: Table, *headers: str, numbers: Collection[str] = (), whole: Collection[str] = ()
) -> None:
    """Add columns whose values show whole, never cut short with an ellipsis: ``numbers`` are
    right-aligned and ``whole`` (row labels, short names) left-aligned, neither wrapped; other
    text wraps at spaces and folds a word longer than its column."""
    for header in headers:
        if header in numbers or header in whole:
            justify = "right" if header in numbers else "left"
            table.add_column(header, justify=justify, no_wrap=True)
        else:
            table.add_column(header, overflow="fold")


def render_targets(targets: Sequence[Any], *, console: Console | None = None) -> None:
    """Print the device profiles: name, device, runtime and validated error, clock, flash, RAM
    and power.

    Device and runtime share a column, and the four numbers stack in one, so that the
    descriptions have room at 80 columns."""
    out = console or STDOUT
    table = _table("targets")
    _columns(table, "name", "device and runtime", "hardware", whole=("name", "hardware"))
    for target in targets:
        hardware = (
            f"{target.clock_hz / 1e6:,.0f} MHz",
            f"{format_bytes(target.flash_bytes)} flash",
            f"{format_bytes(target.ram_bytes)} RAM",
            f"{target.active_power_mw:,.1f} mW",
        )
        device = Text(target.description)
        device.append(f"\nruntime: {target.runtime}", style="dim")
        device.append(f"\nerror: {target.error_label}", style="dim")
        table.add_row(target.name, device, "\n".join(hardware))
    out.print(table)


def _history(title: str, history: Sequence[Any]) -> Table:
    """One row per epoch: loss and validation accuracy."""
    table = _table(title)
    _columns(table, "epoch", "loss", "val accuracy", numbers=("epoch", "loss", "val accuracy"))
    for record in history:
        table.add_row(str(record.epoch), f"{record.loss:.4f}", f"{record.val_accuracy:.2%}")
    return table


def _written(result: Any) -> str:
    return ", ".join(str(path) for key, path in result.files.items() if key != "record") + (
        f", {result.record_path}"
    )


def render_train(result: Any, *, title: str, console: Console | None = None) -> None:
    """Print the epochs of ``train`` (a :class:`edgeopt.pipeline.Result`), both test
    accuracies and the files written."""
    out = console or STDOUT
    trained = result.output("train")
    out.print(_history(title, trained.history))
    out.print(
        f"test accuracy: PyTorch {trained.test_accuracy:.2%}, "
        f"ONNX file {result.after.accuracy:.2%} (measured)"
    )
    out.print(f"wrote {_written(result)}")


def render_distill(result: Any, *, title: str, console: Console | None = None) -> None:
    """Print the epochs of ``distill``, its notes, the teacher's and the student's accuracies."""
    out = console or STDOUT
    made = result.output("distill")
    out.print(_history(title, made.history))
    for note in made.notes:
        out.print(note, style="dim")
    out.print(
        f"test accuracy: teacher {made.teacher_test_accuracy:.2%} ({made.teacher_runtime}), "
        f"student PyTorch {made.test_accuracy:.2%}, ONNX file "
        f"{result.after.accuracy:.2%} (measured)"
    )
    out.print(f"wrote {_written(result)}")


def render_metrics(metrics: Any, *, max_layers: int = 40, console: Console | None = None) -> None:
    """Print a Metrics record as a summary table and a per-layer table."""
    out = console or STDOUT
    summary = _table(f"profile of {metrics.model}")
    _columns(summary, "metric", "value", "how", numbers=("value",), whole=("metric",))
    summary.columns[2].style = "dim"
    batch = getattr(metrics, "batch", 1)
    at_batch = f", batch {batch}" if batch != 1 else ""
    summary.add_row("batch", f"{batch:,}", _batch_how(metrics))
    summary.add_row("params", f"{metrics.params:,}", "counted")
    uncounted = metrics.uncounted_ops or ()
    bound = " (lower bound)" if uncounted else ""
    summary.add_row("MACs", f"{metrics.macs:,}", f"counted{at_batch}{bound}")
    if batch > 1:
        summary.add_row("MACs per sample", f"{metrics.macs / batch:,.0f}", "counted / batch")
    summary.add_row("size", format_bytes(metrics.size_bytes), "measured (file)")
    peak = format_bytes(metrics.peak_ram_bytes)
    summary.add_row("peak RAM", peak, f"counted (liveness{at_batch})")
    if metrics.latency_ms is not None:
        lat = metrics.latency_ms
        summary.add_row(
            "latency p50 / p90 / p99",
            f"{lat.p50:.4g} / {lat.p90:.4g} / {lat.p99:.4g} ms",
            f"measured (ORT, {lat.threads} thread, batch {lat.batch})",
        )
        if lat.batch > 1:
            summary.add_row(
                "latency p50 per sample", f"{lat.p50 / lat.batch:.4g} ms", "measured / batch"
            )
    if metrics.accuracy is not None:
        summary.add_row("accuracy (test)", f"{metrics.accuracy:.2%}", "measured (ONNX file)")
    if metrics.estimate is not None:
        est = metrics.estimate
        how = "estimated (lower bound)" if est.uncounted_ops else "estimated"
        if est.frontend_latency_ms is not None:
            summary.add_row(
                f"model on {est.target}",
                f"{est.model_latency_ms:,.4g} ms, {est.model_energy_uj:,.1f} uJ",
                how,
            )
            summary.add_row(
                f"audio front end on {est.target}",
                f"{est.frontend_latency_ms:,.4g} ms, {est.frontend_energy_uj or 0.0:,.1f} uJ",
                "estimated (FFT, mel, log, DCT)",
            )
        npu = est.detail if "sram_bytes" in est.detail else {}  # Ethos-U: Vela's figures
        summary.add_row(f"latency on {est.target}", f"{est.latency_ms:,.4g} ms", est.source or how)
        summary.add_row(
            f"energy on {est.target}", f"{est.energy_uj:,.1f} uJ", npu.get("energy_how", how)
        )
        if npu:
            summary.add_row("SRAM (Vela)", format_bytes(npu["sram_bytes"]), est.source)
            offchip = f"{format_bytes(npu['offchip_bytes'])} {npu['offchip_memory']}"
            summary.add_row("off-chip (Vela)", offchip, est.source)
            cpu = ", ".join(f"{op['count']} {op['op_type']}" for op in npu["cpu_operators"])
            summary.add_row("CPU operators", Text(cpu or "none"), "Vela; host core")
    if metrics.fits is not None:
        verdict = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in metrics.fits.items())
        basis = "flash: size, RAM: peak"
        if metrics.estimate is not None and "sram_bytes" in metrics.estimate.detail:
            basis = "Vela: off-chip, SRAM"
        summary.add_row(f"fits {metrics.target}", verdict, basis)
    out.print(summary)
    if metrics.accuracy is not None and "accuracy" in metrics.provenance:
        out.print(f"accuracy {metrics.provenance['accuracy']}", style="dim", highlight=False)
    for note in getattr(metrics, "notes", ()):
        out.print(f"note: {note}", style="dim", highlight=False, markup=False)
    if uncounted:
        shown = ", ".join(uncounted[:8]) + (
            f" and {len(uncounted) - 8} more" if len(uncounted) > 8 else ""
        )
        out.print(
            f"note: the cost of {len(uncounted)} operator(s) is unknown, left out of MACs and "
            f"priced by output size only in the estimate: {shown}.",
            style="yellow",
            highlight=False,
        )
    render_int8(
        metrics.int8, is_timed=metrics.latency_ms is not None, model=metrics.model, console=out
    )
    layers = _table("layers", is_compact=True)
    numbers = ("params", "MACs", "live RAM")
    _columns(layers, "layer", "op", "dtype", "output", *numbers, numbers=numbers, whole=("dtype",))
    for layer in metrics.layers[:max_layers]:
        layers.add_row(
            layer.name.removeprefix("node_"),
            layer.op_type + (" (fused)" if layer.kind == "fused" else ""),
            layer.dtype,
            "x".join(str(d) for d in layer.output_shape),
            f"{layer.params:,}",
            f"{layer.macs:,}",
            format_bytes(layer.live_bytes),
        )
    if len(metrics.layers) > max_layers:
        layers.caption = f"{len(metrics.layers) - max_layers} more layers in the JSON"
    out.print(layers)


def _batch_how(metrics: Any) -> str:
    """The batch row's how: fixed in the file, or a symbol bound to 1 (from the provenance)."""
    how = metrics.provenance.get("batch", "")
    return how.split(": ", 1)[1].split(";")[0] if ": " in how else "counted"


def render_int8(
    int8: Any, *, is_timed: bool = False, model: str = "FILE", console: Console | None = None
) -> None:
    """One line on how an int8 file's numbers were computed on this host; with ``is_timed``,
    a warning where ONNX Runtime does not compute the timed file (as shipped) exactly here."""
    out = console or STDOUT
    if int8 is None:
        return
    out.print(int8.describe(), style="dim", highlight=False)
    if is_timed and not int8.is_shipped_exact:
        hint = ""
        if int8.host.is_saturating:
            hint = (
                f" For ONNX Runtime on this host, edgeopt export {model} --format onnx "
                "--weight-type uint8 -o OUT.onnx writes a file whose layers do not saturate."
            )
        out.print(
            "note: ONNX Runtime on this host does not compute this file's int8 layers as a "
            "device does; latencies are of the file as shipped, and its outputs here differ "
            "from the integers (edgeopt's accuracy figures take the exact path)." + hint,
            style="yellow",
            highlight=False,
        )


def render_bench(report: Any, *, console: Console | None = None) -> None:
    """Print one row per (provider, threads, batch): latency, throughput, energy; then why any
    cell did not run and how each energy figure was obtained (p90 is in the JSON)."""
    out = console or STDOUT
    table = _table(f"bench of {report.model}", is_compact=True)
    numbers = ("threads", "batch", "p50 ms", "p99 ms", "samples/s", "uJ/sample")
    _columns(table, "provider", *numbers, "status", numbers=numbers, whole=("provider", "status"))
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
    out.print(table)
    for note in notes:
        out.print(note, style="dim", highlight=False)
    render_int8(report.int8, is_timed=True, model=report.model, console=out)


def _change(before: float | None, after: float | None, *, ratio: bool = False) -> str:
    if before is None or after is None:
        return ""
    if ratio:
        return f"{before / after:.2f}x smaller" if after else ""
    return f"{(after - before) * 100:+.2f} pp"


def render_run(result: Any, *, console: Console | None = None) -> None:
    """Print a recipe run (:func:`edgeopt.pipeline.run`): the input and the file after each
    step, measured, and the estimate on the target where one was given."""
    out = console or STDOUT
    table = _table(f"apply {result.recipe.describe()}", is_compact=True)
    headers = ("after", "accuracy", "size", "MACs", "RAM", "est. ms")
    _columns(table, *headers, numbers=headers[1:], whole=("after",))
    rows = [("input (fp32)", result.before)] + [(s.label, s.metrics) for s in result.steps]
    for label, metrics in rows:
        estimate = metrics.estimate
        table.add_row(
            label,
            f"{metrics.accuracy:.2%}" if metrics.accuracy is not None else "-",
            f"{metrics.size_bytes:,} B",
            f"{metrics.macs:,}",
            f"{metrics.peak_ram_bytes:,} B",
            f"{estimate.latency_ms:.4g}" if estimate is not None else "-",
        )
    out.print(table)
    after = result.after
    out.print(
        f"wrote {result.path} ({result.recipe.describe()}): test accuracy {after.accuracy:.2%} "
        f"(measured on the ONNX file), {after.size_bytes:,} bytes; record {result.record_path}"
    )


def render_quantize(report: Any, *, console: Console | None = None) -> None:
    """Print fp32 and quantized side by side (a one-step :class:`edgeopt.pipeline.Result`),
    the float operators, and QAT / mixed details."""
    out = console or STDOUT
    result, fp32, quantized = report.output("quantize"), report.before, report.after
    config = result.config
    table = _table(f"fp32 vs {config.describe()}", is_compact=True)
    numbers = ("fp32", "quantized")
    _columns(
        table, "metric", *numbers, "change", "how", numbers=numbers, whole=("metric", "change")
    )
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
    out.print(table)
    model = str(result.model.onnx_path)
    render_int8(quantized.int8, is_timed=quantized.latency_ms is not None, model=model, console=out)
    if result.qat_accuracy is not None:
        out.print(_history("QAT fine-tuning (PyTorch, fake quantization)", result.history))
        out.print(
            f"QAT model test accuracy: PyTorch (fake-quant) {result.qat_accuracy:.2%}, "
            f"exported file {quantized.accuracy:.2%} (measured)"
        )
    if result.plan is not None:
        plan = result.plan
        rows = _table(
            "per-layer sensitivity (validation, only that layer quantized)", is_compact=True
        )
        numbers = ("params", "float B", "8-bit B", "4-bit B", "drop 8", "drop 4", "chosen")
        _columns(rows, "layer", "op", *numbers, numbers=numbers)
        rows.columns[-1].style = "bold"
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
        out.print(rows)
        out.print(
            f"flash budget {plan.budget_bytes:,} B: predicted {plan.predicted_bytes:,} B, "
            f"written {plan.size_bytes:,} B (measured); predicted drop "
            f"{100 * plan.predicted_drop:.2f} pp, validation drop {100 * plan.validation_drop:.2f}"
            " pp (measured)"
        )
    floats = ", ".join(result.float_nodes) if result.float_nodes else "none"
    out.print(f"operators left in float: {floats}")
    for note in getattr(result, "notes", ()):  # what a file from elsewhere needed first
        out.print(f"note: {note}", style="dim", highlight=False, markup=False)
    out.print(f"wrote {_written(report)}")


def render_prune(report: Any, *, console: Console | None = None) -> None:
    """Print source, pruned and decoded side by side (a :class:`edgeopt.pipeline.Result` of a
    prune recipe), the per-layer table and the skipped layers."""
    out = console or STDOUT
    result, compressed = report.output("prune"), report.compressed
    config = result.config
    columns = [("source", report.before), ("pruned", report.after)]
    if compressed is not None:
        columns.append(("decoded .edc", compressed.decoded))
    table = _table(f"{config.granularity} pruning, ratio {config.ratio} ({result.model.spec})")
    names = [name for name, _ in columns]
    _columns(table, "metric", *names, "how", numbers=names, whole=("metric",))
    table.columns[-1].style = "dim"
    threads = report.after.latency_ms.threads
    table.caption = f"latency: ONNX Runtime, {threads} thread, batch 1; MACs: dense"

    def row(label: str, how: str, cell: Any) -> None:
        table.add_row(label, *(cell(metrics) for _, metrics in columns), how)

    row("accuracy", "measured", lambda m: f"{m.accuracy:.2%}")
    row("params", "counted", lambda m: f"{m.params:,}")
    row("MACs", "counted", lambda m: f"{m.macs:,}")
    row("size_bytes", "measured", lambda m: f"{m.size_bytes:,}")
    if compressed is not None:
        edc = compressed.report.compressed_bytes
        table.add_row(
            "compressed_bytes",
            f"{compressed.source_bytes:,}",
            "",
            f"{edc:,} ({report.before.size_bytes / max(1, edc):.1f}x)",
            "measured",
        )
    row("latency p50", "measured", lambda m: f"{m.latency_ms.p50:.4g} ms")
    target = report.after.estimate.target
    row(f"energy {target}", "estimated", lambda m: f"{m.estimate.energy_uj:,.1f} uJ")
    out.print(table)
    layers = _table("per layer")
    unit = result.layers[0].unit if result.layers else "weights"
    numbers = (f"{unit} before", f"{unit} kept", "pruned")
    _columns(layers, "layer", "type", *numbers, numbers=numbers)
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
    out.print(layers)
    for skipped in result.skipped:
        out.print(f"skipped {skipped.name}: {skipped.reason}")
    for note in result.notes:
        out.print(note, style="dim")
    out.print(f"wrote {_written(report)}")


def render_fold(folded: Any, *, source: Path, console: Console | None = None) -> None:
    """Print where the normalization went and the parity of the folded file with its source."""
    out = console or STDOUT
    norm = folded.normalization
    mean = ", ".join(f"{v:.4g}" for v in norm.mean)
    std = ", ".join(f"{v:.4g}" for v in norm.std)
    out.print(
        f"wrote {folded.path}: input {folded.raw_dtype} (raw), normalization (x - [{mean}]) / "
        f"[{std}] {folded.method}"
    )
    if folded.top1_agreement is not None:
        out.print(
            f"parity with {source} on {folded.samples} test samples (raw vs normalized input): "
            f"top-1 agreement {folded.top1_agreement:.2%}, largest output difference "
            f"{folded.max_abs_diff:.3g} (measured, ONNX Runtime)"
        )


def render_uint8(done: Any, *, console: Console | None = None) -> None:
    """Print what ``--weight-type uint8`` changed and, with data, both files side by side."""
    out = console or STDOUT
    out.print(
        f"wrote {done.path}: {done.constants} weight tensors and {done.activations} int8 "
        "activations stored as uint8 with the zero point moved by 128 (the same numbers)",
        highlight=False,
    )
    if done.uint8_outputs:
        names = ", ".join(done.uint8_outputs)
        out.print(f"outputs now uint8 (+128): {names}", highlight=False)
    before, after = done.source_metrics, done.metrics
    if before is None or after is None:
        return
    table = _table("int8 weights (as quantized) vs uint8 weights")
    numbers = ("int8 weights", "uint8 weights")
    _columns(table, "metric", *numbers, "how", numbers=numbers, whole=("metric",))
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
    out.print(table)
    if before.int8 is not None:
        out.print(before.int8.host.describe(), style="dim", highlight=False)


def render_c_export(
    export: Any, size: Any, parity: Any, *, command: str, console: Console | None = None
) -> None:
    """Print what the C exporter wrote, its build sizes and the parity check (or its command)."""
    out = console or STDOUT
    table = _table(f"C library {export.out_dir}")
    _columns(table, "item", "value", "how", numbers=("value",))
    table.columns[-1].style = "dim"
    for path in export.files:
        table.add_row(path.name, format_bytes(path.stat().st_size), "file")
    table.add_row(
        "arena (RAM)", format_bytes(export.arena_bytes), "planned: first fit over liveness"
    )
    table.add_row("liveness peak", format_bytes(export.peak_ram_bytes), "counted (lower bound)")
    table.add_row("weights (flash)", format_bytes(export.weights_bytes), "counted: const arrays")
    if size is not None:
        table.add_row(
            "flash",
            format_bytes(size.flash_bytes),
            f"measured: text + rodata + data, {size.compiler} -O2",
        )
        table.add_row("RAM", format_bytes(size.ram_bytes), "measured: data + bss")
    else:
        table.add_row(
            "flash", format_bytes(export.weights_bytes), "estimated: weights, code not counted"
        )
    x = f"{export.input_type} {'x'.join(map(str, export.input_shape))}"
    if export.has_raw_input:
        how = "raw values (normalization folded in, a 256-entry table)"
    else:
        how = f"scale {export.input_scale:.6g}, zero point {export.input_zero_point}"
    table.add_row("input", x, how)
    y = f"{export.output_type} {'x'.join(map(str, export.output_shape))}"
    how = "float" if export.output_scale is None else f"scale {export.output_scale:.6g}"
    table.add_row("output", y, how)
    out.print(table)
    if parity is not None:
        steps = "" if parity.max_output_steps is None else f", {parity.max_output_steps:g} steps"
        out.print(
            f"parity with ONNX Runtime on {parity.samples} samples: top-1 agreement "
            f"{parity.top1_agreement:.2%}, largest int8 difference {parity.max_tensor_lsb} LSB, "
            f"output difference {parity.max_output_diff:.3g}{steps} (measured, {parity.compiler})"
        )
        render_int8(parity.arithmetic, console=out)
    else:
        out.print(f"check it against ONNX Runtime: {command} --force --data SPEC")


def render_tflite(report: Any, *, command: str, console: Console | None = None) -> None:
    """Print the ``.tflite`` file beside edgeopt's C library of the same model (TFLite Micro's
    arena and the file against the C arena and flash), then the parity check or its command."""
    out = console or STDOUT
    export = report.export
    kind = "full int8" if export.is_int8 else "float32"
    table = _table(f"TFLite {export.path} ({kind}, {len(export.operators)} operators)")
    numbers = ("TFLite Micro", "edgeopt C")
    _columns(table, "memory", *numbers, "how", numbers=numbers, whole=("memory",))
    table.columns[-1].style = "dim"

    def cell(value: int | None) -> str:
        return "-" if value is None else format_bytes(value)

    table.add_row(
        "arena (RAM)",
        cell(export.arena_bytes),
        cell(report.c_arena_bytes),
        "measured: TFLM's recording allocator | planned C arena",
    )
    if export.arena_planned_bytes is not None:
        table.add_row(
            "of which activations",
            cell(export.arena_planned_bytes),
            cell(report.c_arena_bytes),
            "TFLM's planned head (the rest: interpreter structures)",
        )
    table.add_row(
        "model (flash)",
        cell(export.size_bytes),
        cell(report.c_flash_bytes),
        ".tflite file (runtime not counted) | C text + rodata + data",
    )
    out.print(table)
    for what, shape, quantization in (
        ("input", export.input_shape, export.input_quantization),
        ("output", export.output_shape, export.output_quantization),
    ):
        dtype = "int8" if quantization is not None else "float32"
        how = (
            ""
            if quantization is None
            else (f", scale {quantization[0]:.6g}, zero point {quantization[1]}")
        )
        layout = " (NHWC)" if len(shape) == 4 else ""
        dims = "x".join(map(str, shape))
        out.print(f"{what}: {dtype} {dims}{layout}{how}", highlight=False)
    if report.c_note:
        out.print(report.c_note, style="dim", highlight=False)
    parity = report.parity
    if parity is None:
        out.print(f"check it in TFLite Micro: {command} --data SPEC", highlight=False)
    elif parity.max_lsb is not None:
        out.print(
            f"TFLite Micro vs the exact int8 reference on {parity.samples} samples: top-1 "
            f"agreement {parity.top1_agreement:.2%}, largest output difference "
            f"{parity.max_lsb} LSB on {parity.differing_fraction:.2%} of the outputs (measured)",
            highlight=False,
        )
    else:
        out.print(
            f"TFLite Micro vs ONNX Runtime (float) on {parity.samples} samples: top-1 "
            f"agreement {parity.top1_agreement:.2%}, largest relative difference "
            f"{parity.max_relative_error:.2g} (measured)",
            highlight=False,
        )


def render_cortexm(run: Any, *, console: Console | None = None) -> None:
    """Print a :class:`~edgeopt.measure.cortexm.CortexMRun`: instructions per layer and per
    inference on the emulated core (measured), then cycles and time (estimated)."""
    from rich.markup import escape

    out = console or STDOUT
    core = run.core
    table = _table(f"{core.name} ({core.machine}, emulated): instructions per layer")
    _columns(
        table,
        "#",
        "layer",
        "kernel",
        "MACs",
        "instructions",
        "per MAC",
        numbers=("#", "MACs", "instructions", "per MAC"),
    )
    for layer in run.layers:
        per_mac = f"{layer.instructions / layer.macs:.1f}" if layer.macs else ""
        table.add_row(
            str(layer.index),
            escape(layer.node),  # allow-listed for C, but Rich reads [ ] as markup
            layer.function.removeprefix("edgeopt_"),
            f"{layer.macs:,}" if layer.macs else "",
            f"{layer.instructions:,}",
            per_mac,
        )
    table.add_row("", "return", "", "", f"{run.return_instructions:,}", "")
    macs = sum(layer.macs or 0 for layer in run.layers)
    table.add_row(
        "",
        "per inference",
        "",
        f"{macs:,}" if macs else "",
        f"{run.instructions[0]:,}",
        f"{run.instructions[0] / macs:.1f}" if macs else "",
        style="bold",
    )
    out.print(table)
    counts = sorted(set(run.instructions))
    spread = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"
    out.print(
        f"measured (instructions, emulated): {spread} instructions per inference on "
        f"{run.samples} samples ({run.inputs}); QEMU {core.machine} -icount "
        f"shift={run.icount_shift}, resolution {run.resolution_instructions} instruction per "
        "timer reading; "
        "outputs equal to the host build bit for bit.",
        highlight=False,
    )
    when = (
        f" = {run.estimated_ms:.3g} ms at {run.clock_hz / 1e6:g} MHz (target {core.target})"
        if run.estimated_ms is not None
        else ""
    )
    out.print(
        f"estimated: {run.estimated_cycles:,.0f} cycles{when} at {core.cpi} cycles per "
        f"instruction ({core.cpi_basis}; unverified on hardware).",
        style="dim",
        highlight=False,
    )


def render_export(
    result: Any, *, source: str | Path, command: str, console: Console | None = None
) -> None:
    """Print what :func:`edgeopt.export.artifact.export_model` wrote, by the kind it wrote:
    a C library or a ``.tflite`` file (``command`` is how to check it against ONNX Runtime), a
    folded or a U8U8 file."""
    from edgeopt.export.artifact import CLibraryReport
    from edgeopt.export.artifact import TFLiteReport
    from edgeopt.export.fold import FoldResult

    if isinstance(result, CLibraryReport):
        render_c_export(result.export, result.size, result.parity, command=command, console=console)
        for run in result.cortex_m:
            render_cortexm(run, console=console)
    elif isinstance(result, TFLiteReport):
        render_tflite(result, command=command, console=console)
    elif isinstance(result, FoldResult):
        render_fold(result, source=Path(source), console=console)
    else:
        render_uint8(result, console=console)


#: Below this console width the optimize table stacks its numbers in pairs (accuracy over its
#: drop, ms over uJ, flash over RAM), which leaves the recipes room to wrap.
STACK_BELOW_COLUMNS = 100


def accuracy_budget(max_drop_pp: float | None) -> str:
    """A search's accuracy budget in one line, printed before its trials and with its result.

    Why: a pick far below the baseline once came with exit code 0 and no word about it. The
    default budget is named as the default (with how to change it), and no limit is said aloud.

    Example:
        >>> accuracy_budget(2.5)
        'accuracy budget: at most 2.5 pp below the baseline'
        >>> accuracy_budget(1.0)
        'accuracy budget: at most 1 pp below the baseline (default; --max-accuracy-drop)'
    """
    if max_drop_pp is None:
        return "accuracy budget: none (--max-accuracy-drop none), any drop fits"
    text = f"accuracy budget: at most {max_drop_pp:g} pp below the baseline"
    if max_drop_pp == DEFAULT_MAX_ACCURACY_DROP_PP:
        text += " (default; --max-accuracy-drop)"
    return text


def render_optimize(result: Any, *, console: Console | None = None) -> None:
    """Print the Pareto front (and the closest candidates when none fits), the choice, the files."""
    out = console or STDOUT
    is_stacked = out.width < STACK_BELOW_COLUMNS
    report = result.report
    shown = {report["chosen"], *report["closest"]}
    rows = [c for c in report["candidates"] if c["is_pareto"] or c["trial"] in shown]
    study = report["study"]
    title = (
        f"optimize {report['model']} for {report['target']['name']}: "
        f"{study['trials_complete']} trials complete, {study['trials_failed']} failed"
    )
    table = _table(title, is_compact=True)
    pairs = [("acc", "drop"), ("ms", "uJ"), ("flash", "RAM")]
    numbers = [*(["\n".join(p) for p in pairs] if is_stacked else sum(pairs, ())), "fits"]
    _columns(table, "#", "recipe", *numbers, numbers=["#", *numbers])
    baseline = report["baseline"]

    def add(record: dict[str, Any], name: str, style: str | None = None) -> None:
        from edgeopt.search import Recipe

        recipe = name or Recipe.from_dict(record["recipe"]).describe()
        values = [
            (f"{record['accuracy']:.2%}", f"{record['accuracy_drop_pp']:+.2f}"),
            (f"{record['latency_ms']:,.3g}", f"{record['energy_uj']:,.1f}"),
            (format_bytes(record["flash_bytes"]), format_bytes(record["ram_bytes"])),
        ]
        cells = ["\n".join(p) for p in values] if is_stacked else sum(values, ())
        fits = "yes" if record["is_feasible"] else "NO"
        table.add_row(str(record["trial"]), recipe, *cells, fits, style=style)

    add(baseline, "baseline", "dim")
    for record in rows:
        add(record, "", "bold green" if record["trial"] == report["chosen"] else None)
    table.caption = (
        "the Pareto front (and the pick); accuracy measured on the ONNX test split (drop in "
        f"pp), latency (ms) and energy (uJ) estimated for {report['target']['name']}; chosen in "
        "green"
    )
    out.print(table)
    constraints = report.get("constraints")
    max_drop = constraints.get("max_accuracy_drop_pp") if constraints else None
    if constraints:
        out.print(accuracy_budget(max_drop))
    if study.get("stopped"):
        out.print(f"stopped early: {study['stopped']}.", style="yellow")
    if result.is_feasible:
        out.print(f"chosen: trial {report['chosen']}, wrote {result.model_path}")
        chosen = [c for c in report["candidates"] if c["trial"] == report["chosen"]]
        drop = chosen[0]["accuracy_drop_pp"] if chosen else 0.0
        if constraints and max_drop is None and drop > DEFAULT_MAX_ACCURACY_DROP_PP:
            out.print(
                f"warning: the pick is {drop:.2f} pp below the baseline, beyond the default "
                f"budget of {DEFAULT_MAX_ACCURACY_DROP_PP:g} pp, which this search set aside.",
                style="yellow",
            )
    else:
        out.print(Text.assemble(("no candidate fits:", "bold red"), f" {result.explanation}"))
        for path in result.closest_paths:
            out.print(f"closest candidate saved: {path}")
    paths = ", ".join(str(path) for path in result.report_paths)
    out.print(f"report: {paths}; study {study['name']} in {study['storage']}")
    running = study.get("trials_running") or []
    if running:
        numbers = ", ".join(str(number) for number in running)
        out.print(
            f"warning: trial(s) {numbers} were still running on other workers after the wait; "
            "this report leaves them out. Run the same command again once they finish: it "
            "reports on the whole study.",
            style="yellow",
        )
