"""``edgeopt quantize`` end to end: files, the side-by-side table, exit codes, nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from clitools import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn-s trained 6 epochs on digits: OUT.onnx and its state dict OUT.pt."""
    import torch

    from edgeopt.config import TrainConfig
    from edgeopt.pipeline import save_trained
    from edgeopt.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train("zoo:cnn-s", "digits", TrainConfig(epochs=6))
    finally:
        torch.set_num_threads(threads)
    return save_trained(result, "digits", tmp_path_factory.mktemp("cli") / "cnn.onnx").onnx_path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ptq_writes_onnx_and_json_and_prints_both_files_side_by_side(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(trained)
    out = tmp_path / "q.onnx"
    code, stdout, _ = run_cli(
        ["quantize", str(trained), "--data", "digits", "-o", str(out)], capsys
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json", "q.onnx"]
    for row in ("accuracy (test)", "size", "latency p50", "energy on cortex-m4"):
        assert row in stdout
    assert "operators left in float: none" in stdout
    record = json.loads(out.with_suffix(".json").read_text())
    fp32, int8 = record["before"], record["after"]
    assert record["steps"][0]["config"]["kind"] == "quantize.ptq"
    assert fp32["size_bytes"] > 2.5 * int8["size_bytes"] == 2.5 * out.stat().st_size
    assert abs(fp32["accuracy"] - int8["accuracy"]) <= 0.02
    assert int8["latency_ms"]["threads"] == 1 and int8["estimate"]["target"] == "cortex-m4"
    assert record["steps"][0]["detail"]["ranges_summary"]["tensors"] > 0
    assert _digest(trained) == before  # the input is never modified


def test_qat_from_zoo_spec_and_weights_reports_both_accuracies(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qat.onnx"
    args = ["quantize", "zoo:cnn-s", "--weights", str(trained.with_suffix(".pt"))]
    args += ["--method", "qat", "--epochs", "1", "-o", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0, stdout
    record = json.loads(out.with_suffix(".json").read_text())
    pytorch = record["steps"][0]["detail"]["qat"]["test_accuracy_pytorch"]
    assert abs(record["after"]["accuracy"] - pytorch) <= 0.003
    assert (
        "QAT model test accuracy" in stdout
        and len(record["steps"][0]["detail"]["qat"]["history"]) == 1
    )


def test_max_flash_switches_to_mixed_precision_and_prints_the_table(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mixed.onnx"
    args = ["quantize", str(trained), "--max-flash", "18000", "-o", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0, stdout
    assert "per-layer sensitivity" in stdout and "flash budget 18,000 B" in stdout
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"][0]["config"]["kind"] == "quantize.mixed"
    assert out.stat().st_size <= 18000 and set(
        record["steps"][0]["detail"]["mixed"]["bits"].values()
    ) <= {8, 4, "float"}


def test_operator_without_int8_kernel_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "tanhnet.py").write_text(
        "from torch import nn\n\n\ndef net():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),\n"
        "                         nn.Linear(256, 10))\n"
    )
    monkeypatch.syspath_prepend(str(package))
    out = tmp_path / "out" / "q.onnx"
    code, stdout, _ = run_cli(["quantize", "tanhnet:net", "-o", str(out)], capsys)
    assert code == 0
    assert "operators left in float:" in stdout and "(Tanh)" in stdout
    assert json.loads(out.with_suffix(".json").read_text())["steps"][0]["detail"]["float_nodes"][
        0
    ].endswith("(Tanh)")


def test_dynamic_method_runs_without_calibration(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dyn.onnx"
    code, _, _ = run_cli(["quantize", str(trained), "--method", "dynamic", "-o", str(out)], capsys)
    assert code == 0 and out.exists()
    assert (
        json.loads(out.with_suffix(".json").read_text())["steps"][0]["config"]["kind"]
        == "quantize.dynamic"
    )


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, x=x, y=y, x_test=x[:4], y_test=y[:4])
    return f"npz:{path}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bits", "3"], "--bits must be 4 or 8, got 3."),
        (["--method", "qat"], "QAT needs a PyTorch model (zoo:NAME, module:factory"),
        (["--method", "int2"], "--method must be one of ptq, qat, dynamic"),
        (["--epochs", "3"], "--epochs does not apply to ptq."),
        (["--method", "qat", "--max-flash", "9000"], "--max-flash does not apply to qat."),
        (["--calibration", "kl"], "calibration must be one of minmax, percentile"),
    ],
)
def test_bad_option_is_one_sentence_exit_2_and_nothing_written(
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "out" / "q.onnx"
    code, stdout, stderr = run_cli(["quantize", str(trained), *extra, "-o", str(out)], capsys)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("samples", [0, 1])
def test_empty_or_one_sample_calibration_split_is_refused(
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    samples: int,
) -> None:
    # Every data spec's calibration split holds min(512, train) samples and train holds at
    # least one sample per class, so a split this small needs a smaller calibration size.
    import edgeopt.data.dataset

    monkeypatch.setattr(edgeopt.data.dataset, "CALIB_SAMPLES", samples)
    rng = np.random.default_rng(0)
    data = _npz(tmp_path / "d.npz", rng.integers(0, 16, (40, 1, 8, 8)), np.arange(40) % 10)
    out = tmp_path / "out" / "q.onnx"
    code, _, stderr = run_cli(["quantize", str(trained), "--data", data, "-o", str(out)], capsys)
    assert code == 2
    assert f"has {samples} sample(s); calibration needs at least 2" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_nan_in_calibration_data_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    x[5, 3, 3] = np.nan
    data = _npz(tmp_path / "d.npz", x, np.arange(40) % 10)
    out = tmp_path / "out" / "q.onnx"
    code, _, stderr = run_cli(["quantize", str(trained), "--data", data, "-o", str(out)], capsys)
    assert code == 2 and "NaN or infinite" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_flash_budget_below_the_smallest_file_exits_3(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.onnx"
    code, _, stderr = run_cli(
        ["quantize", str(trained), "--max-flash", "4000", "-o", str(out)], capsys
    )
    assert code == 3 and "bytes below the smallest file" in stderr
    assert list(tmp_path.iterdir()) == []
