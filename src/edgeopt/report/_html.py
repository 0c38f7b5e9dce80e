"""The HTML page of an ``optimize`` report: one self-contained file, no script, no external URL.

Everything the page needs is inside it (inline CSS, inline SVG plots), so it can be mailed,
attached to a CI run or opened on an air-gapped machine and look the same. The page renders the
report dict only: the few derived numbers (a change in percent, the accuracy floor a drop
budget implies) are arithmetic on values already in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from edgeopt.report._format import esc
from edgeopt.report._format import format_value
from edgeopt.report._format import human_bytes
from edgeopt.report._format import is_number
from edgeopt.report._format import recipe_summary
from edgeopt.report._plots import memory_svg
from edgeopt.report._plots import pareto_svg
from edgeopt.report._plots import sensitivity_svg
from edgeopt.report.schema import METRICS
from edgeopt.report.schema import SECTION_KEYS

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; line-height: 1.4; }
main { max-width: 1400px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 4px 16px 16px;
          margin-top: 16px; }
.muted { color: #666; font-size: 13px; }
.status { padding: 8px 12px; border-radius: 4px; margin: 8px 0; font-weight: 600; }
.status.feasible { background: #e6f4ea; border-left: 4px solid #2ca02c; }
.status.infeasible { background: #fdecea; border-left: 4px solid #d62728; }
.explanation { background: #fff8e1; border-left: 4px solid #ff7f0e; padding: 6px 12px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; }
figcaption { font-size: 12px; color: #555; max-width: 660px; }
details summary { font-size: 11px; color: #555; cursor: pointer; }
details code { font-size: 11px; white-space: normal; }
svg.plot { border: 1px solid #eee; background: #fff; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.chosen td { background: #fff3e0; }
tr.infeasible td { color: #777; }
.better { color: #1b7f2a; }
.worse { color: #b3261e; }
.badge { display: inline-block; border-radius: 3px; padding: 0 5px; font-size: 11px;
         font-weight: 600; margin-right: 4px; }
.badge.measured { background: #e3f2fd; color: #0d47a1; }
.badge.estimated { background: #fff3e0; color: #e65100; }
.badge.counted { background: #ede7f6; color: #4527a0; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
.table-scroll { overflow-x: auto; }
"""

#: Metrics where a larger value is better; for every other one smaller is better.
HIGHER_IS_BETTER = frozenset({"accuracy"})
#: A derived metric takes the provenance of the one it is computed from.
DERIVED_FROM = {"accuracy_drop_pp": "accuracy"}
CONSTRAINT_NAMES = {
    "max_accuracy_drop_pp": ("accuracy drop at most", "accuracy_drop_pp"),
    "max_latency_ms": ("latency on the target at most", "latency_ms"),
    "max_energy_uj": ("energy per inference at most", "energy_uj"),
    "max_flash_bytes": ("flash at most", "flash_bytes"),
    "max_ram_bytes": ("peak RAM at most", "ram_bytes"),
}
METRIC_NAMES = {
    "accuracy": "accuracy (top-1)",
    "accuracy_drop_pp": "accuracy drop (pp)",
    "latency_ms": "latency on target (ms)",
    "energy_uj": "energy (µJ)",
    "host_latency_ms": "host latency p50 (ms)",
    "flash_bytes": "flash (bytes)",
    "ram_bytes": "peak RAM (bytes)",
    "size_bytes": "file size (bytes)",
    "params": "parameters",
    "macs": "MACs",
}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _by_trial(report: Mapping[str, Any]) -> dict[Any, Mapping[str, Any]]:
    return {c.get("trial"): c for c in report.get("candidates") or () if isinstance(c, Mapping)}


def compared(report: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str]:
    """The candidate set against the baseline: the chosen one, else the closest infeasible one."""
    trials = _by_trial(report)
    chosen = report.get("chosen")
    if chosen is not None and chosen in trials:
        return trials[chosen], f"chosen (trial {chosen})"
    for trial in report.get("closest") or ():
        if trial in trials:
            return trials[trial], f"closest (trial {trial}, infeasible)"
    return None, "chosen"


def change(metric: str, before: Any, after: Any) -> tuple[str, str]:
    """The change from ``before`` to ``after`` in words, and a class saying better or worse."""
    if not (is_number(before) and is_number(after)):
        return "—", ""
    delta = after - before
    better = delta > 0 if metric in HIGHER_IS_BETTER else delta < 0
    css = "" if delta == 0 else ("better" if better else "worse")
    if metric == "accuracy":
        return f"{delta * 100:+.2f} pp", css
    if metric == "accuracy_drop_pp":
        return f"{delta:+.2f} pp", css
    if before == 0:
        return ("+" if delta >= 0 else "") + format_value(metric, delta), css
    text = f"{delta / abs(before) * 100:+.1f} %"
    if after > 0 and before > 0 and metric not in HIGHER_IS_BETTER and after < before:
        text += f" ({before / after:.2f}× less)"
    return text, css


