"""The cost model of edgeopt's C kernels fitted to instructions counted on an emulated Cortex-M4.

    .venv/bin/python -m benchmarks.cortexm_fit

Quantizes zoo models (:func:`edgeopt.measure.kernelfit.measure_model`: minmax PTQ on Gaussian
samples), exports each as edgeopt's C library and counts its instructions per kernel call on
QEMU mps2-an386 (``-icount``, :func:`edgeopt.measure.cortexm.measure_cortexm`). The constants
of :data:`edgeopt.measure.kernelfit.CONSTANTS` (instructions per MAC, per output element, per
window channel of a general convolution, per element operation, per call) are fitted with
non-negative least squares on the layers of ``FIT`` and checked on the held-out ``HELD_OUT``
models: per inference through ``profile`` on the profile ``cortex-m4-edgeopt-c`` (cycles /
the profile's cycles per instruction, compared with the emulated count) and per layer.
Needs Debian's gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm.
Results: ``benchmarks/results/cortexm_fit.json``; the profile holds the fitted constants
(instructions x ``_M4_CPI``), and the script fails if they differ from its fit by over 1%.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks._common import save_result
from edgeopt.measure.cortexm import _M4_CPI
from edgeopt.measure.cortexm import require_cortexm_tools
from edgeopt.measure.kernelfit import CONSTANTS
from edgeopt.measure.kernelfit import ModelCount
from edgeopt.measure.kernelfit import fit_kernels
from edgeopt.measure.kernelfit import measure_model
from edgeopt.measure.kernelfit import predict
from edgeopt.target import Target

PROFILE = "cortex-m4-edgeopt-c"
FIT = (
    "zoo:cnn-s",
    "zoo:lenet5",
    "zoo:lenet300",
    "zoo:ds-cnn-s?classes=12&input=1x49x10",
    "zoo:mobilenet-v1?width=0.25&input=3x64x64&classes=2",
)
HELD_OUT = (
    "zoo:resnet8?input=3x32x32&classes=10",
    "zoo:ad-autoencoder?input=640",
    "zoo:mobilenet-v2?width=0.35&input=3x64x64&classes=2",
)


def profile_instructions(model: ModelCount, target: Target) -> tuple[float, list[float]]:
    """``profile``'s estimate on ``target`` in instructions: per inference and per layer."""
    from edgeopt.measure import profile_onnx

    metrics = profile_onnx(model.onnx_path, target=target, is_latency_measured=False)
    estimate = metrics.estimate
    assert estimate is not None
    per_ms = target.clock_hz / 1e3 / _M4_CPI
    return estimate.cycles / _M4_CPI, [ms * per_ms for ms in estimate.layer_latency_ms]


def _row(model: ModelCount, constants: dict[str, float], target: Target) -> dict[str, Any]:
    total, _ = profile_instructions(model, target)
    measured = model.run.instructions_per_inference
    layers = [
        {
            "node": count.layer.label,
            "function": count.function,
            "macs": count.layer.macs,
            "output_elements": count.layer.output_elements,
            "instructions": count.instructions,
            "predicted": round(predict(constants, count.layer)),
            "error": round(predict(constants, count.layer) / count.instructions - 1, 4),
        }
        for count in model.counts
    ]
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for layer in layers:
        by_kind[layer["function"]][0] += layer["instructions"]
        by_kind[layer["function"]][1] += layer["predicted"]
    return {
        "model": model.spec,
        "instructions": measured,
        "profile_instructions": round(total),
        "error": round(total / measured - 1, 4),
        "unmatched_instructions": model.unmatched_instructions,
        "by_kernel": {
            name: {"instructions": int(m), "predicted": int(p), "error": round(p / m - 1, 4)}
            for name, (m, p) in by_kind.items()
        },
        "worst_mac_layer_error": max(
            (abs(layer["error"]) for layer in layers if layer["macs"]), default=0.0
        ),
        "layers": layers,
    }


def main() -> None:
    require_cortexm_tools("cortex-m4")
    models: dict[str, ModelCount] = {}
    with tempfile.TemporaryDirectory(prefix="edgeopt-cortexm-fit-") as folder:
        for index, spec in enumerate(FIT + HELD_OUT):
            start = time.perf_counter()
            work = Path(folder) / str(index)
            work.mkdir()
            models[spec] = measure_model(spec, work)
            print(
                spec,
                models[spec].run.instructions_per_inference,
                f"{time.perf_counter() - start:.1f} s",
            )
        constants = fit_kernels([count for spec in FIT for count in models[spec].counts])
        target = Target.from_name(PROFILE)
        drift = {
            name: (constants[name] * _M4_CPI, _profile_value(target, name))
            for name in CONSTANTS
            if abs(constants[name] * _M4_CPI - _profile_value(target, name))
            > 0.01 * max(constants[name] * _M4_CPI, 1.0)
        }
        rows = {spec: _row(models[spec], constants, target) for spec in FIT + HELD_OUT}
    summary = [
        {
            "model": spec,
            "set": "fit" if spec in FIT else "held out",
            "instructions": rows[spec]["instructions"],
            "profile_instructions": rows[spec]["profile_instructions"],
            "error": rows[spec]["error"],
            "worst_mac_layer_error": rows[spec]["worst_mac_layer_error"],
        }
        for spec in FIT + HELD_OUT
    ]
    save_result(
        "cortexm_fit",
        {
            "summary": summary,
            "instructions_per_unit": {name: round(value, 4) for name, value in constants.items()},
            "cycles_per_instruction": _M4_CPI,
            "profile": PROFILE,
            "fit": list(FIT),
            "held_out": list(HELD_OUT),
            "rows": rows,
        },
    )
    if drift:
        raise SystemExit(f"{PROFILE}.yaml differs from this fit (fit, yaml): {drift}")


def _profile_value(target: Target, name: str) -> float:
    """One constant of the profile by its dotted YAML name."""
    parts = name.split(".")
    value: Any = getattr(target, parts[0])
    for part in parts[1:]:
        value = value.get(part, 0.0)
    return float(value)


if __name__ == "__main__":
    main()
