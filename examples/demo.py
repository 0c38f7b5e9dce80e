"""The demo behind ``make demo``: from a trained model to a C library that fits a Cortex-M4.

1. train cnn-s on scikit-learn's digits and export it (``runs/demo/cnn-s.{onnx,pt,json}``);
2. profile the exported file on the cortex-m4 profile (``profile-cortex-m4.json``);
3. ``optimize`` for cortex-m4: a small Optuna search over distillation, pruning and int8
   quantization, every candidate exported and measured, under 100 uJ per inference and within
   4 pp of the model's accuracy (``runs/demo/search/``: the study, the trials, ``model.onnx``
   with ``recipe.yaml``, ``report.json`` and ``report.html``);
4. write the chosen model as a C99 library, compile it with gcc, print the flash and RAM of the
   build and check it against ONNX Runtime on the test split (``runs/demo/c/``);
5. write the same model as a full-int8 ``.tflite`` (``runs/demo/model.tflite``), run it in
   TensorFlow Lite Micro's interpreter on the test split against edgeopt's exact int8, and
   print TFLM's measured arena beside the C library's.

Every call is the public API; from the shell the same steps are ``edgeopt train``, ``edgeopt
profile``, ``edgeopt optimize`` and ``edgeopt export`` (``--format c``, ``--format tflite``).
Running the demo again resumes the search from its study (no trial is repeated). It takes about
a minute on two cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

import edgeopt
from edgeopt._io import write_json
from edgeopt.report.console import render_c_export
from edgeopt.report.console import render_metrics
from edgeopt.report.console import render_optimize

TARGET = "cortex-m4"


def main(name: str = "demo") -> Path:
    from edgeopt.export.c import CORTEX_M4_FLAGS
    from edgeopt.export.c import check_c
    from edgeopt.export.c import export_c
    from edgeopt.export.c import has_compiler
    from edgeopt.export.c import measure_c

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
    console.rule(f"[bold]2. profile the exported file on {TARGET}")
    metrics = edgeopt.profile(str(files.onnx_path), data=data, target=TARGET, threads=1)
    render_metrics(metrics, max_layers=12)
    write_json(run / f"profile-{TARGET}.json", metrics.to_dict())
    console.rule(f"[bold]3. optimize for {TARGET}: distill, prune, quantize (int8) under budget")
    # A battery budget: at most 100 uJ per inference (the int8 model as trained needs about
    # 330), losing at most 4 pp of test accuracy.
    config = edgeopt.OptimizeConfig(
        max_accuracy_drop_pp=4.0,
        max_energy_uj=100.0,
        objectives=("accuracy", "energy_uj", "flash_bytes"),
        trials=12,
        distill_epochs=20,
        finetune_epochs=4,
        quantize_methods=("ptq8", "qat8"),  # what the C exporter takes
        seed=0,
    )
    with console.status("searching") as status:

        def progress(complete: int, total: int) -> None:
            status.update(f"searching: {complete}/{total} trials complete")

        search = edgeopt.optimize(
            result.model, data, TARGET, config, rundir=run / "search", progress=progress
        )
    render_optimize(search)
    if search.model_path is None:
        console.print("no candidate fits the budget; nothing to write as C")
        return run
    console.rule("[bold]4. the chosen model as a C99 library, compiled and checked")
    library = export_c(search.model_path, run / "c", target=TARGET, is_forced=True)
    size = measure_c(library) if has_compiler() else None
    parity = check_c(library, data.arrays("test")[0]) if has_compiler() else None
    render_c_export(library, size, parity, command=f"edgeopt export {search.model_path}")
    if has_compiler("arm-none-eabi-gcc"):  # Debian's gcc-arm-none-eabi: the real Cortex-M4 build
        m4 = measure_c(library, compiler="arm-none-eabi-gcc", flags=CORTEX_M4_FLAGS)
        console.print(
            f"C build for Cortex-M4 (arm-none-eabi-gcc): flash {m4.flash_bytes:,} B, "
            f"RAM {m4.ram_bytes:,} B (object files: text + rodata + data, data + bss)"
        )
    elif size is not None:
        console.print(
            f"C build on this host's gcc: flash {size.flash_bytes:,} B, RAM {size.ram_bytes:,} B "
            "(install gcc-arm-none-eabi for the Cortex-M4 sizes)"
        )
    console.rule("[bold]5. the same model as a .tflite, run in TensorFlow Lite Micro")
    from edgeopt.export.tflite import check_tflite
    from edgeopt.export.tflite import write_tflite

    x_train, x_test = data.arrays("train")[0], data.arrays("test")[0]
    tflite = write_tflite(search.model_path, run / "model.tflite", calibration=x_train)
    agreement = check_tflite(tflite, x_test)
    console.print(
        f"{tflite.path}: {tflite.size_bytes:,} B, {len(tflite.operators)} operators; in TFLite "
        f"Micro on the {agreement.samples} test samples: top-1 as edgeopt's exact int8 on "
        f"{agreement.top1_agreement:.1%}, at most {agreement.max_lsb} LSB apart (TFLM rounds "
        "its requantization in two fixed-point steps)"
    )
    console.print(
        f"arena: TFLite Micro {tflite.arena_bytes:,} B (measured by its interpreter) beside "
        f"edgeopt's C {library.arena_bytes:,} B (planned, static)"
    )
    console.rule("[bold]done")
    console.print(f"wrote everything into {run}/ in {time.perf_counter() - start:.1f} s")
    for path in sorted(run.iterdir()):
        console.print(f"  {path}")
    return run


if __name__ == "__main__":
    main(*sys.argv[1:2])