def provenance_cell(provenance: Mapping[str, Any], metric: str) -> str:
    """How a number was obtained: a measured/estimated/counted badge, then the words."""
    text = provenance.get(metric) or provenance.get(DERIVED_FROM.get(metric, ""))
    if not text:
        return "—"
    word = str(text).split(":")[0].split()[0].lower() if str(text).split() else ""
    badge = (
        f'<span class="badge {word}">{esc(word)}</span>'
        if word in ("measured", "estimated", "counted")
        else ""
    )
    return f"{badge}{esc(text)}"


def _violations(candidate: Mapping[str, Any]) -> str:
    parts = []
    for violation in candidate.get("violations") or ():
        if not isinstance(violation, Mapping):
            continue
        name = str(violation.get("constraint"))
        metric = CONSTRAINT_NAMES.get(name, (name, name))[1]
        parts.append(
            f"{name}: {format_value(metric, violation.get('value'))} > "
            f"{format_value(metric, violation.get('limit'))} "
            f"(over by {format_value(metric, violation.get('excess'))})"
        )
    return "; ".join(parts)


def _headline(report: Mapping[str, Any]) -> str:
    baseline = _mapping(report.get("baseline"))
    other, label = compared(report)
    if other is None:
        return '<p class="headline muted">No candidate to compare with the baseline.</p>'
    items = []
    for metric in ("accuracy", "latency_ms", "energy_uj", "flash_bytes", "ram_bytes"):
        before, after = baseline.get(metric), other.get(metric)
        text, css = change(metric, before, after)
        items.append(
            f"<li><b>{esc(METRIC_NAMES[metric])}</b>: {esc(format_value(metric, before))} → "
            f'{esc(format_value(metric, after))} <span class="{css}">({esc(text)})</span></li>'
        )
    return (
        f'<p class="headline">Baseline against {esc(label)}: '
        f'{esc(recipe_summary(other.get("recipe")))}</p><ul class="headline">'
        + "".join(items)
        + "</ul>"
    )


def _summary(report: Mapping[str, Any]) -> str:
    target = _mapping(report.get("target"))
    constraints = _mapping(report.get("constraints"))
    is_feasible = bool(report.get("is_feasible"))
    chosen = report.get("chosen")
    flash = human_bytes(target.get("flash_bytes"))
    ram = human_bytes(target.get("ram_bytes"))
    clock_hz = target.get("clock_hz")
    clock = f"{clock_hz / 1e6:,.0f} MHz" if is_number(clock_hz) else "—"
    rows = [
        ("model", esc(report.get("model"))),
        ("data", esc(report.get("data"))),
        ("target", esc(f"{target.get('name')}: flash {flash}, RAM {ram}, clock {clock}")),
        ("objectives", esc(", ".join(str(o) for o in report.get("objectives") or ()) or "—")),
    ]
    for key, (words, metric) in CONSTRAINT_NAMES.items():
        value = constraints.get(key)
        if value is None:
            shown = "not set"
        elif metric.endswith("_bytes"):
            shown = human_bytes(value)
        else:
            shown = format_value(metric, value)
        rows.append(
            (f"constraint: {words}", f'<span data-constraint="{esc(key)}">{esc(shown)}</span>')
        )
    facts = "".join(f"<dt>{esc(name)}</dt><dd>{value}</dd>" for name, value in rows)
    if is_feasible and chosen is not None:
        status = (
            f'<div class="status feasible" id="status">Feasible: trial {esc(chosen)} meets every '
            "constraint and is chosen.</div>"
        )
    else:
        closest = ", ".join(f"trial {t}" for t in report.get("closest") or ()) or "none"
        status = (
            '<div class="status infeasible" id="status">Infeasible: no candidate meets every '
            f"constraint; nothing is chosen. Closest: {esc(closest)}.</div>"
        )
    explanation = report.get("explanation")
    explained = (
        f'<p class="explanation" id="explanation">{esc(explanation)}</p>' if explanation else ""
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<dl class="facts">{facts}</dl>{status}{explained}{_headline(report)}</section>'
    )


def _accuracy_floor(report: Mapping[str, Any]) -> float | None:
    drop = _mapping(report.get("constraints")).get("max_accuracy_drop_pp")
    base = _mapping(report.get("baseline")).get("accuracy")
    if is_number(drop) and is_number(base):
        return float(base) - float(drop) / 100
    return None


