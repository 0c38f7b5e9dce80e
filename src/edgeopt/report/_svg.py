"""SVG primitives for the report's plots: colours, scales, "nice" ticks, axes, legends.

Hand-written rather than matplotlib: the page must be self-contained and the package lean, and
three scatter/line plots need only a linear scale and round ticks. Colours are presentation
attributes, not CSS, so a plot renders the same inline in the page and as a standalone file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeopt.report._format import AxisFormat
from edgeopt.report._format import esc
from edgeopt.report._format import is_number

#: Colours (Tableau 10): distinguishable, and fixed so that a screenshot test can look for them.
PARETO_COLOUR = "#1f77b4"
FEASIBLE_COLOUR = "#9ecae1"
INFEASIBLE_COLOUR = "#7f7f7f"
CHOSEN_COLOUR = "#ff7f0e"
LIMIT_COLOUR = "#d62728"
BASELINE_COLOUR = "#222222"
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#d62728",
)
DASHES = ("", "6 3", "2 3", "8 3 2 3")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
SVG_NS = "http://www.w3.org/2000/svg"

Number = float | int


def nice_step(span: float, count: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``count`` intervals."""
    raw = span / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


def nice_domain(
    values: Sequence[Number], count: int = 5, unit: float = 1.0
) -> tuple[float, float, list[float]]:
    """Domain (rounded out to ticks) and ticks that hold every value, with a little margin.

    Ticks are round in the axis's display ``unit`` (0.01 for percent, 1024 for KiB), so the
    labels read 60, 70, 80 rather than 195, 391. No values, or all equal, still give a
    non-empty domain: the scale never divides by zero. Counts, sizes and times never go
    negative, so a domain of non-negative values starts at 0 at the lowest.
    """
    finite = [float(v) / unit for v in values if is_number(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    is_non_negative = lo >= 0
    if hi - lo <= 1e-12 * max(1.0, abs(lo), abs(hi)):
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    margin = (hi - lo) * 0.04  # keep markers off the frame
    lo, hi = lo - margin, hi + margin
    if is_non_negative:
        lo = max(lo, 0.0)
    step = nice_step(hi - lo, count)
    first = math.floor(lo / step) * step
    last = math.ceil(hi / step) * step
    ticks = [first + i * step for i in range(int(round((last - first) / step)) + 1)]
    return first * unit, last * unit, [tick * unit for tick in ticks]


def is_near(limit: Any, values: Sequence[Number]) -> bool:
    """Whether a constraint line can share the axis with ``values`` without squashing them.

    A limit far outside the values (a 640 KiB budget over 12 KiB of activations) would leave
    the data a flat line at one edge; such a limit is written as a note instead.
    """
    finite = [float(v) for v in values if is_number(v)]
    if not is_number(limit):
        return False
    if not finite:
        return True
    lo, hi = min(finite), max(finite)
    span = max(hi - lo, abs(hi) * 0.25, 1e-12)
    return bool(lo - 2 * span <= limit <= hi + 2 * span)


@dataclass(frozen=True)
class Scale:
    """A linear map from a data domain onto a pixel range."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def coord(value: float) -> str:
    """A pixel coordinate as SVG text: a tenth of a pixel is finer than any screen."""
    return f"{value:.1f}"


@dataclass(frozen=True)
class Frame:
    """The plot area of one figure and its two scales."""

    x: Scale
    y: Scale
    x_ticks: list[float]
    y_ticks: list[float]
    x_format: AxisFormat
    y_format: AxisFormat

    @property
    def left(self) -> float:
        return self.x.start

    @property
    def right(self) -> float:
        return self.x.end

    @property
    def top(self) -> float:
        return self.y.end

    @property
    def bottom(self) -> float:
        return self.y.start


def make_frame(
    x_values: Sequence[Number],
    y_values: Sequence[Number],
    *,
    x_format: Callable[[float], AxisFormat],
    y_format: Callable[[float], AxisFormat],
    box: tuple[float, float, float, float],
) -> Frame:
    """Scales for the values inside ``box`` (left, top, right, bottom in pixels)."""
    left, top, right, bottom = box
    x_axis = x_format(max((abs(float(v)) for v in x_values if is_number(v)), default=1.0))
    y_axis = y_format(max((abs(float(v)) for v in y_values if is_number(v)), default=1.0))
    x_lo, x_hi, x_ticks = nice_domain(x_values, unit=x_axis.unit)
    y_lo, y_hi, y_ticks = nice_domain(y_values, unit=y_axis.unit)
    return Frame(
        Scale(x_lo, x_hi, left, right),
        Scale(y_lo, y_hi, bottom, top),
        x_ticks,
        y_ticks,
        x_axis,
        y_axis,
    )


def axes(frame: Frame) -> list[str]:
    """Grid, frame, ticks with labels, and the two axis titles."""
    out = ['<g class="axes" font-size="11" fill="#333">']
    x_step = frame.x_ticks[1] - frame.x_ticks[0] if len(frame.x_ticks) > 1 else 1.0
    y_step = frame.y_ticks[1] - frame.y_ticks[0] if len(frame.y_ticks) > 1 else 1.0
    for tick in frame.x_ticks:
        px = coord(frame.x(tick))
        out.append(
            f'<line class="grid" x1="{px}" y1="{coord(frame.top)}" x2="{px}" '
            f'y2="{coord(frame.bottom)}" stroke="#e6e6e6"/>'
        )
        out.append(
            f'<text class="tick x" x="{px}" y="{coord(frame.bottom + 16)}" text-anchor="middle">'
            f"{esc(frame.x_format.tick(tick, x_step))}</text>"
        )
    for tick in frame.y_ticks:
        py = coord(frame.y(tick))
        out.append(
            f'<line class="grid" x1="{coord(frame.left)}" y1="{py}" x2="{coord(frame.right)}" '
            f'y2="{py}" stroke="#e6e6e6"/>'
        )
        out.append(
            f'<text class="tick y" x="{coord(frame.left - 6)}" y="{py}" text-anchor="end" '
            f'dominant-baseline="middle">{esc(frame.y_format.tick(tick, y_step))}</text>'
        )
    out.append(
        f'<rect class="frame" x="{coord(frame.left)}" y="{coord(frame.top)}" '
        f'width="{coord(frame.right - frame.left)}" height="{coord(frame.bottom - frame.top)}" '
        'fill="none" stroke="#888"/>'
    )
    middle_x = (frame.left + frame.right) / 2
    middle_y = (frame.top + frame.bottom) / 2
    out.append(
        f'<text class="axis-label x" x="{coord(middle_x)}" y="{coord(frame.bottom + 36)}" '
        f'text-anchor="middle" font-size="12">{esc(frame.x_format.label)}</text>'
    )
    out.append(
        f'<text class="axis-label y" x="{coord(frame.left - 50)}" y="{coord(middle_y)}" '
        f'text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 {coord(frame.left - 50)} {coord(middle_y)})">'
        f"{esc(frame.y_format.label)}</text>"
    )
    out.append("</g>")
    return out


def open_svg(kind: str, plot_id: str, width: int, height: int, title: str, standalone: bool) -> str:
    """The ``<svg>`` tag: classes and id a test can find, the namespace only when standalone."""
    namespace = f' xmlns="{SVG_NS}"' if standalone else ""
    return (
        f'<svg{namespace} class="plot {esc(kind)}" id="{esc(plot_id)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'font-family="{esc(FONT)}"><title>{esc(title)}</title>'
        f'<rect class="background" width="{width}" height="{height}" fill="#ffffff"/>'
    )


def legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    """A legend: one (marker SVG at the origin, label) pair per row."""
    shift = f"translate({coord(x)} {coord(y)})"
    out = [f'<g class="legend" font-size="11" fill="#333" transform="{shift}">']
    for row, (marker, label) in enumerate(entries):
        out.append(
            f'<g class="legend-entry" transform="translate(0 {row * 18})">{marker}'
            f'<text x="16" y="0" dominant-baseline="middle">{esc(label)}</text></g>'
        )
    out.append("</g>")
    return out


def diamond(cx: float, cy: float, size: float) -> str:
    return (
        f"M{coord(cx)},{coord(cy - size)} L{coord(cx + size)},{coord(cy)} "
        f"L{coord(cx)},{coord(cy + size)} L{coord(cx - size)},{coord(cy)} Z"
    )


def limit_line(frame: Frame, axis: str, value: float, words: str) -> str:
    """A dashed red constraint line across the plot: vertical for ``x``, horizontal for ``y``."""
    if axis == "x":
        px = coord(frame.x(value))
        ends = f'x1="{px}" y1="{coord(frame.top)}" x2="{px}" y2="{coord(frame.bottom)}"'
    else:
        py = coord(frame.y(value))
        ends = f'x1="{coord(frame.left)}" y1="{py}" x2="{coord(frame.right)}" y2="{py}"'
    return (
        f'<line class="limit {axis}" {ends} stroke="{LIMIT_COLOUR}" stroke-width="1.5" '
        f'stroke-dasharray="6 4"><title>{esc(words)}</title></line>'
    )


def plot_notes(frame: Frame, notes: Sequence[str]) -> list[str]:
    """Short notes in the top-left corner of the plot area (a limit off the plot, ...)."""
    return [
        f'<text class="note limit-note" x="{coord(frame.left + 6)}" '
        f'y="{coord(frame.top + 14 + 14 * row)}" font-size="11" fill="{LIMIT_COLOUR}">'
        f"{esc(note)}</text>"
        for row, note in enumerate(notes)
    ]


def empty_note(frame: Frame) -> str:
    return (
        f'<text class="note empty" x="{coord((frame.left + frame.right) / 2)}" '
        f'y="{coord((frame.top + frame.bottom) / 2)}" text-anchor="middle" font-size="13" '
        'fill="#666">no values to plot</text>'
    )
