"""Fixtures for the report tests: a report built from real measurements, and a DOM reader.

The report is not invented: cnn-s is trained briefly on digits, distilled into a half-width
student, quantized and pruned with the library's own verbs, and every file is measured with
``profile_onnx`` on the cortex-m4 profile, as the search does for its trials. Feasibility,
the Pareto flags and the choice are then derived here the simple way, since the search (which
owns them) is written elsewhere; the report tests only need them consistent.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edgeopt.measure.int8 import cpu_flags
from edgeopt.measure.int8 import host_int8

CONSTRAINT_METRICS = {
    "max_accuracy_drop_pp": "accuracy_drop_pp",
    "max_latency_ms": "latency_ms",
    "max_energy_uj": "energy_uj",
    "max_flash_bytes": "flash_bytes",
    "max_ram_bytes": "ram_bytes",
}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _candidate(trial: int, recipe: dict[str, Any], path: Path, data: Any, target: Any) -> dict:
    """Measure one ONNX file and lay the numbers out as a CANDIDATE of the report schema."""
    from edgeopt.graph import read_graph
    from edgeopt.measure import profile_onnx
    from edgeopt.measure.memory import plan_memory
    from edgeopt.models import read_onnx

    metrics = profile_onnx(path, data=data, target=target)
    plan = plan_memory(read_graph(read_onnx(path)))
    assert plan.step_bytes == metrics.memory_schedule
    assert metrics.estimate is not None and metrics.latency_ms is not None
    return {
        "trial": trial,
        "recipe": recipe,
        "accuracy": metrics.accuracy,
        "accuracy_drop_pp": 0.0,
        "latency_ms": metrics.estimate.latency_ms,
        "energy_uj": metrics.estimate.energy_uj,
        "flash_bytes": metrics.size_bytes,
        "ram_bytes": metrics.peak_ram_bytes,
        "size_bytes": metrics.size_bytes,
        "params": metrics.params,
        "macs": metrics.macs,
        "host_latency_ms": metrics.latency_ms.p50,
        "is_feasible": True,
        "violations": [],
        "is_pareto": False,
        "artifact": path.name,
        "memory_schedule": {"names": list(plan.step_names), "bytes": list(plan.step_bytes)},
        "int8": metrics.int8.summary() if metrics.int8 is not None else None,
        "_provenance": metrics.provenance,
    }


@dataclass
class Measured:
    """The baseline and the trials, measured once per session, and the run's context."""

    baseline: dict[str, Any]
    candidates: list[dict[str, Any]]
    sensitivity: dict[str, Any]
    provenance: dict[str, str]
    target: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys_low = ("latency_ms", "energy_uj")
    no_worse = a["accuracy"] >= b["accuracy"] and all(a[k] <= b[k] for k in keys_low)
    better = a["accuracy"] > b["accuracy"] or any(a[k] < b[k] for k in keys_low)
    return no_worse and better


