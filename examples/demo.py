"""The demo behind ``make demo``: train cnn-s on digits, then profile the exported file.

Everything goes into ``runs/<name>/`` (default ``runs/demo``): the ONNX model, its weights, the
training record and one profile JSON per target. Every call here is the public API; the same
steps from the shell are ``edgeopt train`` and ``edgeopt profile``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

import edgeopt
from edgeopt._io import write_json
from edgeopt.cli import render_metrics


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
    console.rule("[bold]done")
    console.print(f"wrote everything into {run}/ in {time.perf_counter() - start:.1f} s")
    for path in sorted(run.iterdir()):
        console.print(f"  {path}")
    return run


if __name__ == "__main__":
    main(*sys.argv[1:2])
