"""``edgeopt profile`` on ONNX files edgeopt did not write: fixed batches, symbolic dimensions,
old opsets, several or integer inputs, and the 140 models of the onnx package's backend tests.

Before: 61 of those 140 ended in an internal error (exit 1; the batch forced to 1 on inputs whose
batch the file fixes, float zeros fed to int64 inputs), 58 were refused and 21 profiled.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper

from clitools import run_cli
from edgeopt.errors import InputError
from edgeopt.measure import profile_onnx
from edgeopt.models.upgrade import default_opset
from edgeopt.models.upgrade import upgrade_onnx

BACKEND = Path(onnx.__file__).parent / "backend" / "test" / "data"
FOLDERS = ("pytorch-converted", "pytorch-operator", "simple")
#: How many of the 140 profile with onnx 1.23 / ONNX Runtime 1.32 (128 when this was written);
#: the README states the count.
MIN_PROFILED = 120


def _conv_model(path: Path, batch: int | str, opset: int = 13) -> Path:
    weight = np.ones((4, 2, 3, 3), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 4, 4])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


def test_a_batch_the_file_fixes_is_counted_timed_and_reported(tmp_path: Path) -> None:
    """Profile forced batch 1 on a file fixed at 20: ONNX Runtime's "Got: 1 Expected: 20"."""
    per_sample = 4 * 4 * 4 * 2 * 9  # 4 filters of 2x3x3 at 4x4 output pixels
    fixed = profile_onnx(_conv_model(tmp_path / "fixed.onnx", 5))
    one = profile_onnx(_conv_model(tmp_path / "dynamic.onnx", "N"))
    assert (fixed.batch, one.batch) == (5, 1)
    assert (fixed.macs, one.macs) == (5 * per_sample, per_sample)
    assert fixed.peak_ram_bytes == 5 * one.peak_ram_bytes  # input and output live together
    assert fixed.latency_ms is not None and fixed.latency_ms.batch == 5
    assert fixed.provenance["batch"].startswith("5: fixed in the file")
    assert "symbolic 'N' in the file, bound to 1" in one.provenance["batch"]
    latency = fixed.to_dict()["latency_ms"]
    assert latency["p50_per_sample"] == pytest.approx(latency["p50"] / 5)


def test_an_old_opset_is_upgraded_in_memory_and_said(tmp_path: Path) -> None:
    """ONNX Runtime no longer loads opset-6 AveragePool; the file itself is never rewritten."""
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2])],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    before = path.read_bytes()
    metrics = profile_onnx(path)
    assert metrics.notes[0].startswith("upgraded in memory from opset 6 to 7")
    assert metrics.to_dict()["notes"][0] == metrics.notes[0]
    assert metrics.batch == 2 and metrics.latency_ms is not None
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "old.onnx"
    ]


def test_an_opset_the_converter_cannot_upgrade_is_one_sentence() -> None:
    """IR 3 keeps initializers among the inputs: the Pad-2 adapter's new pads constant fails the
    checker, so asking for opset 13 is refused naming the file, the opset and the way out."""
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1])],
        "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    with pytest.raises(InputError) as caught:
        upgrade_onnx(model, "pad.onnx", target_opset=13)
    message = str(caught.value)
    assert message.startswith("pad.onnx: the model is stamped with opset 6")
    assert "re-export it at opset 13 or later" in message and "\n" not in message
    kept, note = upgrade_onnx(model, "pad.onnx", min_opset=6)
    assert kept is model and note is None and default_opset(model) == 6


def test_several_and_integer_inputs_are_profiled_on_generated_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without data the inputs are made of their declared type (int64 ones, a valid index);
    with data the one-input refusal stays."""
    table = onnx.numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(6, 2), "table")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"]),
            helper.make_node("Add", ["e", "b"], ["y"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [3, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4, 2])],
        [table],
    )
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    json_path = tmp_path / "two.json"
    code, out, err = run_cli(["profile", str(path), "--json", str(json_path)], capsys)
    assert code == 0, err
    record = json.loads(json_path.read_text())
    assert record["batch"] == 3 and record["params"] == 12
    assert "'ids' int64 3x4, 'b' float32 3x4x2" in record["notes"][0]
    assert "note: no data: timed on generated inputs" in out
    code, _, err = run_cli(["profile", str(path), "--data", "digits"], capsys, is_err_flat=True)
    assert code == 2 and "the model has 2 inputs ('ids', 'b')" in err


def test_light_resnet50_counts_match_the_paper() -> None:
    """He et al. 2016, table 1: 3.8 G FLOPs (multiply-adds; 4.09 G with the projection
    shortcuts and fc counted), 25.6 M parameters."""
    path = BACKEND / "light" / "light_resnet50.onnx"
    if not path.is_file():
        pytest.skip(f"the onnx package has no backend test data here ({path.parent} absent)")
    metrics = profile_onnx(path, is_latency_measured=False)
    assert round(metrics.macs / 1e9, 2) == 4.09 and round(metrics.params / 1e6, 1) == 25.6


def test_every_backend_test_model_profiles_or_is_one_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The 140 models of the onnx package's backend test data: exit 0, or exit 2 with one line,
    never an internal error (exit 1) or a traceback."""
    paths = sorted(p for folder in FOLDERS for p in (BACKEND / folder).glob("*/model.onnx"))
    if not paths:
        pytest.skip(f"the onnx package has no backend test data here ({BACKEND} absent)")
    codes: collections.Counter[int] = collections.Counter()
    refusals: collections.Counter[str] = collections.Counter()
    for path in paths:
        code, _, err = run_cli(["profile", str(path)], capsys)
        codes[code] += 1
        assert code in (0, 2), (path, code, err)
        if code == 2:
            assert "Traceback" not in err and err.strip().count("\n") == 0, (path, err)
            assert err.startswith(f"error: {path}: "), err
            refusals[err.removeprefix(f"error: {path}: ").split(" (")[0][:60]] += 1
    print(f"\nbackend test models: {len(paths)}, exit codes {dict(codes)}")
    for reason, count in refusals.most_common():
        print(f"  {count} x {reason}")
    assert codes[0] >= MIN_PROFILED, dict(codes)