def build_report(measured: Measured, constraints: dict[str, float | None]) -> dict[str, Any]:
    """A schema-1 report of ``measured`` under ``constraints``: flags, front, choice, why not."""
    baseline = copy.deepcopy(measured.baseline)
    candidates = copy.deepcopy(measured.candidates)
    limits = {k: v for k, v in constraints.items() if v is not None}
    for candidate in candidates:
        candidate["accuracy_drop_pp"] = (baseline["accuracy"] - candidate["accuracy"]) * 100
        candidate["violations"] = [
            {
                "constraint": name,
                "value": candidate[CONSTRAINT_METRICS[name]],
                "limit": limit,
                "excess": candidate[CONSTRAINT_METRICS[name]] - limit,
            }
            for name, limit in limits.items()
            if candidate[CONSTRAINT_METRICS[name]] > limit
        ]
        candidate["is_feasible"] = not candidate["violations"]
    for candidate in candidates:
        candidate["is_pareto"] = not any(_dominates(o, candidate) for o in candidates)
    feasible = [c for c in candidates if c["is_feasible"]]
    chosen = max(feasible, key=lambda c: (c["accuracy"], -c["latency_ms"]), default=None)
    closest: list[int] = []
    explanation = None
    if chosen is None:
        ranked = sorted(
            candidates, key=lambda c: sum(v["excess"] / v["limit"] for v in c["violations"])
        )
        closest = [c["trial"] for c in ranked[:3]]
        best = ranked[0]
        words = "; ".join(
            f"{v['constraint']} is {v['value']:.4g} against a limit of {v['limit']:.4g} "
            f"(over by {v['excess']:.4g})"
            for v in best["violations"]
        )
        explanation = (
            f"No trial meets every constraint. The closest, trial {best['trial']}: {words}."
        )
    return {
        "schema_version": 1,
        "kind": "edgeopt-optimize-report",
        "created": "2025-01-01T00:00:00Z",
        "environment": dict(measured.environment),
        "model": "zoo:cnn-s",
        "data": "digits",
        "target": dict(measured.target),
        "constraints": {name: constraints.get(name) for name in CONSTRAINT_METRICS},
        "objectives": ["accuracy", "latency_ms", "energy_uj"],
        "study": {
            "name": "report-test",
            "storage": "sqlite:///runs/report-test/study.db",
            "trials_total": len(candidates) + 1,
            "trials_complete": len(candidates),
            "trials_failed": 1,
            "seconds": 12.5,
        },
        "baseline": baseline,
        "candidates": candidates,
        "pareto": [c["trial"] for c in candidates if c["is_pareto"]],
        "chosen": chosen["trial"] if chosen else None,
        "is_feasible": chosen is not None,
        "closest": closest,
        "explanation": explanation,
        "sensitivity": copy.deepcopy(measured.sensitivity),
        "provenance": dict(measured.provenance),
    }


