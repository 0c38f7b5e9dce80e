"""Exact int8 arithmetic on any host: the probe, the uint8 re-encoding, the path choice, the
provenance, the unchecked label, and the U8U8 file of ``export --weight-type uint8``.

The zoo-wide check against the C reference is in tests/export/test_int8_reference.py; a real
saturating host (x86 without VNNI, under QEMU) in test_int8_hosts.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from clitools import run_cli
from edgeopt.errors import InputError
from edgeopt.measure import int8 as int8_module
from edgeopt.measure import profile_onnx
from edgeopt.measure.int8 import AS_SHIPPED
from edgeopt.measure.int8 import REWRITTEN
from edgeopt.measure.int8 import HostInt8
from edgeopt.measure.int8 import cpu_flags
from edgeopt.measure.int8 import host_int8
from edgeopt.measure.int8 import int8_arithmetic
from edgeopt.measure.int8 import make_exact_session
from edgeopt.measure.int8 import uint8_encoding


def _host(is_saturating: bool) -> HostInt8:
    real = host_int8()
    return HostInt8(real.machine, real.cpu_flags, is_saturating, real.onnxruntime)


@pytest.fixture
def saturating_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process told that its ONNX Runtime saturates (what the probe says on AVX2-only x86;
    test_int8_hosts.py runs the real thing under QEMU)."""
    monkeypatch.setattr(int8_module, "host_int8", lambda: _host(True))


def test_probe_gives_a_verdict_once_per_process_with_the_flags() -> None:
    first, again = host_int8(), host_int8()
    assert first is again  # cached: the probe runs once
    assert first.cpu_flags == cpu_flags()
    assert isinstance(first.is_saturating, bool)
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(first.cpu_flags):
        assert not first.is_saturating  # VNNI sums in 32 bits
    text = first.describe()
    assert first.onnxruntime in text and ("saturate" in text or "exact" in text)
    assert set(first.to_dict()) == {"machine", "cpu_flags", "is_saturating", "onnxruntime"}


