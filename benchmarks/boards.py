"""Board profiles against MLPerf Tiny: fit constants per core and runtime across boards.

    .venv/bin/python -m benchmarks.boards

The four MLPerf Tiny reference models are rebuilt from the zoo and quantized to int8 by our PTQ
(:func:`edgeopt.measure.mlperf.reference_layers`). The published closed-division results of
ST's NUCLEO boards (:data:`edgeopt.measure.boards.BOARD_RUNS`: NUCLEO-L4R5ZI, NUCLEO-U575ZI-Q
and NUCLEO-H7A3ZI-Q with X-CUBE-AI 7.3 in round v1.0 and 9.0 in round v1.2; NUCLEO-L4R5ZI-P,
NUCLEO-U575ZI-Q and NUCLEO-U385RG-Q with X-CUBE-AI 10.2 in round v1.3) are grouped by core and
runtime: a group shares one set of cycle constants, fitted on all its boards at their own
clocks, while each board keeps its own measured power. For each group every candidate structure of
:data:`edgeopt.measure.mlperf.STRUCTURES` is scored leave-one-model-out and the one with the
smallest worst-case latency error kept; then every board is predicted leave-one-board-out (from
the other boards of its core and runtime, or of its runtime and core class). The board profiles'
YAML files are checked against the fit, and their ``validated_error`` against the errors.
Results: ``benchmarks/results/boards.json``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks._common import save_result
from benchmarks.estimates import _matches
from edgeopt.measure.boards import BOARD_RUNS
from edgeopt.measure.boards import BoardRun
from edgeopt.measure.boards import core_runtime_groups
from edgeopt.measure.boards import fit_boards
from edgeopt.measure.boards import leave_one_board_out
from edgeopt.measure.boards import leave_one_model_out
from edgeopt.measure.mlperf import REFERENCE_MODELS
from edgeopt.measure.mlperf import STRUCTURES
from edgeopt.measure.mlperf import reference_layers
from edgeopt.target import Target

#: The profile whose fixed constants (element, per-layer, float32 costs) a core's fit keeps.
BASES = {"Cortex-M4": "cortex-m4", "Cortex-M33": "cortex-m4", "Cortex-M7": "cortex-m7"}
#: The built-in board profiles and the run each one is.
PROFILES = {
    "NUCLEO-L4R5ZI X-CUBE-AI 9.0": "nucleo-l4r5zi",
    "NUCLEO-H7A3ZI-Q X-CUBE-AI 9.0": "nucleo-h7a3zi-q",
    "NUCLEO-U575ZI-Q X-CUBE-AI 10.2": "nucleo-u575zi-q",
    "NUCLEO-U385RG-Q X-CUBE-AI 10.2": "nucleo-u385rg-q",
    "NUCLEO-L4R5ZI-P X-CUBE-AI 10.2": "nucleo-l4r5zi-p",
}


def _worst(errors: dict[str, dict[str, dict[str, float]]], quantity: str) -> float:
    return max(abs(point[quantity]) for board in errors.values() for point in board.values())


def validated_error(*tables: dict[str, dict[str, float]]) -> dict[str, float]:
    """The error a profile states: the worst out-of-sample error over its board's results in
    ``tables`` (leave-one-model-out and, where it exists, leave-one-board-out), per quantity,
    rounded up to the next 5%."""
    return {
        quantity: math.ceil(
            100 * max(abs(point[quantity]) for table in tables for point in table.values()) / 5
            - 1e-9
        )
        * 5
        / 100
        for quantity in ("latency", "energy")
    }


def _base(run: BoardRun) -> Target:
    return Target.from_name(BASES[run.core])


def main() -> None:
    start = time.perf_counter()
    layers = {key: reference_layers(key) for key in REFERENCE_MODELS}
    groups: dict[str, Any] = {}
    chosen = {}
    for name, runs in core_runtime_groups(BOARD_RUNS).items():
        base = _base(runs[0])
        candidates = []
        for structure in STRUCTURES:
            fit = fit_boards(runs, layers, base=base, structure=structure)
            candidates.append(
                {
                    "structure": structure.name,
                    "constants": fit.constants(),
                    "in_sample": fit.errors(runs),
                    "leave_one_model_out": leave_one_model_out(
                        runs, layers, base=base, structure=structure
                    ),
                }
            )
        best = min(candidates, key=lambda c: _worst(c["leave_one_model_out"], "latency"))
        chosen[name] = next(s for s in STRUCTURES if s.name == best["structure"])
        groups[name] = {
            "boards": [run.key for run in runs],
            "results": sum(len(run.published) for run in runs),
            "base": BASES[runs[0].core],
            "chosen": best["structure"],
            "candidates": candidates,
        }
    # Leave-one-board-out: each board from its peers, with its own group's structure.
    lobo: dict[str, Any] = {}
    for name, runs in core_runtime_groups(BOARD_RUNS).items():
        for run in runs:
            errors = leave_one_board_out(
                BOARD_RUNS, layers, base=_base(run), structure=chosen[name]
            )
            if run.key in errors:
                lobo[run.key] = errors[run.key]
    boards: dict[str, Any] = {}
    for name, runs in core_runtime_groups(BOARD_RUNS).items():
        best = next(
            c for c in groups[name]["candidates"] if c["structure"] == groups[name]["chosen"]
        )
        for run in runs:
            entry: dict[str, Any] = {
                "group": name,
                "core": run.core,
                "runtime": run.runtime,
                "clock_hz": run.clock_hz,
                "source": run.source,
                "published": {
                    key: {
                        "throughput_inf_s": run.throughput[key],
                        "latency_ms": point.latency_ms,
                        "energy_uj": point.energy_uj,
                        "power_mw": point.power_mw,
                    }
                    for key, point in run.published.items()
                },
                "power_mw": run.power_mw(),
                "in_sample": best["in_sample"][run.key],
                "leave_one_model_out": best["leave_one_model_out"][run.key],
                "leave_one_board_out": lobo.get(run.key),
                "validated_error": validated_error(
                    best["leave_one_model_out"][run.key],
                    *([lobo[run.key]] if run.key in lobo else []),
                ),
            }
            profile_name = PROFILES.get(run.key)
            if profile_name is not None:
                profile = Target.from_name(profile_name)
                constants = {
                    **best["constants"],
                    "active_power_mw": run.power_mw(),
                }
                entry["profile"] = profile_name
                entry["profile_matches_fit"] = {
                    **_matches(profile, constants),
                    "clock_hz": profile.clock_hz == run.clock_hz,
                    "validated_error": dict(profile.validated_error)
                    == {**entry["validated_error"], "results": groups[name]["results"]},
                }
            boards[run.key] = entry
    summary = {
        key: {
            "profile": entry.get("profile"),
            "structure": groups[entry["group"]]["chosen"],
            "results_fitted": groups[entry["group"]]["results"],
            "validated_error": entry["validated_error"],
            "profile_matches_fit": all(entry.get("profile_matches_fit", {"-": True}).values()),
            **{
                f"{scope}_pct": None
                if entry[scope] is None
                else {
                    model: [round(100 * row["latency"], 1), round(100 * row["energy"], 1)]
                    for model, row in entry[scope].items()
                }
                for scope in ("leave_one_board_out", "leave_one_model_out")
            },
        }
        for key, entry in boards.items()
    }
    _print(groups, boards)
    save_result(
        "boards",
        {
            "summary": summary,
            "groups": groups,
            "boards": boards,
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


def _print(groups: dict[str, Any], boards: dict[str, Any]) -> None:
    for name, group in groups.items():
        print(f"\n{name}: {', '.join(group['boards'])}")
        for candidate in group["candidates"]:
            mark = "*" if candidate["structure"] == group["chosen"] else " "
            worst = _worst(candidate["leave_one_model_out"], "latency")
            print(f" {mark} {candidate['structure']:22s} worst LOMO latency {100 * worst:4.0f}%")
        chosen = next(c for c in group["candidates"] if c["structure"] == group["chosen"])
        print(f"   constants {chosen['constants']}")
    for key, entry in boards.items():
        for scope in ("in_sample", "leave_one_model_out", "leave_one_board_out"):
            rows = entry[scope]
            cells = (
                "n/a"
                if rows is None
                else " ".join(
                    f"{m}:{100 * r['latency']:+.0f}/{100 * r['energy']:+.0f}"
                    for m, r in rows.items()
                )
            )
            print(f"{key:32s} {scope:20s} {cells}")
        if not all(entry.get("profile_matches_fit", {"-": True}).values()):
            stale = [k for k, ok in entry["profile_matches_fit"].items() if not ok]
            print(f"   {entry['profile']}: the YAML differs from the fit in {', '.join(stale)}")


if __name__ == "__main__":
    main()
