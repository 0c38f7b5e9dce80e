"""edgeopt's C kernels execute no more instructions than TFLite Micro's reference kernels, per
layer kind, on the four MLPerf Tiny reference models (emulated Cortex-M4; benchmarks/
kernel_compare.py).

Before the kernels were rewritten (commit c02d576) this failed: the IC model's 3x3 and
1x1-stride-2 convolutions ran 2.9-5.9x the reference's instructions and the VWW first
convolution 1.32x (BENCHMARKS.md, "edgeopt's kernels beside reference TFLM").
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeopt.measure.cortexm import has_cortexm_tools

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.mark.slow
@pytest.mark.skipif(not has_cortexm_tools(), reason="needs arm-none-eabi-gcc, newlib and QEMU")
def test_edgeopt_kernels_at_most_tflm_reference_per_layer_kind(tmp_path: Path) -> None:
    from benchmarks.kernel_compare import compare_model

    from edgeopt.measure.mlperf import REFERENCE_MODELS

    slower = {}
    for benchmark in REFERENCE_MODELS:
        row = compare_model(benchmark, tmp_path / benchmark)
        assert row["by_kind"], benchmark
        for kind, total in row["by_kind"].items():
            assert total["tflm_reference"] > 0
            if total["edgeopt"] > total["tflm_reference"]:
                slower[f"{benchmark}/{kind}"] = total["ratio"]
    assert not slower, f"edgeopt / TFLM reference instructions where edgeopt is slower: {slower}"