def _pareto(report: Mapping[str, Any]) -> str:
    candidates = [c for c in report.get("candidates") or () if isinstance(c, Mapping)]
    constraints = _mapping(report.get("constraints"))
    baseline = _mapping(report.get("baseline")) or None
    floor = _accuracy_floor(report)
    figures = []
    for x, plot_id, limit in (
        ("latency_ms", "pareto-latency", constraints.get("max_latency_ms")),
        ("energy_uj", "pareto-energy", constraints.get("max_energy_uj")),
    ):
        svg = pareto_svg(
            candidates,
            x,
            "accuracy",
            baseline=baseline,
            chosen=report.get("chosen"),
            x_limit=limit if is_number(limit) else None,
            y_limit=floor,
            plot_id=plot_id,
        )
        figures.append(f"<figure>{svg}</figure>")
    pareto = ", ".join(str(t) for t in report.get("pareto") or ()) or "none"
    provenance = _mapping(report.get("provenance"))
    how = "".join(
        f"<li>{esc(metric)}: {provenance_cell(provenance, metric)}</li>"
        for metric in ("accuracy", "latency_ms", "energy_uj")
    )
    return (
        '<section id="pareto"><h2>Pareto front</h2>'
        f'<p class="muted">{len(candidates)} candidate(s); Pareto trials: {esc(pareto)}. '
        "Hover a point for its trial and recipe.</p>"
        f'<div class="plots">{"".join(figures)}</div><ul class="muted">{how}</ul></section>'
    )


def _sensitivity(report: Mapping[str, Any]) -> str:
    block = report.get("sensitivity")
    if not isinstance(block, Mapping):
        body = (
            '<p class="note" id="sensitivity-note">No per-layer sensitivity was measured for '
            "this run (no pruning in the search space, or it was turned off).</p>"
        )
    else:
        body = (
            f"<figure>{sensitivity_svg(block)}<figcaption>Validation accuracy of "
            f"{esc(block.get('model'))} with one layer pruned at a time, without fine-tuning: a "
            "flat line is a layer that can lose channels cheaply.</figcaption></figure>"
        )
    return f'<section id="sensitivity-section"><h2>Per-layer sensitivity</h2>{body}</section>'


def _memory(report: Mapping[str, Any]) -> str:
    baseline = _mapping(report.get("baseline"))
    other, label = compared(report)
    short = label.split(",")[0] + (")" if "," in label else "")  # the legend is narrow
    series = []
    for name, candidate in (("baseline", baseline), (short, other)):
        schedule = _mapping(candidate.get("memory_schedule") if candidate else None)
        values = [int(v) for v in schedule.get("bytes") or () if is_number(v)]
        if values:
            series.append((name, [str(n) for n in schedule.get("names") or ()], values))
    constraints = _mapping(report.get("constraints"))
    ram = constraints.get("max_ram_bytes")
    if not is_number(ram):
        ram = _mapping(report.get("target")).get("ram_bytes")
    if not series:
        body = '<p class="note" id="memory-note">No memory schedule was recorded.</p>'
    else:
        svg = memory_svg(series, ram_bytes=ram if is_number(ram) else None)
        body = (
            f"<figure>{svg}<figcaption>Bytes of activations live at each step of the execution "
            "order (counted on the ONNX graph by tensor liveness); the peak is what the RAM "
            "budget must hold. Weights live in flash and are not counted.</figcaption></figure>"
        )
    return f'<section id="memory"><h2>Memory over the execution schedule</h2>{body}</section>'


