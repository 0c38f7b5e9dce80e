"""Guards on the structure (issue 13, item 6): a lean ``import edgeopt``, a small core, and no
function above the complexity bound without a reason (ruff C901 in ``make lint``)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "edgeopt"

#: What ``import edgeopt`` must not load: the search's database layer, the quantizer of ONNX
#: Runtime, the training and pruning frameworks, and any device SDK or interpreter.
HEAVY = (
    "optuna",
    "sqlalchemy",
    "psycopg2",
    "onnxruntime",
    "onnxruntime.quantization",
    "torch",
    "torch_pruning",
    "tflite_micro",
    "ai_edge_litert",
    "ethosu",
    "tensorflow",
)
#: The core of STYLE.md: small, read by everyone. Lines, all files together.
CORE = ("config.py", "registry.py", "target.py", "metrics.py", "pipeline.py")
#: 1,138 when pipeline.py came in (its Recipe, replay and run); 1,418 when run took over the
#: orchestration of train, distill, prune and quantize (the ~400 lines of stages/prune/report.py,
#: stages/quantize/report.py and save_trained's staging, removed).
CORE_LINE_BUDGET = 1_450


def test_import_edgeopt_loads_no_heavy_or_optional_dependency() -> None:
    code = f"import sys, edgeopt; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"import edgeopt loaded: {done.stdout.strip()}"


def test_the_core_stays_within_its_line_budget() -> None:
    lines = {
        name: len((SRC / name).read_text().splitlines()) for name in CORE if (SRC / name).exists()
    }
    assert sum(lines.values()) <= CORE_LINE_BUDGET, lines


def test_the_complexity_bound_is_enforced_by_the_linter() -> None:
    """ruff's C901 runs in ``make lint`` at 15; a function above it carries ``# noqa: C901``
    with a reason in parentheses."""
    config = tomllib.loads((SRC.parent.parent / "pyproject.toml").read_text())
    lint = config["tool"]["ruff"]["lint"]
    assert "C901" in lint["select"] and lint["mccabe"]["max-complexity"] <= 15
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "noqa: C901" in line:
                assert "noqa: C901  (" in line, f"{path}:{number}: say why it is complex"
