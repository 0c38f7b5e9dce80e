"""Search: LeNet-5 on Fashion-MNIST for cortex-m4 in 64 KB of flash (issue 6).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.optimize [--trials 24] [--distill-epochs 5]
        [--finetune-epochs 2] [--workers 1] [--rundir DIR]

``edgeopt optimize`` on the trained ``zoo:lenet5`` (10 epochs, 90.77%, the foundation
benchmark's model, cached in ``benchmarks/cache/lenet5-fashion.*``; trained and cached when
missing) for the ``cortex-m4`` profile under a flash budget of 64 KB = 65,536 bytes
(``max_flash_bytes=65536``). The fp32 file (261,546 B) and its plain int8 PTQ file (72,657 B)
are both over it, so the search has to find something smaller: a narrower student distilled
from the model (widths 0.75, 0.5, 0.25), channel pruning, 4-bit weights or mixed precision.
Objectives: test accuracy (up) and energy per inference on cortex-m4 (down); latency on
cortex-m4 is not a third objective because the profile's energy is its latency times a fixed
active power (42 mW), so it would not change the front. Sampler: multi-objective TPE, seed 0.

Every candidate is measured on its exported ONNX file: accuracy on the official 10,000 test
images (ONNX Runtime), flash as the file's size in bytes, RAM as the peak of live activations,
host latency with ONNX Runtime on 1 thread; latency and energy on cortex-m4 are estimated by the
target profile. Trials train (distillation, fine-tuning, QAT) on the full training split
(54,000 images); 5 distillation and 2 fine-tuning epochs are ``OptimizeConfig``'s defaults.

The study is SQLite in the run folder (``benchmarks/cache/optimize/``, gitignored) with the
trials' files and the search's own ``report.json`` and ``report.html``: running the script again
resumes it (a killed run keeps its completed trials). Results: ``benchmarks/results/
optimize.json`` and the plots ``optimize-pareto-energy.svg`` and ``optimize-pareto-latency.svg``
(accuracy against estimated energy and latency on cortex-m4; feasible points filled, points over
the flash budget hollow).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import edgeopt
from benchmarks._common import CACHE
from benchmarks._common import RESULTS
from benchmarks._common import require_shared
from benchmarks._common import save_result
from edgeopt.data import Dataset
from edgeopt.models import ModelHandle
from edgeopt.report import pareto_svg
from edgeopt.search import Recipe
from edgeopt.search.storage import default_url

TARGET = "cortex-m4"
MAX_FLASH_BYTES = 65_536  # 64 KB, binary kilobytes
SEED = 0
BASELINE_EPOCHS = 10
STUDENT_WIDTHS = (0.75, 0.5, 0.25)
RUNDIR = CACHE / "optimize"
MAX_REPORT_COPY_BYTES = 200_000
#: Cached LeNet-5 weights trained by other benchmarks (same spec, data, 10 epochs, seed 0).
CACHED = ("lenet5-fashion", "pruning-lenet5")


def baseline(data: Dataset) -> tuple[ModelHandle, str]:
    """The trained LeNet-5 from the cache, or trained now (10 epochs) and cached."""
    for name in CACHED:
        weights = CACHE / f"{name}.pt"
        if weights.is_file():
            return edgeopt.load_model("zoo:lenet5", weights=weights, data=data), str(weights)
    result = edgeopt.train("zoo:lenet5", data, edgeopt.TrainConfig(epochs=BASELINE_EPOCHS))
    files = edgeopt.save_trained(result, data, CACHE / f"{CACHED[0]}.onnx")
    return result.model, f"{files.onnx_path.with_suffix('.pt')} (trained now)"


def row(candidate: dict[str, Any]) -> dict[str, Any]:
    """A candidate as a table row: the recipe in words and the measured/estimated numbers."""
    keys = ("accuracy", "accuracy_drop_pp", "flash_bytes", "ram_bytes", "latency_ms")
    return {
        "trial": candidate["trial"],
        "recipe": Recipe.from_dict(candidate["recipe"]).describe(),
        **{key: candidate[key] for key in keys},
        "energy_uj": candidate["energy_uj"],
        "host_latency_ms": candidate["host_latency_ms"],
        "params": candidate["params"],
        "macs": candidate["macs"],
        "is_feasible": candidate["is_feasible"],
        "is_pareto": candidate["is_pareto"],
    }


def write_plots(report: dict[str, Any]) -> list[Path]:
    """Accuracy against estimated energy and latency on cortex-m4, as standalone SVG files."""
    paths = []
    for x, name, words in (
        ("energy_uj", "energy", "energy per inference"),
        ("latency_ms", "latency", "latency"),
    ):
        svg = pareto_svg(
            report["candidates"],
            x,
            baseline=report["baseline"],
            chosen=report["chosen"],
            title=f"LeNet-5 on Fashion-MNIST: test accuracy against {words} on {TARGET} "
            f"(estimated); hollow: over {MAX_FLASH_BYTES:,} B of flash",
            standalone=True,
        )
        path = RESULTS / f"optimize-pareto-{name}.svg"
        path.write_text(svg + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--distill-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--rundir", type=Path, default=RUNDIR)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    data = edgeopt.load_data(f"idx:{require_shared('fashion-mnist')}")
    handle, weights = baseline(data)
    config = edgeopt.OptimizeConfig(
        max_flash_bytes=MAX_FLASH_BYTES,
        # The whole accuracy/energy front under the flash budget, not the default 1 pp budget.
        max_accuracy_drop_pp=None,
        objectives=("accuracy", "energy_uj"),
        trials=args.trials,
        seed=SEED,
        sampler="tpe",
        distill_epochs=args.distill_epochs,
        finetune_epochs=args.finetune_epochs,
        student_widths=STUDENT_WIDTHS,
        workers=args.workers,
        threads=1,
        # One study per training setting: a resumed run never mixes trials trained differently.
        study=f"lenet5-m4-64k-d{args.distill_epochs}-f{args.finetune_epochs}",
    )
    start = time.perf_counter()

    def progress(complete: int, total: int) -> None:
        print(f"  {complete}/{total} trials complete, {time.perf_counter() - start:.0f} s")

    result = edgeopt.optimize(handle, data, TARGET, config, rundir=args.rundir, progress=progress)
    seconds = time.perf_counter() - start
    report = result.report
    chosen = result.chosen
    plots = write_plots(report)
    report_json = args.rundir / "report.json"
    copied = None
    if report_json.stat().st_size < MAX_REPORT_COPY_BYTES:
        copied = RESULTS / "optimize-report.json"
        copied.write_text(report_json.read_text(encoding="utf-8"), encoding="utf-8")
    base = report["baseline"]
    front = sorted(
        (row(c) for c in report["candidates"] if c["is_pareto"]),
        key=lambda r: r["energy_uj"],
    )
    summary = {
        "model": "zoo:lenet5 (trained 10 epochs, seed 0)",
        "weights": weights,
        "data": "Fashion-MNIST: trials train on the full 54k train split; every accuracy is "
        "on the official 10k test split, measured on the exported ONNX file",
        "target": TARGET,
        "max_flash_bytes": MAX_FLASH_BYTES,
        "objectives": list(config.objectives),
        "trials": args.trials,
        "distill_epochs": args.distill_epochs,
        "finetune_epochs": args.finetune_epochs,
        "student_widths": list(STUDENT_WIDTHS),
        "seed": SEED,
        "workers": args.workers,
        "baseline": {**row({**base, "is_pareto": False}), "recipe": "as is (fp32)"},
        "chosen": row(chosen) if chosen else None,
        "is_feasible": result.is_feasible,
        "explanation": result.explanation,
        "pareto": front,
        "trials_complete": report["study"]["trials_complete"],
        "trials_failed": report["study"]["trials_failed"],
        "search_seconds": round(seconds, 1),
        "study_seconds": report["study"]["seconds"],
    }
    failures = _failures(args.rundir, config.study)
    save_result(
        "optimize",
        {
            "summary": summary,
            "candidates": [row(c) for c in report["candidates"]],
            "failures": failures,
            "files": {
                "rundir": str(args.rundir),
                "plots": [p.name for p in plots],
                "report": copied.name if copied else None,
            },
        },
    )


def _failures(rundir: Path, study: str) -> list[dict[str, Any]]:
    """The failed trials and why (the error each kept), read back from the study."""
    import optuna
    from optuna.trial import TrialState

    loaded = optuna.load_study(study_name=study, storage=default_url(rundir))
    return [
        {"trial": t.number, "params": t.params, "error": t.user_attrs.get("error")}
        for t in loaded.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    ]


if __name__ == "__main__":
    main()
