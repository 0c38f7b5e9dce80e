"""The corpus matrix for the README: every command on twelve user-style models (issue 14).

    .venv/bin/python -m benchmarks.corpus

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


def main() -> None:
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
            "pytest_exit": done.returncode,
            "seconds": round(seconds),
            "rows": rows,
        },
    )
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
