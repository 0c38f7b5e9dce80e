"""The report's three figures: the Pareto front, per-layer sensitivity, memory per step."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from edgeopt.report._format import AXIS_NAMES
from edgeopt.report._format import AxisFormat
from edgeopt.report._format import axis_format
from edgeopt.report._format import esc
from edgeopt.report._format import format_value
from edgeopt.report._format import human_bytes
from edgeopt.report._format import is_number
from edgeopt.report._format import recipe_summary
from edgeopt.report._svg import BASELINE_COLOUR
from edgeopt.report._svg import CHOSEN_COLOUR
from edgeopt.report._svg import DASHES
from edgeopt.report._svg import FEASIBLE_COLOUR
from edgeopt.report._svg import INFEASIBLE_COLOUR
from edgeopt.report._svg import LIMIT_COLOUR
from edgeopt.report._svg import PALETTE
from edgeopt.report._svg import PARETO_COLOUR
from edgeopt.report._svg import Number
from edgeopt.report._svg import axes
from edgeopt.report._svg import coord
from edgeopt.report._svg import diamond
from edgeopt.report._svg import empty_note
from edgeopt.report._svg import is_near
from edgeopt.report._svg import legend
from edgeopt.report._svg import limit_line
from edgeopt.report._svg import make_frame
from edgeopt.report._svg import open_svg
from edgeopt.report._svg import plot_notes


def _point_title(candidate: Mapping[str, Any], x: str, y: str) -> str:
    trial = candidate.get("trial")
    head = "baseline" if trial == -1 else f"trial {trial}"
    lines = [
        f"{head}: {recipe_summary(candidate.get('recipe'))}",
        f"{y} {format_value(y, candidate.get(y))}, {x} {format_value(x, candidate.get(x))}",
    ]
    if candidate.get("is_feasible") is False:
        broken = [
            str(v.get("constraint"))
            for v in candidate.get("violations") or ()
            if isinstance(v, Mapping)
        ]
        lines.append("infeasible" + (f": {', '.join(broken)}" if broken else ""))
    return "\n".join(lines)


def pareto_svg(
    candidates: Sequence[Mapping[str, Any]],
    x: str,
    y: str = "accuracy",
    *,
    baseline: Mapping[str, Any] | None = None,
    chosen: int | None = None,
    x_limit: float | None = None,
    y_limit: float | None = None,
    plot_id: str | None = None,
    title: str | None = None,
    width: int = 580,
    height: int = 380,
    standalone: bool = False,
) -> str:
    """Plot the candidates' ``y`` against ``x``: the Pareto front joined, the choice ringed.

    Feasible Pareto points are filled dark blue and joined in ``x`` order, other feasible points
    light blue, infeasible ones hollow grey; the chosen trial gets an orange ring, the baseline
    a black diamond. ``x_limit`` (an upper bound) and ``y_limit`` (a lower bound on accuracy, an
    upper bound on anything else) are drawn as dashed red lines. Every point has a ``<title>``
    (the browser's tooltip) with its trial number and recipe. Points without a value are left
    out. The shapes carry classes (``point feasible pareto``, ``chosen-ring``,
    ``baseline-marker``, ``limit``, ``pareto-front``) so a test or a style sheet can find them.

    Args:
        candidates: CANDIDATE mappings of the report schema.
        x: the metric on the horizontal axis (``latency_ms``, ``energy_uj``, ...).
        y: the metric on the vertical axis.
        baseline: the baseline CANDIDATE, drawn as a diamond.
        chosen: the chosen trial number, ringed.
        x_limit: the constraint on ``x``, drawn as a vertical line.
        y_limit: the constraint on ``y``, drawn as a horizontal line.
        plot_id: the ``id`` of the ``<svg>`` (default ``pareto-{x}``).
        title: the figure's accessible title.
        width: in pixels.
        height: in pixels.
        standalone: add the SVG namespace, for a file of its own (an ``.svg`` in BENCHMARKS).

    Returns:
        The ``<svg>`` element as text.

    Example:
        >>> points = [{"trial": 0, "accuracy": 0.9, "latency_ms": 4.0, "is_feasible": True,
        ...            "is_pareto": True, "recipe": {"seed": 0, "steps": []}}]
        >>> svg = pareto_svg(points, "latency_ms", chosen=0)
        >>> svg.count('class="point '), "chosen-ring" in svg, "http" in svg
        (1, True, False)
    """
    plot_id = plot_id or f"pareto-{x}"
    title = title or f"{AXIS_NAMES.get(y, (y,))[0]} against {AXIS_NAMES.get(x, (x,))[0]}"
    drawn = [c for c in candidates if is_number(c.get(x)) and is_number(c.get(y))]
    base = (
        baseline if baseline and is_number(baseline.get(x)) and is_number(baseline.get(y)) else None
    )
    x_values = [c[x] for c in drawn] + ([base[x]] if base else [])
    y_values = [c[y] for c in drawn] + ([base[y]] if base else [])
    bound = "at least" if y == "accuracy" else "at most"
    limits = [
        ("x", x_limit, f"limit: {x} at most {format_value(x, x_limit)}"),
        ("y", y_limit, f"limit: {y} {bound} {format_value(y, y_limit)}"),
    ]
    is_drawn = {
        "x": is_near(x_limit, x_values),
        "y": is_near(y_limit, y_values),
    }
    x_values += [x_limit] if is_drawn["x"] else []
    y_values += [y_limit] if is_drawn["y"] else []
    legend_width = 136
    frame = make_frame(
        x_values,
        y_values,
        x_format=lambda hi: axis_format(x, hi),
        y_format=lambda hi: axis_format(y, hi),
        box=(72, 16, width - legend_width - 16, height - 48),
    )
    out = [open_svg("pareto", plot_id, width, height, title, standalone), *axes(frame)]
    notes = []
    for axis, limit, words in limits:
        if is_drawn[axis] and limit is not None:
            out.append(limit_line(frame, axis, float(limit), words))
        elif is_number(limit):
            notes.append(f"{words} (off the plot)")
    front = sorted(
        (c for c in drawn if c.get("is_pareto")), key=lambda c: (float(c[x]), -float(c[y]))
    )
    if len(front) > 1:
        path = " ".join(f"{coord(frame.x(c[x]))},{coord(frame.y(c[y]))}" for c in front)
        out.append(
            f'<polyline class="pareto-front" points="{path}" fill="none" '
            f'stroke="{PARETO_COLOUR}" stroke-width="1.5" stroke-opacity="0.7"/>'
        )
    # infeasible first, Pareto last: the points that matter are drawn on top
    order = sorted(drawn, key=lambda c: (bool(c.get("is_feasible")), bool(c.get("is_pareto"))))
    for candidate in order:
        is_feasible = bool(candidate.get("is_feasible"))
        is_pareto = bool(candidate.get("is_pareto"))
        classes = ["point", "feasible" if is_feasible else "infeasible"]
        if is_pareto:
            classes.append("pareto")
        if chosen is not None and candidate.get("trial") == chosen:
            classes.append("chosen")
        if not is_feasible:
            style = f'r="4.5" fill="#ffffff" stroke="{INFEASIBLE_COLOUR}" stroke-width="1.5"'
        elif is_pareto:
            style = f'r="5.5" fill="{PARETO_COLOUR}" stroke="#ffffff" stroke-width="1"'
        else:
            style = f'r="4.5" fill="{FEASIBLE_COLOUR}" stroke="{PARETO_COLOUR}" stroke-width="1"'
        out.append(
            f'<circle class="{" ".join(classes)}" data-trial="{esc(candidate.get("trial"))}" '
            f'cx="{coord(frame.x(candidate[x]))}" cy="{coord(frame.y(candidate[y]))}" {style}>'
            f"<title>{esc(_point_title(candidate, x, y))}</title></circle>"
        )
    if base is not None:
        out.append(
            f'<path class="baseline-marker" d="{diamond(frame.x(base[x]), frame.y(base[y]), 6)}"'
            f' fill="{BASELINE_COLOUR}"><title>{esc(_point_title(base, x, y))}</title></path>'
        )
    ringed = [c for c in drawn if chosen is not None and c.get("trial") == chosen]
    for candidate in ringed:
        out.append(
            f'<circle class="chosen-ring" cx="{coord(frame.x(candidate[x]))}" '
            f'cy="{coord(frame.y(candidate[y]))}" r="10" fill="none" stroke="{CHOSEN_COLOUR}" '
            f'stroke-width="2.5"><title>chosen: trial {esc(chosen)}</title></circle>'
        )
    entries = [
        (f'<circle r="5.5" fill="{PARETO_COLOUR}"/>', "Pareto, feasible"),
        (f'<circle r="4.5" fill="{FEASIBLE_COLOUR}" stroke="{PARETO_COLOUR}"/>', "feasible"),
        (
            f'<circle r="4.5" fill="#ffffff" stroke="{INFEASIBLE_COLOUR}" stroke-width="1.5"/>',
            "infeasible",
        ),
        (f'<path d="{diamond(0, 0, 6)}" fill="{BASELINE_COLOUR}"/>', "baseline"),
        (
            f'<circle r="8" fill="none" stroke="{CHOSEN_COLOUR}" stroke-width="2.5"/>',
            "chosen",
        ),
        (
            f'<line x1="-7" y1="0" x2="7" y2="0" stroke="{LIMIT_COLOUR}" stroke-width="1.5" '
            'stroke-dasharray="4 3"/>',
            "constraint",
        ),
    ]
    out += legend(entries, width - legend_width + 8, 28)
    if len(drawn) < len(candidates):
        missing = len(candidates) - len(drawn)
        notes.append(f"{missing} candidate(s) without {x} or {y} not drawn")
    out += plot_notes(frame, notes)
    if not drawn and base is None:
        out.append(empty_note(frame))
    out.append("</svg>")
    return "\n".join(out)


def _bytes_format(hi: float) -> AxisFormat:
    fmt = axis_format("ram_bytes", hi)
    return AxisFormat(fmt.label.replace("peak RAM", "live activations"), fmt.unit)


def memory_svg(
    series: Sequence[tuple[str, Sequence[str], Sequence[int]]],
    *,
    ram_bytes: float | None = None,
    plot_id: str = "memory-schedule",
    width: int = 660,
    height: int = 320,
    standalone: bool = False,
) -> str:
    """Plot live activation bytes at every step of the execution schedule, one line per model.

    Args:
        series: (label, step names, live bytes per step) per model; steps are drawn as a
            staircase (a buffer's bytes hold for the whole step), each with a tooltip naming
            the node.
        ram_bytes: the RAM budget, drawn as a dashed red line.
        plot_id: the ``id`` of the ``<svg>``.
        width: in pixels.
        height: in pixels.
        standalone: add the SVG namespace, for a file of its own.

    Returns:
        The ``<svg>`` element as text.
    """
    steps = max((len(values) for _, _, values in series), default=0)
    y_values: list[Number] = [v for _, _, values in series for v in values]
    y_values += [0]
    is_budget_drawn = is_near(ram_bytes, y_values)
    if is_budget_drawn and ram_bytes is not None:
        y_values.append(ram_bytes)
    legend_width = 150
    frame = make_frame(
        [0, max(1, steps)],
        y_values,
        x_format=lambda hi: AxisFormat("step of the execution schedule (node order)"),
        y_format=_bytes_format,
        box=(72, 16, width - legend_width - 16, height - 48),
    )
    out = [
        open_svg("memory", plot_id, width, height, "live activation memory per step", standalone),
        *axes(frame),
    ]
    budget = f"RAM budget {human_bytes(ram_bytes)}"
    if is_budget_drawn and ram_bytes is not None:
        out.append(limit_line(frame, "y", float(ram_bytes), budget))
    elif is_number(ram_bytes):
        out += plot_notes(frame, [f"{budget}: far above, off the plot"])
    entries = []
    for index, (label, names, values) in enumerate(series):
        colour = (BASELINE_COLOUR, CHOSEN_COLOUR, *PALETTE)[index % (len(PALETTE) + 2)]
        corners = []
        for step, value in enumerate(values):
            py = coord(frame.y(value))
            corners += [f"{coord(frame.x(step))},{py}", f"{coord(frame.x(step + 1))},{py}"]
        peak = max(values, default=0)
        out.append(
            f'<polyline class="series" data-label="{esc(label)}" points="{" ".join(corners)}" '
            f'fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{esc(label)}: peak {esc(format_value('ram_bytes', peak))} over "
            f"{len(values)} steps</title></polyline>"
        )
        if len(values) <= 200:  # a tooltip per step; beyond that the markers are clutter
            for step, value in enumerate(values):
                name = names[step] if step < len(names) else f"step {step}"
                out.append(
                    f'<circle class="step" cx="{coord(frame.x(step + 0.5))}" '
                    f'cy="{coord(frame.y(value))}" r="2.5" fill="{colour}">'
                    f"<title>{esc(label)}, step {step}: {esc(name)}, "
                    f"{esc(format_value('ram_bytes', value))} live</title></circle>"
                )
        entries.append(
            (
                f'<line x1="-7" y1="0" x2="7" y2="0" stroke="{colour}" stroke-width="2"/>',
                label,
            )
        )
    if is_budget_drawn:
        entries.append(
            (
                f'<line x1="-7" y1="0" x2="7" y2="0" stroke="{LIMIT_COLOUR}" '
                'stroke-width="1.5" stroke-dasharray="4 3"/>',
                "RAM budget",
            )
        )
    out += legend(entries, width - legend_width + 8, 28)
    if not series:
        out.append(empty_note(frame))
    out.append("</svg>")
    return "\n".join(out)


def sensitivity_svg(
    sensitivity: Mapping[str, Any],
    *,
    plot_id: str = "sensitivity",
    width: int = 660,
    height: int = 340,
    standalone: bool = False,
) -> str:
    """Plot accuracy against pruning ratio with one layer pruned at a time, a line per layer.

    A ratio a layer could not be pruned to (null) breaks its line rather than joining across
    it. The unpruned accuracy is a dashed line, the level every curve starts from.

    Args:
        sensitivity: the report's ``sensitivity`` block.
        plot_id: the ``id`` of the ``<svg>``.
        width: in pixels.
        height: in pixels (grown to fit a long legend).
        standalone: add the SVG namespace, for a file of its own.

    Returns:
        The ``<svg>`` element as text.
    """
    ratios = [float(r) for r in sensitivity.get("ratios") or () if is_number(r)]
    layers = [layer for layer in sensitivity.get("layers") or () if isinstance(layer, Mapping)]
    base = sensitivity.get("baseline_accuracy")
    height = max(height, 40 + 18 * len(layers) + 24)
    y_values = [v for layer in layers for v in layer.get("accuracy") or () if is_number(v)] + (
        [base] if is_number(base) else []
    )
    legend_width = 170
    frame = make_frame(
        ratios or [0.0, 1.0],
        y_values,
        x_format=lambda hi: AxisFormat("fraction of the layer's channels pruned (%)", 0.01),
        y_format=lambda hi: axis_format("accuracy", hi),
        box=(72, 16, width - legend_width - 16, height - 48),
    )
    out = [
        open_svg(
            "sensitivity", plot_id, width, height, "accuracy with one layer pruned", standalone
        ),
        *axes(frame),
    ]
    entries = []
    if is_number(base):
        py = coord(frame.y(float(base)))
        out.append(
            f'<line class="baseline-accuracy" x1="{coord(frame.left)}" y1="{py}" '
            f'x2="{coord(frame.right)}" y2="{py}" stroke="{BASELINE_COLOUR}" stroke-width="1" '
            f'stroke-dasharray="4 3"><title>unpruned: '
            f"{esc(format_value('accuracy', base))}</title></line>"
        )
        entries.append(
            (
                f'<line x1="-7" y1="0" x2="7" y2="0" stroke="{BASELINE_COLOUR}" '
                'stroke-dasharray="4 3"/>',
                "unpruned",
            )
        )
    for index, layer in enumerate(layers):
        colour = PALETTE[index % len(PALETTE)]
        dash = DASHES[(index // len(PALETTE)) % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        name = str(layer.get("name", index))
        values = list(layer.get("accuracy") or ())
        segments: list[list[str]] = [[]]
        markers = []
        for ratio, value in zip(ratios, values, strict=False):
            if not is_number(value):
                segments.append([])
                continue
            point = (frame.x(ratio), frame.y(value))
            segments[-1].append(f"{coord(point[0])},{coord(point[1])}")
            markers.append(
                f'<circle class="sens-point" cx="{coord(point[0])}" cy="{coord(point[1])}" r="3" '
                f'fill="{colour}"><title>layer {esc(name)} pruned {ratio * 100:.0f} %: '
                f"{esc(format_value('accuracy', value))}</title></circle>"
            )
        out.append(f'<g class="layer" data-layer="{esc(name)}">')
        for segment in segments:
            if len(segment) > 1:
                out.append(
                    f'<polyline class="series" points="{" ".join(segment)}" fill="none" '
                    f'stroke="{colour}" stroke-width="2"{dash_attr}>'
                    f"<title>layer {esc(name)}</title></polyline>"
                )
        out += markers
        out.append("</g>")
        entries.append(
            (
                f'<line x1="-7" y1="0" x2="7" y2="0" stroke="{colour}" stroke-width="2"'
                f"{dash_attr}/>",
                name,
            )
        )
    out += legend(entries, width - legend_width + 8, 28)
    if not layers:
        out.append(empty_note(frame))
    out.append("</svg>")
    return "\n".join(out)
