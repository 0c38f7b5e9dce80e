"""How the report writes values: units, tick labels, bytes, recipes, and escaping.

Shared by the plots and the tables, so a number reads the same in a tooltip and in a cell.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def esc(value: Any) -> str:
    """Escape text for HTML and XML; "://" is broken up so no text ever reads as a link.

    The page promises no external URL anywhere in its source, and a user's spec or storage
    string may contain one; ``&#47;`` renders as "/" so the reader sees the same text.
    """
    return html.escape(str(value), quote=True).replace("://", ":&#47;&#47;")


def is_number(value: Any) -> bool:
    """A finite int or float (bool is not a number here; None and NaN are missing values)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class AxisFormat:
    """The label of an axis (with its unit) and the size of that unit in the data's terms."""

    label: str
    unit: float = 1.0

    def tick(self, value: float, step: float) -> str:
        """A tick label, with as many decimals as the tick step needs."""
        step = step / self.unit
        decimals = 0
        while decimals < 9 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
            decimals += 1
        return f"{value / self.unit:,.{decimals}f}"


#: What a plot calls each metric, and its unit.
AXIS_NAMES: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy, top-1", "%"),
    "accuracy_drop_pp": ("accuracy drop", "pp"),
    "latency_ms": ("latency on the target, estimated", "ms"),
    "energy_uj": ("energy per inference, estimated", "µJ"),
    "host_latency_ms": ("host latency p50, measured", "ms"),
    "flash_bytes": ("flash", "bytes"),
    "ram_bytes": ("peak RAM", "bytes"),
    "size_bytes": ("file size", "bytes"),
    "params": ("parameters", ""),
    "macs": ("MACs", ""),
}


def axis_format(metric: str, hi: float) -> AxisFormat:
    """The label and tick writer of ``metric``; bytes switch to KiB / MiB for short ticks."""
    name, unit = AXIS_NAMES.get(metric, (metric, ""))
    if metric == "accuracy":
        return AxisFormat(f"{name} (%)", 0.01)
    if unit == "bytes":
        for divisor, suffix in ((1024 * 1024, "MiB"), (1024, "KiB")):
            if abs(hi) >= 4 * divisor:
                return AxisFormat(f"{name} ({suffix})", divisor)
        return AxisFormat(f"{name} (bytes)")
    return AxisFormat(f"{name} ({unit})" if unit else name)


def human_bytes(value: Any) -> str:
    """Bytes as a reader sizes them up: ``61,758 B (60.3 KiB)``."""
    if not is_number(value):
        return "—"
    for divisor, suffix in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if abs(value) >= divisor:
            return f"{int(value):,} B ({value / divisor:,.1f} {suffix})"
    return f"{int(value):,} B"


def format_value(metric: str, value: Any) -> str:
    """One value as the tables and tooltips write it; missing values are an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if metric == "accuracy":
        return f"{value * 100:.2f} %"
    if metric == "accuracy_drop_pp":
        return f"{value:.2f} pp"
    if metric.endswith("_bytes"):
        return f"{int(value):,} B"
    if metric.endswith("_ms"):
        return f"{value:.4g} ms"
    if metric.endswith("_uj"):
        return f"{value:.4g} µJ"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


#: The parameters that tell two recipes apart at a glance. A step written by the search carries
#: every field of its config (learning rate, batch size, ...); the one-line summary keeps these
#: and the flags that are on, and the candidates table lists the rest on request.
KEY_PARAMS = frozenset(
    {
        "student",
        "granularity",
        "ratio",
        "ratio_of",
        "schedule",
        "finetune_epochs",
        "epochs",
        "temperature",
        "alpha",
        "method",
        "calibration",
        "bits",
        "max_flash_bytes",
    }
)
#: Bookkeeping every serialized config carries; never worth a reader's attention.
HIDDEN_PARAMS = frozenset({"step", "kind", "version"})


def _step_summary(step: Mapping[str, Any], is_full: bool) -> str:
    name = str(step.get("step", "?"))
    kind = step.get("kind")
    if isinstance(kind, str) and kind.startswith(f"{name}."):
        name = kind  # quantize.ptq, quantize.qat: the method is part of the name
    params = []
    for key, value in step.items():
        if key in HIDDEN_PARAMS or value is None or value == [] or value == ():
            continue
        if not is_full:
            is_flag_on = value is True and key.startswith(("is_", "allow_"))
            if key not in KEY_PARAMS and not is_flag_on:
                continue
        params.append(key if value is True and not is_full else f"{key}={_short(value)}")
    return f"{name}({', '.join(params)})"


def recipe_summary(recipe: Any, *, is_full: bool = False) -> str:
    """A recipe in one line: ``distill(student=zoo:cnn-s?width=0.5) → quantize.ptq(bits=8)``.

    Args:
        recipe: the CANDIDATE's ``recipe`` mapping.
        is_full: every parameter of every step, not only those in :data:`KEY_PARAMS`.
    """
    if not isinstance(recipe, Mapping):
        return "—"
    parts = [
        _step_summary(step, is_full) if isinstance(step, Mapping) else str(step)
        for step in recipe.get("steps") or ()
    ]
    text = " → ".join(parts) if parts else "no steps (baseline)"
    if recipe.get("seed") is not None:
        text += f" · seed {recipe['seed']}"
    return text


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
