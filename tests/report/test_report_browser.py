"""The report page as a browser shows it: headless Chromium renders the plots and the tables.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); without it these
tests skip and say so. The DOM Chromium dumps is the page after parsing, so a plot that the
HTML parser would drop (a bad nesting, an unclosed tag) is missed here; the screenshot proves
the SVG was painted, not only parsed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgeopt.report import write_report
from edgeopt.report._svg import CHOSEN_COLOUR
from edgeopt.report._svg import LIMIT_COLOUR
from edgeopt.report._svg import PALETTE
from edgeopt.report._svg import PARETO_COLOUR
from edgeopt.report.schema import METRICS

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 120


def _browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


# decided at collection, so a machine without a browser skips before the report is measured
pytestmark = pytest.mark.skipif(
    _browser() is None,
    reason=f"no headless browser on PATH (looked for {', '.join(BROWSERS)}); .ci/run installs "
    "Debian's chromium",
)


def _chromium(browser: str, page: Path, scratch: Path, *arguments: str) -> str:
    """Run headless Chromium on ``page`` with a throw-away profile; return what it printed."""
    command = [
        browser,
        "--headless=new",
        "--no-sandbox",  # needed as root (CI containers)
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={scratch / 'profile'}",
        *arguments,
        page.as_uri(),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False, cwd=scratch
    )
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def _hex(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int32)


def _pixels_near(image: np.ndarray, colour: str, tolerance: int = 10) -> np.ndarray:
    """Mask of the pixels within ``tolerance`` of ``colour`` on every channel."""
    return np.all(np.abs(image - _hex(colour)) <= tolerance, axis=-1)


@pytest.fixture(scope="module")
def browser() -> str:
    found = _browser()
    assert found is not None
    return found


@pytest.fixture(scope="module")
def written(
    browser: str, tmp_path_factory: pytest.TempPathFactory, feasible_report: dict[str, Any]
) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("browser")
    _, html_path = write_report(folder / "run", feasible_report)
    return html_path, folder


def test_chromium_renders_the_plots_and_the_tables(
    browser: str,
    written: tuple[Path, Path],
    feasible_report: dict[str, Any],
    read_dom: Callable[[str], Any],
) -> None:
    html_path, folder = written
    dumped = _chromium(browser, html_path, folder, "--dump-dom")
    dom = read_dom(dumped)
    candidates = feasible_report["candidates"]
    for plot in ("pareto-latency", "pareto-energy"):
        assert dom.by_id(plot) is not None, f"{plot} missing from the rendered DOM"
        assert len(dom.find("circle", "point", inside=plot)) == len(candidates)
        assert len(dom.find("circle", "pareto", inside=plot)) == len(feasible_report["pareto"])
        assert len(dom.find("circle", "chosen-ring", inside=plot)) == 1
    layers = feasible_report["sensitivity"]["layers"]
    assert dom.by_id("sensitivity")[0] == "svg"
    assert len(dom.find("g", "layer", inside="sensitivity")) == len(layers)
    assert dom.by_id("memory-schedule")[0] == "svg"
    steps = len(feasible_report["baseline"]["memory_schedule"]["bytes"])
    assert len(dom.find("polyline", "series", inside="memory-schedule")) == 2
    assert len(dom.find("circle", "step", inside="memory-schedule")) >= steps
    assert dom.by_id("baseline-vs-chosen")[0] == "table"
    assert len(dom.find("tr", "metric-row", inside="baseline-vs-chosen")) == len(METRICS)
    assert len(dom.find("tr", "candidate", inside="candidates")) == len(candidates)


def test_chromium_screenshot_shows_painted_plots(browser: str, written: tuple[Path, Path]) -> None:
    html_path, folder = written
    shot = folder / "report.png"
    _chromium(browser, html_path, folder, f"--screenshot={shot}", "--window-size=1280,2400")
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    assert image.shape[:2] == (2400, 1280)
    colours = {tuple(c) for c in image[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 50, "the page looks blank"
    # the marks of the plots are painted in their own colours: Pareto points and front, the
    # chosen ring, the constraint lines, and a second sensitivity layer
    for colour in (PARETO_COLOUR, CHOSEN_COLOUR, LIMIT_COLOUR, PALETTE[2]):
        assert _pixels_near(image, colour).sum() >= 30, f"no {colour} pixels: a plot is missing"
    # inside the box that holds every Pareto-blue pixel (the two Pareto plots and the
    # sensitivity plot), much is ink: axes, grid, labels, points
    rows, cols = np.nonzero(_pixels_near(image, PARETO_COLOUR))
    box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    ink = np.any(box < 235, axis=-1).mean()
    assert 0.01 < ink < 0.9, f"plot area ink {ink:.3f}"
