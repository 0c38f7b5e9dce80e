"""The report of ``edgeopt optimize``, schema version 1: the one contract between search and report.

The search builds this dict and :func:`edgeopt.report.write_report` writes it as
``RUNDIR/report.json`` (sorted keys, so a diff between two runs shows only what changed) and
renders it as ``RUNDIR/report.html``. The report only renders: every number in it was measured
or estimated before, and ``provenance`` says which. ``null`` means "unset" or "not measured".

.. code-block:: text

    {"schema_version": 1, "kind": "edgeopt-optimize-report", "created": ISO-8601 UTC,
     "environment": {"edgeopt", "python", "torch", "onnx", "onnxruntime", "optuna": versions,
                     "cpu": str, "cores": int, "threads": int, "platform": str,
                     "cpu_flags": [int8-relevant CPU features], "int8": str (how this host's
                     ONNX Runtime computes int8, probed)},
     "model": spec str, "data": spec str,
     "target": {"name", "flash_bytes", "ram_bytes", "clock_hz"},
     "constraints": {"max_accuracy_drop_pp", "max_latency_ms", "max_energy_uj",
                     "max_flash_bytes", "max_ram_bytes"}  (null = no limit; an accuracy drop
                     given as none, or a report from before the 1 pp default),
     "objectives": names from {"accuracy", "latency_ms", "energy_uj", "flash_bytes", "ram_bytes"},
     "study": {"name", "storage" (password redacted), "trials_total", "trials_complete",
               "trials_failed", "seconds",
               "trials_running" (optional: trials still running on other workers when the
               report was made, left out of it; [] when the whole study is in),
               "trials_duplicate" (optional: proposals of a recipe already measured, pruned
               and not built again; not counted in trials_complete),
               "stopped" (optional: why fewer trials than asked are complete, in words, e.g.
               the search space is exhausted; null otherwise)},
     "baseline": CANDIDATE (trial -1),
     "candidates": [CANDIDATE, ...]          (every completed trial, in trial order),
     "pareto": [trial numbers], "chosen": trial number or null, "is_feasible": bool,
     "closest": [trial numbers]              (when infeasible, up to 3; else []),
     "explanation": str or null              (which constraint failed and by how much, in words),
     "sensitivity": {"model": spec, "ratios": [...], "baseline_accuracy": float,
                     "layers": [{"name": str, "accuracy": [... one per ratio, null = n/a]}]}
                    or null,
     "provenance": {field: "measured ..." / "estimated ..." in words, for accuracy, latency_ms,
                    energy_uj, flash_bytes, ram_bytes, host_latency_ms}}

    CANDIDATE = {"trial": int,
                 "recipe": {"seed": int,
                            "steps": [{"step": "distill" | "prune" | "quantize", ...params}]},
                 "accuracy": float (a fraction), "accuracy_drop_pp": float (percentage points),
                 "latency_ms": float (target estimate), "energy_uj": float (target estimate),
                 "flash_bytes": int, "ram_bytes": int, "size_bytes": int, "params": int,
                 "macs": int, "host_latency_ms": float or null (measured ONNX Runtime p50),
                 "is_feasible": bool,
                 "violations": [{"constraint", "value", "limit", "excess"}],
                 "is_pareto": bool, "artifact": path relative to RUNDIR or null,
                 "memory_schedule": {"names": [...], "bytes": [...]} or null,
                 "int8": {"path": "as-shipped" | "rewritten", "is_exact": bool,
                          "is_checked": bool} or null (a float file)}

The constants below are this schema in code: :func:`validate` checks them, so a report that
drifts from the contract fails with the missing key named instead of a page with holes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeopt.errors import InputError

SCHEMA_VERSION = 1
KIND = "edgeopt-optimize-report"

#: The top-level keys, in the order the schema lists them.
REPORT_KEYS: tuple[str, ...] = (
    "schema_version",
    "kind",
    "created",
    "environment",
    "model",
    "data",
    "target",
    "constraints",
    "objectives",
    "study",
    "baseline",
    "candidates",
    "pareto",
    "chosen",
    "is_feasible",
    "closest",
    "explanation",
    "sensitivity",
    "provenance",
)

#: Keys of the nested objects (not of ``provenance``, whose keys are open-ended words).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "environment": (
        "edgeopt",
        "python",
        "torch",
        "onnx",
        "onnxruntime",
        "optuna",
        "cpu",
        "cores",
        "threads",
        "platform",
        "cpu_flags",
        "int8",
    ),
    "target": ("name", "flash_bytes", "ram_bytes", "clock_hz"),
    "constraints": (
        "max_accuracy_drop_pp",
        "max_latency_ms",
        "max_energy_uj",
        "max_flash_bytes",
        "max_ram_bytes",
    ),
    "study": ("name", "storage", "trials_total", "trials_complete", "trials_failed", "seconds"),
}

SENSITIVITY_KEYS: tuple[str, ...] = ("model", "ratios", "baseline_accuracy", "layers")

CANDIDATE_KEYS: tuple[str, ...] = (
    "trial",
    "recipe",
    "accuracy",
    "accuracy_drop_pp",
    "latency_ms",
    "energy_uj",
    "flash_bytes",
    "ram_bytes",
    "size_bytes",
    "params",
    "macs",
    "host_latency_ms",
    "is_feasible",
    "violations",
    "is_pareto",
    "artifact",
    "memory_schedule",
    "int8",
)

#: The numbers every candidate carries, in the order the tables show them.
METRICS: tuple[str, ...] = (
    "accuracy",
    "accuracy_drop_pp",
    "latency_ms",
    "energy_uj",
    "host_latency_ms",
    "flash_bytes",
    "ram_bytes",
    "size_bytes",
    "params",
    "macs",
)

OBJECTIVES: tuple[str, ...] = ("accuracy", "latency_ms", "energy_uj", "flash_bytes", "ram_bytes")


def _require(mapping: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(mapping, Mapping):
        raise InputError(f"report: {where} must be an object, got {type(mapping).__name__}.")
    for key in keys:
        if key not in mapping:
            raise InputError(f"report: {where} has no {key!r} key (schema version 1).")


def validate(report: Mapping[str, Any]) -> None:
    """Check ``report`` against schema version 1, naming the first key that is missing or wrong.

    Raises:
        InputError: a missing key (named with where it belongs), another schema version or
            kind, or a ``chosen`` trial that is not among the candidates.

    Example:
        >>> validate({"schema_version": 1})
        Traceback (most recent call last):
        ...
        edgeopt.errors.InputError: report: the report has no 'kind' key (schema version 1).
    """
    _require(report, REPORT_KEYS, "the report")
    if report["schema_version"] != SCHEMA_VERSION:
        raise InputError(
            f"report: schema_version must be {SCHEMA_VERSION}, got {report['schema_version']!r}."
        )
    if report["kind"] != KIND:
        raise InputError(f"report: kind must be {KIND!r}, got {report['kind']!r}.")
    for section, keys in SECTION_KEYS.items():
        _require(report[section], keys, section)
    _require(report["baseline"], CANDIDATE_KEYS, "baseline")
    candidates = report["candidates"]
    if not isinstance(candidates, list | tuple):
        raise InputError("report: candidates must be a list.")
    for index, candidate in enumerate(candidates):
        _require(candidate, CANDIDATE_KEYS, f"candidates[{index}]")
    if report["sensitivity"] is not None:
        _require(report["sensitivity"], SENSITIVITY_KEYS, "sensitivity")
    trials = {candidate["trial"] for candidate in candidates}
    chosen = report["chosen"]
    if chosen is not None and chosen not in trials:
        raise InputError(f"report: chosen trial {chosen!r} is not among the candidates.")
