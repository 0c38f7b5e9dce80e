"""The report of ``edgeopt optimize``: ``report.json`` (stable keys) and a self-contained page.

The schema (version 1) is written down once, in :mod:`edgeopt.report.schema`; the search builds
a dict to it and :func:`write_report` checks, writes and renders it. The report never measures
or trains: it shows numbers recorded before, and says which were measured and which estimated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_path
from edgeopt.errors import InputError
from edgeopt.report._html import render_html
from edgeopt.report._plots import memory_svg
from edgeopt.report._plots import pareto_svg
from edgeopt.report._plots import sensitivity_svg
from edgeopt.report.schema import CANDIDATE_KEYS
from edgeopt.report.schema import REPORT_KEYS
from edgeopt.report.schema import SCHEMA_VERSION
from edgeopt.report.schema import validate

__all__ = [
    "CANDIDATE_KEYS",
    "REPORT_KEYS",
    "SCHEMA_VERSION",
    "memory_svg",
    "pareto_svg",
    "render_html",
    "sensitivity_svg",
    "validate",
    "write_report",
]


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON: tuples to lists, NaN and infinity to null (JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise InputError(f"report: {where} is a {type(value).__name__}, which JSON cannot hold.")


def write_report(rundir: Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Check ``report`` and write ``rundir/report.json`` and ``rundir/report.html``, atomically.

    The JSON has sorted keys and a two-space indent, so two runs diff line by line. Both texts
    are made before either file is written: a report that fails to render leaves no half-written
    run directory behind.

    Args:
        rundir: the run directory (created when missing).
        report: the report dict, schema version 1 (:mod:`edgeopt.report.schema`).

    Returns:
        The paths of the JSON file and of the HTML page.

    Raises:
        InputError: a key of the schema is missing (the message names it), another schema
            version, or a value JSON cannot hold.

    Example:
        >>> import tempfile
        >>> write_report(Path(tempfile.mkdtemp()), {"schema_version": 1})
        Traceback (most recent call last):
        ...
        edgeopt.errors.InputError: report: the report has no 'kind' key (schema version 1).
    """
    validate(report)
    payload = _plain(report, "report")
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    page = render_html(payload)
    rundir = Path(rundir)
    json_path = rundir / "report.json"
    html_path = rundir / "report.html"
    with atomic_path(json_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return json_path, html_path
