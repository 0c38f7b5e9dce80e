"""The estimator against MLPerf Tiny: fit cortex-m4 profiles to the NUCLEO-L4R5ZI results.

    .venv/bin/python -m benchmarks.estimates

Builds the four MLPerf Tiny reference models from the zoo (KWS DS-CNN, VWW MobileNetV1 0.25,
IC ResNet-8, AD autoencoder), exports them, quantizes them to int8 with our PTQ and reads their
layers on the int8 QDQ files. For each runtime (reference TFLM kernels -> ``cortex-m4-tflm``,
ST X-CUBE-AI 8.1 -> ``cortex-m4``) it fits every candidate structure of
:data:`edgeopt.measure.mlperf.STRUCTURES` by non-negative least squares, scores it
leave-one-model-out, keeps the structure with the smallest worst-case out-of-sample latency
error, and checks that the profile's YAML holds the constants fitted on all four models.
Results: ``benchmarks/results/estimates.json``.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._common import save_result
from edgeopt.measure.mlperf import PUBLISHED
from edgeopt.measure.mlperf import REFERENCE_MODELS
from edgeopt.measure.mlperf import STRUCTURES
from edgeopt.measure.mlperf import fit_profile
from edgeopt.measure.mlperf import leave_one_out
from edgeopt.measure.mlperf import reference_layers
from edgeopt.target import MAC_KINDS
from edgeopt.target import Target

PROFILES = {"tflm": "cortex-m4-tflm", "xcubeai": "cortex-m4"}
RUNTIMES = {
    "tflm": "reference TFLM 2.3.1 kernels (MLPerf Tiny v0.5)",
    "xcubeai": "ST X-CUBE-AI 8.1 (MLPerf Tiny v1.1)",
}
#: Relative difference allowed between the YAML constants and the fit (the YAML rounds to 3
#: significant digits).
YAML_TOLERANCE = 0.005


def _worst(errors: dict[str, dict[str, float]], quantity: str) -> float:
    return max(abs(point[quantity]) for point in errors.values())


def _matches(profile: Target, constants: dict[str, Any]) -> dict[str, bool]:
    """Whether each fitted constant is what the YAML file holds (within rounding)."""

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= YAML_TOLERANCE * max(abs(a), abs(b), 1e-9)

    checks = {
        f"cycles_per_mac.{kind}.int8": close(
            profile.cycles_per_mac[kind]["int8"], constants["cycles_per_mac_int8"][kind]
        )
        for kind in MAC_KINDS
    }
    for key in ("cycles_per_byte", "layer_overhead_cycles", "active_power_mw"):
        checks[key] = close(float(getattr(profile, key)), float(constants[key]))
    return checks


def main() -> None:
    start = time.perf_counter()
    layers = {key: reference_layers(key) for key in REFERENCE_MODELS}
    counts = {
        key: {
            "spec": REFERENCE_MODELS[key],
            "macs": sum(layer.macs for layer in model),
            "macs_by_kind": {
                kind: sum(layer.macs for layer in model if layer.kind == kind) for kind in MAC_KINDS
            },
            "layers": sum(1 for layer in model if layer.kind != "fused"),
            "bytes_moved": sum(layer.bytes_moved for layer in model),
        }
        for key, model in layers.items()
    }
    runtimes: dict[str, Any] = {}
    for runtime, profile_name in PROFILES.items():
        profile = Target.from_name(profile_name)
        published = PUBLISHED[runtime]
        candidates = []
        for structure in STRUCTURES:
            fit = fit_profile(published, layers, base=profile, structure=structure)
            candidates.append(
                {
                    "structure": structure.name,
                    "reason": structure.reason,
                    "constants": fit.constants(),
                    "in_sample": fit.errors(published),
                    "leave_one_out": leave_one_out(
                        published, layers, base=profile, structure=structure
                    ),
                }
            )
        best = min(candidates, key=lambda c: _worst(c["leave_one_out"], "latency"))
        estimates = {key: profile.estimate(model) for key, model in layers.items()}
        runtimes[runtime] = {
            "runtime": RUNTIMES[runtime],
            "profile": profile_name,
            "published": {key: vars(point) for key, point in published.items()},
            "chosen": best["structure"],
            "candidates": candidates,
            "profile_matches_fit": _matches(profile, best["constants"]),
            "profile_estimates": {
                key: {"latency_ms": e.latency_ms, "energy_uj": e.energy_uj}
                for key, e in estimates.items()
            },
        }
    summary = {
        runtime: {
            "profile": result["profile"],
            "structure": result["chosen"],
            "profile_matches_fit": all(result["profile_matches_fit"].values()),
            **{
                f"{quantity}_error_pct": {
                    scope: {
                        key: round(100 * point[quantity], 1)
                        for key, point in next(
                            c for c in result["candidates"] if c["structure"] == result["chosen"]
                        )[scope].items()
                    }
                    for scope in ("in_sample", "leave_one_out")
                }
                for quantity in ("latency", "energy")
            },
        }
        for runtime, result in runtimes.items()
    }
    _print_table(runtimes)
    save_result(
        "estimates",
        {
            "summary": summary,
            "models": counts,
            "runtimes": runtimes,
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


def _print_table(runtimes: dict[str, Any]) -> None:
    for runtime, result in runtimes.items():
        print(f"\n{RUNTIMES[runtime]} -> {result['profile']}")
        for candidate in result["candidates"]:
            mark = "*" if candidate["structure"] == result["chosen"] else " "
            loo = candidate["leave_one_out"]
            cells = " ".join(
                f"{key}:{100 * loo[key]['latency']:+4.0f}/{100 * loo[key]['energy']:+4.0f}"
                for key in loo
            )
            print(f" {mark} {candidate['structure']:22s} LOO latency/energy % {cells}")
        chosen = next(c for c in result["candidates"] if c["structure"] == result["chosen"])
        print("   model   published ms   fitted ms  in-sample  LOO   | uJ  in-sample  LOO")
        for key, point in result["published"].items():
            fitted = result["profile_estimates"][key]
            ins, loo = chosen["in_sample"][key], chosen["leave_one_out"][key]
            print(
                f"   {key:5s} {point['latency_ms']:12.2f} {fitted['latency_ms']:11.2f} "
                f"{100 * ins['latency']:+9.0f}% {100 * loo['latency']:+4.0f}% | "
                f"{point['energy_uj']:7.0f} {100 * ins['energy']:+6.0f}% "
                f"{100 * loo['energy']:+4.0f}%"
            )
        if not all(result["profile_matches_fit"].values()):
            stale = [k for k, ok in result["profile_matches_fit"].items() if not ok]
            print(f"   the YAML differs from the fit in: {', '.join(stale)}")
            print(f"   fitted: {chosen['constants']}")


if __name__ == "__main__":
    main()
