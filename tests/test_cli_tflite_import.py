"""The commands on a ``.tflite`` file: profile, quantize (float files), export to C (int8 files)
read its ONNX import; a bad file is one sentence, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clitools import run_cli
from edgeopt.testing import shared_data_dir

pytest.importorskip("ai_edge_litert.schema_py_generated")

import tflite_build  # noqa: E402  (tests/ is on the path: pyproject pythonpath)

DATA = shared_data_dir("tflite-micro")


def _kitchen(folder: Path, *, is_int8: bool) -> Path:
    samples = np.random.default_rng(1).normal(0, 1, (8, 8, 8, 3)).astype(np.float32)
    float_model, int8_model = tflite_build.calibrated_kitchen(samples)
    path = folder / ("kitchen_int8.tflite" if is_int8 else "kitchen.tflite")
    path.write_bytes(int8_model if is_int8 else float_model)
    return path


@pytest.mark.skipif(DATA is None, reason="no shared/data/tflite-micro above this checkout")
def test_profile_of_person_detect_names_the_file_and_counts_its_layers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = DATA / "person_detect.tflite"
    code, out, err = run_cli(["profile", str(path)], capsys, is_out_flat=True)
    assert code == 0, err
    assert f"profile of {path}" in out
    assert "7,157,888" in out  # MACs of MobileNetV1-0.25 at 96x96x1
    assert "exact integers" in out


def test_quantize_a_float_tflite_writes_int8_qdq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    model = _kitchen(tmp_path, is_int8=False)
    x = np.random.default_rng(2).normal(0, 1, (64, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(64) % 5)
    out = tmp_path / "int8.onnx"
    code, _, err = run_cli(
        ["quantize", str(model), "--data", f"npz:{tmp_path / 'data.npz'}", "-o", str(out)], capsys
    )
    assert code == 0, err
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") > 5 and "Conv" in ops


def test_export_c_of_an_int8_tflite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The synthetic int8 model adds a constant per-channel offset, which the C exporter
    refuses in one sentence naming the user's file and the node (the TFLM examples export:
    test_tflite_import)."""
    model = _kitchen(tmp_path, is_int8=True)
    code, _, err = run_cli(
        ["export", str(model), "--format", "c", "-o", str(tmp_path / "c")], capsys
    )
    assert code == 2
    assert err.startswith(f"error: {model}: node ") and "(Add) has a constant as input" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", [["profile"], ["export", "--format", "c", "-o", "OUT"]])
def test_a_damaged_tflite_is_one_sentence_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x18\x00\x00\x00TFL3" + b"\xff" * 40)
    args = [c.replace("OUT", str(tmp_path / "out")) for c in command]
    code, out, err = run_cli([args[0], str(bad), *args[1:]], capsys)
    assert code == 2
    assert err.startswith(f"error: {bad}: damaged or truncated TFLite file")
    assert err.count("\n") == 1 and "Traceback" not in err + out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite"]


def test_profile_of_a_float_tflite_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _kitchen(tmp_path, is_int8=False)
    code, out, err = run_cli(["profile", str(model)], capsys, is_out_flat=True)
    assert code == 0, err
    assert f"profile of {model}" in out and "Conv" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitchen.tflite"]
