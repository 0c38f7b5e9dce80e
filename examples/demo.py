"""The demo behind ``make demo``: train cnn-s on digits, profile the exported file, quantize it.

Everything goes into ``runs/<name>/`` (default ``runs/demo``): the ONNX model, its weights, the
training record, one profile JSON per target, and the int8 model with its record (both files
measured side by side), and the channel-pruned model (``cnn-s.pruned.{onnx,pt,json,edc}``,
measured beside the trained one). Every call here is the public API; the same steps from the
shell are ``edgeopt train``, ``edgeopt profile``, ``edgeopt quantize`` and ``edgeopt prune``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

import edgeopt
from edgeopt._io import write_json
from edgeopt.cli import render_metrics
from edgeopt.cli import render_prune
from edgeopt.cli import render_quantize


def main(name: str = "demo") -> Path:
    console = Console()
    start = time.perf_counter()
    run = Path("runs") / name
    data = edgeopt.load_data("digits")
    console.rule("[bold]1. train zoo:cnn-s on scikit-learn's digits")
    result = edgeopt.train("zoo:cnn-s", data, edgeopt.TrainConfig(epochs=20, seed=0))
    files = edgeopt.save_trained(result, data, run / "cnn-s.onnx")
    console.print(
        f"test accuracy: PyTorch {result.test_accuracy:.2%}, "
        f"exported ONNX {files.onnx_test_accuracy:.2%}"
    )
    for target in ("cortex-m4", "host"):
        console.rule(f"[bold]2. profile the exported file on {target}")
        metrics = edgeopt.profile(str(files.onnx_path), data=data, target=target, threads=1)
        render_metrics(metrics)
        write_json(run / f"profile-{target}.json", metrics.to_dict())
    console.rule("[bold]3. quantize to int8 (static PTQ) and compare with fp32")
    report = edgeopt.quantize_and_profile(
        str(files.onnx_path), edgeopt.PTQConfig(), data=data, output=run / "cnn-s.int8.onnx"
    )
    render_quantize(report)
    console.rule("[bold]4. prune half the MACs (channels removed), fine-tune, compress")
    pruned = edgeopt.prune_and_profile(
        result.model,
        edgeopt.PruneConfig(
            granularity="channel",
            ratio=0.5,
            ratio_of="macs",
            scope="layer",
            channel_multiple=8,  # whole SIMD blocks: ragged channel counts run slower
            finetune_epochs=20,
            learning_rate=3e-3,
        ),
        data=data,
        output=run / "cnn-s.pruned.onnx",
        is_compressed=True,
    )
    render_prune(pruned)
    console.rule("[bold]done")
    console.print(f"wrote everything into {run}/ in {time.perf_counter() - start:.1f} s")
    for path in sorted(run.iterdir()):
        console.print(f"  {path}")
    return run


if __name__ == "__main__":
    main(*sys.argv[1:2])