def _comparison(report: Mapping[str, Any]) -> str:
    baseline = _mapping(report.get("baseline"))
    other, label = compared(report)
    provenance = _mapping(report.get("provenance"))
    rows = []
    for metric in METRICS:
        before = baseline.get(metric)
        after = other.get(metric) if other else None
        text, css = change(metric, before, after)
        rows.append(
            f'<tr class="metric-row" data-metric="{esc(metric)}">'
            f"<th>{esc(METRIC_NAMES.get(metric, metric))}</th>"
            f'<td class="num">{esc(format_value(metric, before))}</td>'
            f'<td class="num">{esc(format_value(metric, after))}</td>'
            f'<td class="num {css}">{esc(text)}</td>'
            f"<td>{provenance_cell(provenance, metric)}</td></tr>"
        )
    return (
        f'<section id="comparison"><h2>Baseline against {esc(label.split(" ")[0])}</h2>'
        '<table id="baseline-vs-chosen"><thead><tr><th>metric</th><th>baseline</th>'
        f"<th>{esc(label)}</th><th>change</th><th>how it was obtained</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _candidates(report: Mapping[str, Any]) -> str:
    chosen = report.get("chosen")
    closest = set(report.get("closest") or ())
    header = "".join(f"<th>{esc(METRIC_NAMES.get(m, m))}</th>" for m in METRICS)
    rows = []
    for candidate in report.get("candidates") or ():
        if not isinstance(candidate, Mapping):
            continue
        trial = candidate.get("trial")
        is_feasible = bool(candidate.get("is_feasible"))
        classes = ["candidate", "feasible" if is_feasible else "infeasible"]
        if candidate.get("is_pareto"):
            classes.append("pareto")
        if chosen is not None and trial == chosen:
            classes.append("chosen")
        if trial in closest:
            classes.append("closest")
        cells = "".join(
            f'<td class="num">{esc(format_value(m, candidate.get(m)))}</td>' for m in METRICS
        )
        feasible = "yes" if is_feasible else "no: " + (_violations(candidate) or "—")
        marks = [
            w
            for w, on in (("chosen", "chosen" in classes), ("closest", "closest" in classes))
            if on
        ]
        rows.append(
            f'<tr class="{" ".join(classes)}" data-trial="{esc(trial)}">'
            f'<td class="num">{esc(trial)}{" (" + ", ".join(marks) + ")" if marks else ""}</td>'
            f"<td>{esc(recipe_summary(candidate.get('recipe')))}"
            "<details><summary>all parameters</summary>"
            f"<code>{esc(recipe_summary(candidate.get('recipe'), is_full=True))}</code>"
            f"</details></td>{cells}"
            f"<td>{esc(feasible)}</td><td>{'yes' if candidate.get('is_pareto') else ''}</td>"
            f"<td>{esc(candidate.get('artifact') or '—')}</td></tr>"
        )
    if not rows:
        rows.append(
            f'<tr class="empty"><td colspan="{len(METRICS) + 5}">no completed trial</td></tr>'
        )
    return (
        '<section id="candidates-section"><h2>Candidates</h2><div class="table-scroll">'
        f'<table id="candidates"><thead><tr><th>trial</th><th>recipe</th>{header}'
        "<th>feasible</th><th>Pareto</th><th>artifact</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _key_table(table_id: str, mapping: Mapping[str, Any], order: Sequence[str]) -> str:
    keys = [k for k in order if k in mapping] + sorted(k for k in mapping if k not in order)
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc('—' if mapping[k] is None else mapping[k])}</td></tr>"
        for k in keys
    )
    return f'<table id="{esc(table_id)}"><tbody>{rows}</tbody></table>'


def _environment(report: Mapping[str, Any]) -> str:
    provenance = _mapping(report.get("provenance"))
    study = dict(_mapping(report.get("study")))
    if is_number(study.get("seconds")):
        study["seconds"] = f"{study['seconds']:.1f}"
    items = "".join(
        f"<li><b>{esc(k)}</b>: {provenance_cell(provenance, k)}</li>" for k in sorted(provenance)
    )
    return (
        '<section id="environment"><h2>Environment and study</h2><div class="plots">'
        "<div><h3>Versions and machine</h3>"
        + _key_table(
            "environment-table", _mapping(report.get("environment")), SECTION_KEYS["environment"]
        )
        + "</div><div><h3>Study</h3>"
        + _key_table("study-table", study, SECTION_KEYS["study"])
        + "</div></div><h3>How each number was obtained</h3>"
        f'<ul id="provenance">{items or "<li>—</li>"}</ul></section>'
    )


def render_html(report: Mapping[str, Any]) -> str:
    """Render the report as one self-contained HTML page (inline CSS and SVG, no script).

    Sections (by ``id``): ``summary``, ``pareto`` (``svg#pareto-latency``,
    ``svg#pareto-energy``), ``sensitivity-section`` (``svg#sensitivity`` or
    ``p#sensitivity-note``), ``memory`` (``svg#memory-schedule``), ``comparison``
    (``table#baseline-vs-chosen``), ``candidates-section`` (``table#candidates``) and
    ``environment``. Every text is escaped, missing numbers show as "—", and no ``http://`` or
    ``https://`` appears anywhere in the source.

    Args:
        report: a report dict of schema version 1 (see :mod:`edgeopt.report.schema`); it is
            rendered as given, so validate it first when it comes from outside.

    Returns:
        The page.

    Example:
        >>> page = render_html({"candidates": [], "chosen": None, "is_feasible": False})
        >>> 'id="pareto-latency"' in page, "http" in page
        (True, False)
    """
    target = _mapping(report.get("target"))
    title = f"edgeopt optimize: {report.get('model', '—')} on {target.get('name', '—')}"
    body = "".join(
        (
            _summary(report),
            _pareto(report),
            _sensitivity(report),
            _memory(report),
            _comparison(report),
            _candidates(report),
            _environment(report),
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1>"
        f'<p class="muted">Created {esc(report.get("created", "—"))}; report schema version '
        f"{esc(report.get('schema_version', '—'))}.</p>"
        f"{body}</main></body></html>\n"
    )
