"""A model file is untrusted: nothing in it reaches the generated C code as code.

The attack this pins (issue 12): a node named so that it closes the C comment the exporter
wrote its name into, calls ``system``, and opens a comment again; ``export --format c --data``
compiles and runs the library, so the model file ran a shell command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest

from edgeopt.export.c import check_c
from edgeopt.export.c import export_c

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="gcc is not installed (Debian: apt-get install gcc)"
)


@needs_gcc
def test_a_node_name_cannot_close_a_comment_and_run_a_command(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    attack = (
        f'conv */ {{ extern int system(const char *); if (system("touch {marker}")) {{ }} }} /*'
    )
    model = onnx.load(str(cnn_s_int8.onnx_path))
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    conv.name = attack
    hostile = tmp_path / "model*.onnx"  # names the generated files' header comments
    onnx.save(model, str(hostile))
    export = export_c(hostile, tmp_path / "c")
    parity = check_c(export, cnn_s_int8.samples[:8])  # compiles and runs the library
    assert not marker.exists()
    assert parity.top1_agreement == 1.0 and parity.max_tensor_lsb == 0
    for name in export.files:
        if name.suffix not in (".c", ".h"):
            continue
        for line in name.read_text().splitlines():
            # every comment opened on a line is closed at its end, and by nothing before
            if "/*" in line and not line.lstrip().startswith("*"):
                assert line.count("/*") == 1 and line.count("*/") <= 1, line
                assert "*/" not in line or line.rstrip().endswith("*/"), line
    assert attack not in (export.out_dir / "model.c").read_text()
    record = json.loads((export.out_dir / "model.json").read_text())
    renamed = list(record["comment_names"].values())
    assert [entry["in_onnx"] for entry in renamed] == [f"{attack} (Conv)"]
    assert "*" not in renamed[0]["in_c"] and '"' not in renamed[0]["in_c"]