@pytest.fixture(scope="session")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Measured:
    """cnn-s trained, a distilled half-width student, int8 and pruned variants: all measured
    (about 10 s once)."""
    import torch

    import edgeopt
    from edgeopt.config import TrainConfig
    from edgeopt.export.onnx import export_onnx

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast, and robust on shared cores
    try:
        folder = tmp_path_factory.mktemp("report-run")
        data = edgeopt.load_data("digits")
        target = edgeopt.Target.from_name("cortex-m4")
        teacher = edgeopt.train("zoo:cnn-s", data, TrainConfig(epochs=3))
        baseline = _candidate(
            -1,
            {"seed": 0, "steps": []},
            export_onnx(teacher.model, folder / "baseline.onnx"),
            data,
            target,
        )
        student = edgeopt.distill(
            teacher.model, "zoo:cnn-s?width=0.5", edgeopt.DistillConfig(epochs=2), data=data
        )
        pruned = edgeopt.prune(
            teacher.model,
            edgeopt.PruneConfig(granularity="channel", ratio=0.5, finetune_epochs=1),
            data=data,
        )
        ptq = edgeopt.PTQConfig(calibration="minmax")
        distill_step = {"step": "distill", "student": "zoo:cnn-s?width=0.5", "epochs": 2}
        prune_step = {"step": "prune", "granularity": "channel", "ratio": 0.5, "finetune_epochs": 1}
        quantize_step = {"step": "quantize", "method": "ptq", "calibration": "minmax", "bits": 8}
        files = [
            ({"seed": 0, "steps": [quantize_step]}, None, teacher.model),
            ({"seed": 0, "steps": [distill_step]}, student.model, None),
            ({"seed": 0, "steps": [distill_step, quantize_step]}, None, student.model),
            ({"seed": 0, "steps": [prune_step]}, pruned.model, None),
        ]
        candidates = []
        for trial, (recipe, fp32, to_quantize) in enumerate(files):
            path = folder / f"trial-{trial}.onnx"
            if to_quantize is not None:
                edgeopt.quantize(to_quantize, ptq, data=data, output=path)
            else:
                export_onnx(fp32, path)
            candidates.append(_candidate(trial, recipe, path, data, target))
        table = edgeopt.sensitivity(teacher.model, data, ratios=(0.25, 0.5, 0.75))
    finally:
        torch.set_num_threads(threads)
    words = baseline.pop("_provenance")
    for candidate in candidates:
        candidate.pop("_provenance")
    provenance = {
        "accuracy": words["accuracy"],
        "latency_ms": words["estimate"],
        "energy_uj": words["estimate"],
        "flash_bytes": words["size_bytes"],
        "ram_bytes": words["peak_ram_bytes"],
        "host_latency_ms": words["latency_ms"],
        "size_bytes": words["size_bytes"],
        "params": words["params"],
        "macs": words["macs"],
    }
    sensitivity = {
        "model": teacher.model.spec,
        "ratios": list(table.ratios),
        "baseline_accuracy": table.baseline_accuracy,
        "layers": [
            {"name": layer["name"], "accuracy": layer["accuracy"]}
            for layer in table.to_dict()["layers"]
        ],
    }
    environment = {
        "edgeopt": edgeopt.__version__,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "optuna": _version("optuna"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count() or 1,
        "threads": 1,
        "platform": platform.platform(),
        "cpu_flags": list(cpu_flags()),
        "int8": host_int8().describe(),
    }
    target_block = {
        "name": target.name,
        "flash_bytes": target.flash_bytes,
        "ram_bytes": target.ram_bytes,
        "clock_hz": target.clock_hz,
    }
    return Measured(baseline, candidates, sensitivity, provenance, target_block, environment)


@pytest.fixture(scope="session")
def feasible_report(measured: Measured) -> dict[str, Any]:
    """A loose accuracy budget and a latency limit at the median trial: a mixed, feasible run."""
    latencies = sorted(c["latency_ms"] for c in measured.candidates)
    drops = [(measured.baseline["accuracy"] - c["accuracy"]) * 100 for c in measured.candidates]
    constraints = {
        "max_accuracy_drop_pp": max(drops) + 1.0,
        "max_latency_ms": latencies[len(latencies) // 2],
        "max_energy_uj": None,
        "max_flash_bytes": None,
        "max_ram_bytes": measured.baseline["ram_bytes"],
    }
    return build_report(measured, constraints)


@pytest.fixture(scope="session")
def infeasible_report(measured: Measured) -> dict[str, Any]:
    """A latency limit below every trial: nothing is chosen, the closest trials are named."""
    fastest = min(c["latency_ms"] for c in measured.candidates)
    constraints = {name: None for name in CONSTRAINT_METRICS}
    constraints["max_latency_ms"] = fastest / 2
    return build_report(measured, constraints)


@dataclass
class Dom:
    """What the tests look for in a page: elements by tag, with their attributes and text."""

    elements: list[tuple[str, dict[str, str], tuple[str, ...]]] = field(default_factory=list)
    titles: dict[int, str] = field(default_factory=dict)

    def find(self, tag: str, cls: str | None = None, inside: str | None = None) -> list[int]:
        """Indexes of ``tag`` elements having class ``cls``, within the element of id ``inside``."""
        found = []
        for index, (name, attrs, ancestors) in enumerate(self.elements):
            if name != tag:
                continue
            if cls is not None and cls not in attrs.get("class", "").split():
                continue
            if inside is not None and inside not in ancestors:
                continue
            found.append(index)
        return found

    def by_id(self, element_id: str) -> tuple[str, dict[str, str]] | None:
        for name, attrs, _ in self.elements:
            if attrs.get("id") == element_id:
                return name, attrs
        return None


class _Reader(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.dom = Dom()
        self.stack: list[tuple[str, str, int]] = []  # (tag, id, element index)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        ancestors = tuple(element_id for _, element_id, _ in self.stack if element_id)
        self.dom.elements.append((tag, values, ancestors))
        if tag not in self.VOID:
            self.stack.append((tag, values.get("id", ""), len(self.dom.elements) - 1))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        ancestors = tuple(element_id for _, element_id, _ in self.stack if element_id)
        self.dom.elements.append((tag, values, ancestors))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        # the text of a <title> inside an SVG element is its tooltip: keep it by its parent
        if len(self.stack) >= 2 and self.stack[-1][0] == "title":
            parent = self.stack[-2][2]
            self.dom.titles[parent] = self.dom.titles.get(parent, "") + data


@pytest.fixture(scope="session")
def read_dom() -> Callable[[str], Dom]:
    """Parse a page (as written, or as Chromium dumped it) into a :class:`Dom`."""

    def read(page: str) -> Dom:
        reader = _Reader()
        reader.feed(page)
        reader.close()
        return reader.dom

    return read
