"""The optimize report: JSON written atomically with stable keys, and a self-contained page."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeopt.errors import InputError
from edgeopt.report import CANDIDATE_KEYS
from edgeopt.report import REPORT_KEYS
from edgeopt.report import pareto_svg
from edgeopt.report import render_html
from edgeopt.report import write_report
from edgeopt.report._svg import nice_domain
from edgeopt.report.schema import METRICS

SECTIONS = (
    "summary",
    "pareto",
    "pareto-latency",
    "pareto-energy",
    "sensitivity-section",
    "memory",
    "comparison",
    "baseline-vs-chosen",
    "candidates",
    "environment-table",
    "study-table",
    "provenance",
)


def test_write_report_writes_sorted_json_and_page(
    tmp_path: Path, feasible_report: dict[str, Any]
) -> None:
    json_path, html_path = write_report(tmp_path / "run", feasible_report)
    assert (json_path, html_path) == (tmp_path / "run/report.json", tmp_path / "run/report.html")
    text = json_path.read_text()
    loaded = json.loads(text)
    assert loaded == json.loads(json.dumps(feasible_report))
    assert text == json.dumps(loaded, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert list(loaded) == sorted(REPORT_KEYS)
    assert list(loaded["candidates"][0]) == sorted(CANDIDATE_KEYS)
    # no temporary file is left beside them, and a second write is byte for byte the same
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["report.html", "report.json"]
    write_report(tmp_path / "run", feasible_report)
    assert json_path.read_text() == text
    assert html_path.read_text().startswith("<!DOCTYPE html>")


def test_write_report_leaves_old_files_when_rendering_fails(
    tmp_path: Path, feasible_report: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_report(tmp_path, feasible_report)
    before = (tmp_path / "report.json").read_text()

    def broken(report: Any) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr("edgeopt.report.render_html", broken)
    changed = copy.deepcopy(feasible_report)
    changed["model"] = "zoo:cnn-s?width=0.25"
    with pytest.raises(RuntimeError):
        write_report(tmp_path, changed)
    assert (tmp_path / "report.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


@pytest.mark.parametrize("key", ["kind", "candidates", "sensitivity", "provenance"])
def test_missing_top_level_key_is_named(
    tmp_path: Path, feasible_report: dict[str, Any], key: str
) -> None:
    broken = {k: v for k, v in feasible_report.items() if k != key}
    with pytest.raises(InputError, match=f"'{key}'"):
        write_report(tmp_path, broken)
    assert not list(tmp_path.iterdir())


def test_missing_candidate_or_section_key_is_named_with_its_place(
    tmp_path: Path, feasible_report: dict[str, Any]
) -> None:
    broken = copy.deepcopy(feasible_report)
    del broken["candidates"][1]["latency_ms"]
    with pytest.raises(InputError, match=r"candidates\[1\] has no 'latency_ms'"):
        write_report(tmp_path, broken)
    broken = copy.deepcopy(feasible_report)
    del broken["environment"]["threads"]
    with pytest.raises(InputError, match="environment has no 'threads'"):
        write_report(tmp_path, broken)
    broken = copy.deepcopy(feasible_report)
    broken["chosen"] = 99
    with pytest.raises(InputError, match="chosen trial 99"):
        write_report(tmp_path, broken)


def test_page_contains_no_url_even_when_the_inputs_do(feasible_report: dict[str, Any]) -> None:
    report = copy.deepcopy(feasible_report)
    report["model"] = "https://example.org/model.onnx"
    report["study"]["storage"] = "postgresql://edgeopt:***@db/edgeopt http://proxy"
    page = render_html(report)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert "https:&#47;&#47;example.org/model.onnx" in page  # shown, as text


def test_page_has_every_section_and_plot(
    feasible_report: dict[str, Any], read_dom: Callable[[str], Any]
) -> None:
    dom = read_dom(render_html(feasible_report))
    for element_id in SECTIONS:
        assert dom.by_id(element_id) is not None, element_id
    candidates = feasible_report["candidates"]
    for plot in ("pareto-latency", "pareto-energy"):
        assert dom.by_id(plot) == ("svg", dom.by_id(plot)[1])
        assert "pareto" in dom.by_id(plot)[1]["class"].split()
        assert len(dom.find("circle", "point", inside=plot)) == len(candidates)
        assert len(dom.find("circle", "pareto", inside=plot)) == len(feasible_report["pareto"])
        infeasible = sum(not c["is_feasible"] for c in candidates)
        assert len(dom.find("circle", "infeasible", inside=plot)) == infeasible
        assert len(dom.find("circle", "chosen-ring", inside=plot)) == 1
        assert len(dom.find("path", "baseline-marker", inside=plot)) == 1
        assert len(dom.find("text", "tick", inside=plot)) >= 6
    # latency and accuracy limits are set, energy is not
    assert len(dom.find("line", "limit", inside="pareto-latency")) == 2
    assert len(dom.find("line", "limit", inside="pareto-energy")) == 1
    layers = feasible_report["sensitivity"]["layers"]
    assert len(dom.find("g", "layer", inside="sensitivity")) == len(layers)
    assert len(dom.find("polyline", "series", inside="memory-schedule")) == 2
    assert len(dom.find("line", "limit", inside="memory-schedule")) == 1  # the baseline's peak
    assert len(dom.find("tr", "metric-row", inside="baseline-vs-chosen")) == len(METRICS)
    assert len(dom.find("tr", "candidate", inside="candidates")) == len(candidates)
    assert len(dom.find("tr", "chosen", inside="candidates")) == 1


def test_point_tooltips_name_the_trial_and_its_recipe(
    feasible_report: dict[str, Any], read_dom: Callable[[str], Any]
) -> None:
    dom = read_dom(render_html(feasible_report))
    points = dom.find("circle", "point", inside="pareto-latency")
    by_trial = {c["trial"]: c for c in feasible_report["candidates"]}
    for index in points:
        trial = int(dom.elements[index][1]["data-trial"])
        tooltip = dom.titles[index]
        assert tooltip.startswith(f"trial {trial}: ")
        for step in by_trial[trial]["recipe"]["steps"]:
            assert f"{step['step']}(" in tooltip


def test_comparison_says_how_each_number_was_obtained(
    feasible_report: dict[str, Any],
) -> None:
    page = render_html(feasible_report)
    table = page[page.index('<table id="baseline-vs-chosen"') :]
    table = table[: table.index("</table>")]
    assert f"chosen (trial {feasible_report['chosen']})" in table
    assert table.count('class="badge estimated"') == 2  # latency and energy on the target
    assert table.count('class="badge measured"') >= 3  # accuracy (and its drop), host latency


def test_infeasible_report_explains_and_compares_the_closest(
    tmp_path: Path, infeasible_report: dict[str, Any], read_dom: Callable[[str], Any]
) -> None:
    assert infeasible_report["chosen"] is None and infeasible_report["closest"]
    _, html_path = write_report(tmp_path, infeasible_report)
    page = html_path.read_text()
    dom = read_dom(page)
    assert dom.by_id("status")[1]["class"] == "status infeasible"
    assert dom.by_id("explanation") is not None
    assert "max_latency_ms is" in page
    closest = infeasible_report["closest"][0]
    assert f"closest (trial {closest}, infeasible)" in page
    assert "<h2>Baseline against closest</h2>" in page
    assert not dom.find("circle", "chosen-ring")
    # the target's RAM is far above these activations: a note, not a line squashing the plot
    assert not dom.find("line", "limit", inside="memory-schedule")
    assert len(dom.find("text", "limit-note", inside="memory-schedule")) == 1
    assert len(dom.find("circle", "infeasible", inside="pareto-latency")) == len(
        infeasible_report["candidates"]
    )


def _degenerate(report: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any]:
    report = copy.deepcopy(report)
    report["candidates"] = candidates
    report["pareto"] = [c["trial"] for c in candidates if c["is_pareto"]]
    trials = {c["trial"] for c in candidates}
    report["chosen"] = report["chosen"] if report["chosen"] in trials else None
    report["is_feasible"] = report["chosen"] is not None
    report["closest"] = [t for t in report["closest"] if t in trials]
    return report


def test_degenerate_reports_render(
    tmp_path: Path, feasible_report: dict[str, Any], read_dom: Callable[[str], Any]
) -> None:
    one = copy.deepcopy(feasible_report["candidates"][0])
    equal = [dict(copy.deepcopy(one), trial=t) for t in range(3)]
    missing = dict(copy.deepcopy(one), host_latency_ms=None, memory_schedule=None, energy_uj=None)
    cases = {
        "none": [],
        "one": [one],
        "equal": equal,
        "missing": [missing],
    }
    for name, candidates in cases.items():
        report = _degenerate(feasible_report, candidates)
        if name == "equal":
            report["baseline"] = dict(copy.deepcopy(one), trial=-1)
            report["sensitivity"]["layers"] = [
                {"name": "flat", "accuracy": [0.5] * len(report["sensitivity"]["ratios"])}
            ]
        if name == "missing":
            report["sensitivity"] = None
        _, html_path = write_report(tmp_path / name, report)
        page = html_path.read_text()
        dom = read_dom(page)
        assert not re.search(r"\bNone\b|\b(nan|inf)\b", page), name  # Python reprs leaking
        drawn = len(dom.find("circle", "point", inside="pareto-latency"))
        assert drawn == len(candidates), name
        if name == "missing":
            assert dom.by_id("sensitivity-note") is not None
            assert not dom.find("circle", "point", inside="pareto-energy")  # no energy value
            assert "—" in page
    for values, inside in (([3.0, 3.0, 3.0], 3.0), ([0, 0], 0.0), ([], 0.5)):
        lo, hi, ticks = nice_domain(values)
        assert lo <= inside <= hi and lo < hi and len(ticks) >= 2, values


def test_json_holds_no_nan(tmp_path: Path, feasible_report: dict[str, Any]) -> None:
    report = copy.deepcopy(feasible_report)
    report["sensitivity"]["layers"][0]["accuracy"][0] = float("nan")
    json_path, _ = write_report(tmp_path, report)
    loaded = json.loads(json_path.read_text())  # strict JSON: NaN would not parse elsewhere
    assert loaded["sensitivity"]["layers"][0]["accuracy"][0] is None


def test_pareto_svg_standalone_is_a_well_formed_svg_file(feasible_report: dict[str, Any]) -> None:
    svg = pareto_svg(
        feasible_report["candidates"],
        "energy_uj",
        baseline=feasible_report["baseline"],
        chosen=feasible_report["chosen"],
        standalone=True,
    )
    root = ET.fromstring(svg)
    namespace = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{namespace}svg" and root.get("id") == "pareto-energy_uj"
    circles = [c for c in root.iter(f"{namespace}circle") if "point" in c.get("class", "")]
    assert len(circles) == len(feasible_report["candidates"])
    inline = pareto_svg(feasible_report["candidates"], "energy_uj")
    assert "xmlns" not in inline and "http" not in inline
