"""The corpus matrix for the README: every command on twelve user-style models and
seven torchvision / timm architectures (issue 14).

    .venv/bin/python -m benchmarks.corpus
    .venv/bin/python -m benchmarks.corpus --rows DIR  # what EDGEOPT_CORPUS_OUT=DIR wrote

Runs ``tests/corpus/test_matrix.py`` (``make corpus`` runs the same test as a check) with
``EDGEOPT_CORPUS_OUT`` set, then collects one row per model into
``benchmarks/results/corpus.json`` and prints the Markdown table the README shows: ``ok``, or
``refused`` with the sentence, per cell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import machine
from benchmarks._common import save_result

ROOT = Path(__file__).resolve().parent.parent


def _run_matrix() -> tuple[list[dict], int, float]:
    """Run the corpus test with ``EDGEOPT_CORPUS_OUT`` set; its rows, exit code and seconds."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-corpus-") as folder:
        env = {**os.environ, "EDGEOPT_CORPUS_OUT": folder}
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-m",
                "corpus",
                "tests/corpus",
                "-p",
                "no:cacheprovider",
            ],
            cwd=ROOT,
            env=env,
            check=False,
        )
        seconds = time.perf_counter() - start
        rows = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
    return rows, done.returncode, seconds


def main() -> None:
    # ``--rows DIR``: the rows a run of ``make corpus`` with EDGEOPT_CORPUS_OUT=DIR wrote (CI
    # runs the matrix anyway; its rows make the table without a second 40-minute run).
    if len(sys.argv) == 3 and sys.argv[1] == "--rows":
        folder = Path(sys.argv[2])
        rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        code, seconds = None, None  # the run that wrote them reported its own exit
    else:
        rows, code, seconds = _run_matrix()
    # the columns, in the order the test runs them (each row carries them)
    commands = rows[0]["commands"] if rows else []
    lines = ["| model | " + " | ".join(commands) + " |", "|---" * (len(commands) + 1) + "|"]
    refusals = []
    for row in rows:
        cells = []
        for command in commands:
            cell = row["cells"].get(command, {"status": "not run"})
            cells.append(cell["status"])
            if cell["status"] == "refused":
                refusals.append(f"- {row['model']} / {command}: {cell['message']}")
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    print("\n".join(lines + ["", *refusals]))
    save_result(
        "corpus",
        {
            "machine": machine(),
            "pytest_exit": code,
            "seconds": round(seconds) if seconds is not None else None,
            "rows": rows,
        },
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
