"""The console tables at 80 columns: every value shows whole, none cut short with an ellipsis
(``edgeopt targets`` was unreadable at 80 columns, and optimize's "fits" column said "ye")."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from edgeopt import DistillConfig
from edgeopt import MixedPrecisionConfig
from edgeopt import PruneConfig
from edgeopt.pipeline import Recipe
from edgeopt.pipeline import Step
from edgeopt.report.console import format_bytes
from edgeopt.report.console import render_metrics
from edgeopt.report.console import render_optimize
from edgeopt.report.console import render_targets
from edgeopt.target import Target
from edgeopt.target import list_targets


def printed(render: Any, *args: Any, width: int = 80) -> list[str]:
    """The lines ``render`` prints on a console of ``width`` columns (as COLUMNS=80 gives)."""
    buffer = io.StringIO()
    console = Console(width=width, file=buffer, markup=False, color_system=None)
    render(*args, console=console)
    lines = buffer.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    assert not any("…" in line for line in lines), "a value was cut short"
    return lines


def cells(lines: list[str]) -> set[str]:
    """Every cell text of a table's lines: the runs between box lines and double spaces."""
    found = set()
    for line in lines:
        for part in line.replace("│", "  ").replace("┃", "  ").split("  "):
            if part.strip():
                found.add(part.strip())
    return found


def column(lines: list[str], index: int) -> str:
    """The text of column ``index`` of a boxed table, its lines joined in order."""
    parts = [line.split("│")[index].strip() for line in lines if line.count("│") > index]
    return " ".join(part for part in parts if part)


def test_targets_at_80_columns_show_every_name_and_number_whole() -> None:
    profiles = [Target.from_name(name) for name in list_targets()]
    lines = printed(render_targets, profiles)
    shown = cells(lines)
    for target in profiles:
        assert target.name in shown
        assert f"{target.clock_hz / 1e6:,.0f} MHz" in shown
        assert f"{format_bytes(target.flash_bytes)} flash" in shown
        assert f"{format_bytes(target.ram_bytes)} RAM" in shown
        assert f"{target.active_power_mw:,.1f} mW" in shown
    # descriptions and runtimes wrap at spaces, every word whole
    text = column(lines, 2)
    for target in profiles:
        assert f"{target.description} runtime: {target.runtime} error: {target.error_label}" in text
    assert "±25% latency, ±25% energy, validated on 8 published results" in text


def _record(trial: int, recipe: Recipe, *, flash_bytes: int, is_feasible: bool) -> dict[str, Any]:
    """A CANDIDATE row with numbers as wide as a search writes them."""
    return {
        "trial": trial,
        "recipe": recipe.to_dict(),
        "accuracy": 0.9616,
        "accuracy_drop_pp": -12.34,
        "latency_ms": 1234.56,
        "energy_uj": 12345.6,
        "flash_bytes": flash_bytes,
        "ram_bytes": 65536,
        "is_feasible": is_feasible,
        "is_pareto": True,
    }


@pytest.fixture(scope="module")
def searched() -> SimpleNamespace:
    """An OptimizeResult's rendered parts: a three-step recipe, and a trial that does not fit."""
    distill = Step(DistillConfig(epochs=2), student="zoo:ds-cnn-s?width=0.25")
    prune = Step(PruneConfig(granularity="channel", ratio=0.5))
    mixed = Step(MixedPrecisionConfig(max_flash_bytes=123456))
    baseline = _record(-1, Recipe(), flash_bytes=2_000_000, is_feasible=True)
    steps = (distill, prune, mixed)
    chosen = _record(12, Recipe(steps=steps), flash_bytes=123456, is_feasible=True)
    report = {
        "model": "zoo:ds-cnn-s?width=0.5",
        "target": {"name": "cortex-m4-tflm"},
        "study": {
            "name": "edgeopt",
            "storage": "sqlite:///runs/search/study.db",
            "trials_complete": 123,
            "trials_failed": 4,
        },
        "chosen": 12,
        "closest": [],
        "baseline": baseline,
        "candidates": [
            chosen,
            _record(107, Recipe(steps=(mixed,)), flash_bytes=999, is_feasible=False),
        ],
    }
    return SimpleNamespace(
        report=report,
        is_feasible=True,
        model_path=Path("runs/search/model.onnx"),
        explanation=None,
        closest_paths=[],
        report_paths=[Path("runs/search/report.json"), Path("runs/search/report.html")],
    )


@pytest.mark.parametrize("width", [80, 120])
def test_the_optimize_table_shows_every_value_whole(searched: SimpleNamespace, width: int) -> None:
    lines = printed(render_optimize, searched, width=width)
    rows = {line.split()[0]: line for line in lines if line.split()[:1] in (["12"], ["107"])}
    assert rows["12"].split()[-1] == "yes" and rows["107"].split()[-1] == "NO"
    shown = cells(lines)
    for value in ("96.16%", "-12.34", "1.23e+03", "12,345.6", "120.6 KiB", "999 B", "64.0 KiB"):
        assert value in shown, value
    text = " ".join(" ".join(shown).split())
    for step in ("distill(ds-cnn-s?width=0.25)", "prune(channel 0.5)", "mixed(123,456 B)"):
        assert step in text
    assert "chosen: trial 12, wrote runs/search/model.onnx" in lines


@pytest.mark.parametrize(
    ("max_drop", "words"),
    [
        (1.0, "accuracy budget: at most 1 pp below the baseline (default; --max-accuracy-drop)"),
        (2.5, "accuracy budget: at most 2.5 pp below the baseline"),
        (None, "accuracy budget: none (--max-accuracy-drop none), any drop fits"),
    ],
)
def test_the_accuracy_budget_is_said_and_a_pick_far_below_without_one_is_warned_of(
    searched: SimpleNamespace, max_drop: float | None, words: str
) -> None:
    """A search once picked a model 56 pp below its baseline with exit code 0 and no word."""
    report = {**searched.report, "constraints": {"max_accuracy_drop_pp": max_drop}}
    far = {**report["candidates"][0], "accuracy_drop_pp": 56.0}
    report["candidates"] = [far, *report["candidates"][1:]]
    lines = printed(render_optimize, SimpleNamespace(**{**vars(searched), "report": report}))
    assert words in lines
    text = " ".join(" ".join(lines).split())
    warned = "warning: the pick is 56.00 pp below the baseline, beyond the default budget of 1 pp"
    assert (warned in text) == (max_drop is None)


def test_profile_at_80_columns_shows_the_verdict_and_every_layer_whole() -> None:
    from edgeopt.measure import profile

    metrics = profile("zoo:ds-cnn-s", target="jetson-orin-nano")
    lines = printed(render_metrics, metrics)
    shown = cells(lines)
    assert "flash yes, ram yes" in shown and "fits jetson-orin-nano" in column(lines, 1)
    assert f"{metrics.macs:,}" in shown and format_bytes(metrics.peak_ram_bytes) in shown
    for layer in metrics.layers:
        assert layer.name.removeprefix("node_") in shown
        assert f"{layer.macs:,}" in shown