def _s8s8_model() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """int8 input (zero point -3) -> 1x1 conv (int8 weights, per channel) -> int8 output (zero
    point 5), also dequantized to a float output; and the exact integers it must give."""
    rng = np.random.default_rng(3)
    channels, out_channels = 16, 3
    w = rng.integers(-128, 128, size=(out_channels, channels, 1, 1)).astype(np.int8)
    w[0] = 127  # sums of large products of one sign: what a 16-bit pair sum cannot hold
    w_scale = np.array([2.0**-7, 2.0**-8, 2.0**-6], dtype=np.float32)
    x = rng.integers(-128, 128, size=(4, channels, 3, 3)).astype(np.int8)
    x[:, :, 0, 0] = 127
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(out_channels, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.5, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(-3, np.int8), "x_zero"),
        numpy_helper.from_array(np.array(4.0, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(5, np.int8), "y_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wf"], axis=0),
        helper.make_node("Conv", ["xf", "wf"], ["yf"]),
        helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zero"], ["y"]),
        helper.make_node("DequantizeLinear", ["y", "y_scale", "y_zero"], ["logits"]),
    ]
    shape = [None, out_channels, 3, 3]
    graph = helper.make_graph(
        nodes,
        "s8s8",
        [helper.make_tensor_value_info("x", TensorProto.INT8, [None, channels, 3, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.INT8, shape),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    acc = np.einsum("nchw,oc->nohw", x.astype(np.int64) + 3, w[:, :, 0, 0].astype(np.int64))
    multiplier = (0.5 * w_scale / 4.0).astype(np.float64)[None, :, None, None]
    y = np.clip(np.rint(acc * multiplier) + 5, -128, 127).astype(np.int8)
    return model, x, y


def test_uint8_encoding_keeps_every_number_of_an_int8_activation_model() -> None:
    """int8 input, activations and output become uint8 (+128) and read back as int8: the
    rewritten path gives the exact integers, on every host."""
    model, x, expected = _s8s8_model()
    before = model.SerializeToString()
    done = uint8_encoding(model)
    assert model.SerializeToString() == before  # the caller's model is not touched
    assert done.weights == 1 and done.shifted == {"y"} and done.kept == ()
    types = {i.name: i.data_type for i in done.model.graph.initializer}
    assert TensorProto.INT8 not in types.values()  # every int8 constant is uint8 now
    assert done.model.graph.input[0].type.tensor_type.elem_type == TensorProto.INT8  # same input
    session = make_exact_session(model, path=REWRITTEN)
    y, logits = session.run(None, {"x": x})
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(logits, (expected.astype(np.float32) - 5) * 4.0)
    assert session.arithmetic is not None and session.arithmetic.is_exact
    # a restored value is the file's own
    assert done.restore("y", (expected.astype(np.int16) + 128).astype(np.uint8)).tolist() == (
        expected.tolist()
    )


def test_auto_rewrites_the_file_only_where_the_host_needs_it(
    monkeypatch: pytest.MonkeyPatch, cnn_s_int8: Any
) -> None:
    model = onnx.load(str(cnn_s_int8.onnx_path))
    monkeypatch.setattr(int8_module, "host_int8", lambda: _host(False))
    done, how = int8_arithmetic(model)
    assert done is None and how is not None
    assert (how.path, how.is_exact, how.is_shipped_exact, how.is_checked) == (
        AS_SHIPPED,
        True,
        True,
        True,
    )
    monkeypatch.setattr(int8_module, "host_int8", lambda: _host(True))
    done, how = int8_arithmetic(model)
    assert done is not None and done.weights == 4 and how is not None
    assert (how.path, how.is_exact, how.is_shipped_exact) == (REWRITTEN, True, False)
    assert "saturate" in how.reason and "VPMADDUBSW" in how.describe()
    forced, how = int8_arithmetic(model, path=AS_SHIPPED)  # what bench times: not exact here
    assert forced is None and how is not None and not how.is_exact


def test_int8_adds_are_looked_up_in_the_reference_on_every_host(
    resnet8_int8: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime rounds an int8 add its own way: a file with adds is rewritten even where
    its convolutions are exact, and every add becomes a lookup of the reference's result."""
    monkeypatch.setattr(int8_module, "host_int8", lambda: _host(False))
    model = onnx.load(str(resnet8_int8.onnx_path))
    done, how = int8_arithmetic(model)
    assert done is not None and how is not None
    assert (how.path, how.is_exact, how.is_shipped_exact) == (REWRITTEN, True, False)
    assert "adds" in how.reason and "integer tables" in how.reason
    gathers = [n for n in done.model.graph.node if n.op_type == "Gather"]
    assert len(gathers) == sum(n.op_type == "Add" for n in model.graph.node) == 3


def test_a_rewritten_copy_onnx_runtime_refuses_falls_back_to_the_file_and_says_so(
    cnn_s_int8: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeopt.measure.int8 import Reencoded

    def broken(model: onnx.ModelProto) -> Reencoded:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        copy.graph.node[0].op_type = "NoSuchOperator"
        return Reencoded(copy, 0, frozenset(), ())

    monkeypatch.setattr(int8_module, "uint8_encoding", broken)
    session = make_exact_session(cnn_s_int8.onnx_path, path=REWRITTEN)
    assert session.arithmetic is not None and session.arithmetic.path == AS_SHIPPED
    assert "the rewritten copy did not load" in session.arithmetic.reason
    assert session.run(None, {"input": cnn_s_int8.samples[:2]})[0].shape == (2, 10)


def test_a_float_model_has_no_int8_record_and_a_bad_path_is_refused(cnn_s_int8: Any) -> None:
    fp32 = onnx.load(str(cnn_s_int8.onnx_path.parent / "fp32.onnx"))
    assert int8_arithmetic(fp32) == (None, None)
    assert make_exact_session(fp32).arithmetic is None
    with pytest.raises(InputError, match="int8 path must be one of auto, as-shipped"):
        int8_arithmetic(fp32, path="fast")


def test_profile_on_a_saturating_host_measures_the_integers_and_says_how(
    cnn_s_int8: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told it saturates, profile takes the uint8 path (real on any host) and reports it; the
    accuracy is the one this host measures on its own path."""
    here = profile_onnx(cnn_s_int8.onnx_path, data=_digits(), is_latency_measured=False)
    monkeypatch.setattr(int8_module, "host_int8", lambda: _host(True))
    metrics = profile_onnx(cnn_s_int8.onnx_path, data=_digits(), is_latency_measured=False)
    assert metrics.int8 is not None and metrics.int8.path == REWRITTEN
    assert metrics.accuracy == here.accuracy
    record = json.loads(json.dumps(metrics.to_dict()))
    assert record["int8"]["path"] == REWRITTEN and record["int8"]["is_exact"] is True
    assert record["int8"]["host"]["is_saturating"] is True
    assert "uint8" in record["provenance"]["int8"]


def _digits() -> Any:
    from edgeopt.data import load_data

    return load_data("digits")


def test_the_int8_file_is_the_same_bytes_whatever_the_host(
    cnn_s_int8: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing the writer does depends on the probe's verdict (QEMU checks a real AVX2 host in
    benchmarks/int8_hosts.py)."""
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    fp32 = str(cnn_s_int8.onnx_path.parent / "fp32.onnx")
    digests = []
    for is_saturating in (False, True):
        monkeypatch.setattr(int8_module, "host_int8", lambda s=is_saturating: _host(s))
        out = tmp_path / f"{is_saturating}.onnx"
        quantize(fp32, PTQConfig(), data="digits", output=out)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_an_operator_the_reference_lacks_is_measured_and_labelled_unchecked(
    tmp_path: Path,
) -> None:
    import torch
    from torch import nn

    from edgeopt.export.onnx import export_onnx
    from edgeopt.models import ModelHandle
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize

    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    ).eval()
    handle = ModelHandle(name="gelu", spec="gelu", input_shape=(1, 8, 8), module=module)
    fp32 = export_onnx(handle, tmp_path / "gelu.onnx")
    out = tmp_path / "gelu.int8.onnx"
    quantize(str(fp32), PTQConfig(), data="digits", output=out)
    metrics = profile_onnx(out, data=_digits(), is_latency_measured=False)
    assert metrics.accuracy is not None  # measured as before
    assert metrics.int8 is not None and not metrics.int8.is_checked
    unchecked = metrics.int8.unchecked or ""
    assert "unsupported operator" in unchecked and ("Div" in unchecked or "Erf" in unchecked)
    assert "unchecked: " in metrics.provenance["int8"]


def test_bench_times_the_file_as_shipped_and_says_whether_it_is_exact_here(
    cnn_s_int8: Any, saturating_host: None
) -> None:
    from edgeopt.measure.bench import BenchConfig
    from edgeopt.measure.bench import bench

    config = BenchConfig(batches=(1,), min_runs=3, min_seconds=0)
    report = bench(str(cnn_s_int8.onnx_path), config)
    assert report.rows[0].is_ok
    assert report.int8 is not None and report.int8.path == AS_SHIPPED
    assert not report.int8.is_exact and not report.int8.is_shipped_exact
    assert report.to_dict()["int8"]["host"]["is_saturating"] is True


def test_cli_bench_warns_where_the_host_does_not_compute_the_file_exactly(
    cnn_s_int8: Any, saturating_host: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", str(cnn_s_int8.onnx_path), "--batch", "1"]
    code, out, _ = run_cli(args, capsys, is_out_flat=True)
    assert code == 0
    assert "does not compute this file's int8 layers as a device does" in out
    assert "--weight-type uint8" in out


def test_uint8_weights_file_has_the_same_numbers_and_exports_the_same_c(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    from edgeopt.export.c._lower import lower
    from edgeopt.export.uint8 import write_uint8

    source = cnn_s_int8.onnx_path
    before = source.read_bytes()
    done = write_uint8(source, output=tmp_path / "u8.onnx", data="digits")
    assert source.read_bytes() == before  # the input is never modified
    assert (done.constants, done.activations, done.uint8_outputs) == (4, 0, ())
    written = onnx.load(str(done.path))
    weights = [
        i for i in written.graph.initializer if i.data_type in (TensorProto.INT8, TensorProto.UINT8)
    ]
    assert weights and all(i.data_type == TensorProto.UINT8 for i in weights)
    assert {p.key: p.value for p in written.metadata_props}["edgeopt.weight_type"] == "uint8"
    assert done.metrics is not None and done.source_metrics is not None
    assert done.metrics.accuracy == done.source_metrics.accuracy
    assert done.metrics.int8 is not None and done.metrics.int8.is_shipped_exact
    # the C library reads U8U8 weights back as the same symmetric int8 weights
    original = lower(onnx.load(str(source)), source="int8")
    again = lower(written, source="uint8")
    assert [s.function for s in again.steps] == [s.function for s in original.steps]
    for a, b in zip(original.steps, again.steps, strict=True):
        for x, y in zip(a.arrays, b.arrays, strict=True):
            np.testing.assert_array_equal(x.values, y.values)


def test_uint8_weights_refuse_a_float_file_and_overwriting_the_input(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    from edgeopt.export.uint8 import write_uint8

    fp32 = cnn_s_int8.onnx_path.parent / "fp32.onnx"
    with pytest.raises(InputError, match="no int8 or 4-bit tensor"):
        write_uint8(fp32, output=tmp_path / "u8.onnx")
    with pytest.raises(InputError, match="overwrite the input"):
        write_uint8(cnn_s_int8.onnx_path, output=cnn_s_int8.onnx_path)
    with pytest.raises(InputError, match="must end in .onnx"):
        write_uint8(cnn_s_int8.onnx_path, output=tmp_path / "u8.bin")
    with pytest.raises(InputError):
        write_uint8(cnn_s_int8.onnx_path, output=tmp_path / "u8.onnx", data="npz:/nope.npz")
    assert list(tmp_path.iterdir()) == []  # nothing written on any refusal


def test_cli_writes_a_uint8_weights_file_and_refuses_bad_options(
    cnn_s_int8: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "u8.onnx"
    args = ["export", str(cnn_s_int8.onnx_path), "--format", "onnx", "--weight-type", "uint8"]
    code, text, _ = run_cli([*args, "-o", str(out), "--data", "digits"], capsys, is_out_flat=True)
    assert code == 0 and out.exists()
    assert "stored as uint8" in text and "accuracy (test)" in text
    code, _, err = run_cli([*args[:-1], "int16", "-o", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "--weight-type must be int8 or uint8" in err
    code, _, err = run_cli([*args, "--raw-input", "-o", str(tmp_path / "y.onnx")], capsys)
    assert code == 2 and "--weight-type uint8 needs --format onnx without --raw-input" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u8.onnx"]
