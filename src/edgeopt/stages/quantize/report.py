"""Quantize and compare: the fp32 and the quantized file profiled back to back, one record.

What ``edgeopt quantize`` shows and writes: :func:`quantize_and_profile` runs
:func:`edgeopt.stages.quantize.quantize`'s work into a staging folder beside the output,
profiles the fp32 file (the input ONNX file, or the PyTorch model's export) and the quantized
one with the same data, threads and target, and renames ``OUT.onnx`` and ``OUT.json`` into place
together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from edgeopt._io import scratch_dir
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import QuantizeConfig
from edgeopt.stages.quantize import QuantizeResult
from edgeopt.stages.quantize import check_inputs
from edgeopt.stages.quantize import check_output
from edgeopt.stages.quantize import quantize_into
from edgeopt.training import ProgressFn

if TYPE_CHECKING:
    from edgeopt.metrics import Metrics
    from edgeopt.target import Target

__all__ = ["QuantizeReport", "quantize_and_profile"]


@dataclass(frozen=True)
class QuantizeReport:
    """A quantization and the profile of both files: the fp32 one and the quantized one."""

    result: QuantizeResult
    fp32: Metrics
    quantized: Metrics
    record_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.result.to_dict(),
            "ranges_summary": _ranges_summary(self.result.ranges),
            "metrics": {"fp32": self.fp32.to_dict(), "quantized": self.quantized.to_dict()},
        }


def _ranges_summary(ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    if not ranges:
        return {"tensors": 0}
    widths = np.array([hi - lo for lo, hi in ranges.values()])
    return {
        "tensors": len(ranges),
        "lowest": min(lo for lo, _ in ranges.values()),
        "highest": max(hi for _, hi in ranges.values()),
        "median_width": float(np.median(widths)),
    }


def quantize_and_profile(
    model: str | ModelHandle,
    config: QuantizeConfig | None = None,
    *,
    data: str | Dataset,
    output: str | Path,
    target: str | Target = "cortex-m4",
    threads: int = 1,
    progress: ProgressFn | None = None,
) -> QuantizeReport:
    """Quantize, profile the fp32 and the quantized file back to back, write both records.

    ``OUT.onnx`` and ``OUT.json`` (the result, a ranges summary and both files' Metrics) are
    staged beside the output and renamed together: both appear, or neither. The fp32 file is
    the input ONNX file (never modified) or the PyTorch model's export.

    Args:
        model: a model spec or handle.
        config: as for :func:`quantize`.
        data: the dataset; accuracy is measured on its test split.
        output: the ``.onnx`` file to write.
        target: the device profile for the estimates (latency, energy, fits).
        threads: ONNX Runtime threads for the latency measurement (batch 1).
        progress: QAT's progress callback.

    Returns:
        The result, both Metrics records and the JSON record's path.

    Raises:
        InputError: see :func:`quantize`; an unknown target.
        BudgetError: see :func:`quantize`.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "int8.onnx"
        >>> report = quantize_and_profile("zoo:cnn-s", data="digits", output=out)
        >>> report.quantized.size_bytes < report.fp32.size_bytes, report.record_path.exists()
        (True, True)
    """
    from edgeopt._io import write_json
    from edgeopt.measure import profile_onnx
    from edgeopt.target import Target

    config = config or PTQConfig()
    out = Path(output)
    dataset = load_data(data)
    resolved = Target.from_name(target) if isinstance(target, str) else target
    handle = load_model(model, data=dataset)
    check_output(out, handle)
    check_inputs(handle, config, dataset)
    record = out.with_suffix(".json")
    created = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with scratch_dir(out.parent) as staging:
            staged = Path(staging) / out.name
            result, fp32_path = quantize_into(
                handle, config, dataset, staged, Path(staging), progress
            )
            fp32 = profile_onnx(fp32_path, data=dataset, target=resolved, threads=threads)
            quantized = profile_onnx(staged, data=dataset, target=resolved, threads=threads)
            result = replace(result, model=replace(result.model, spec=str(out), onnx_path=out))
            report = QuantizeReport(result, fp32, quantized, record)
            write_json(staged.with_suffix(".json"), report.to_dict())
            os.replace(staged, out)
            os.replace(staged.with_suffix(".json"), record)
    except BaseException:
        for folder in created:  # deepest first
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return report
