"""``edgeopt prune`` and ``edgeopt decompress`` end to end: files, tables, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clitools import run_cli
from edgeopt.data import load_data
from edgeopt.measure.runtime import measure_accuracy
from edgeopt.models import load_model


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn-s trained 3 epochs on digits: its state dict, for --weights."""
    from edgeopt.config import TrainConfig
    from edgeopt.training import train

    result = train("zoo:cnn-s", "digits", TrainConfig(epochs=3))
    path = tmp_path_factory.mktemp("trained") / "cnn.pt"
    torch.save(result.model.module.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def channel_run(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    folder = tmp_path_factory.mktemp("channel")
    out = folder / "pruned.onnx"
    args = [
        "prune",
        "zoo:cnn-s",
        "--weights",
        str(trained),
        "--data",
        "digits",
        "--kind",
        "channel",
        "--ratio",
        "0.5",
        "--scope",
        "layer",
        "--finetune-epochs",
        "1",
        "--compress",
        "-o",
        str(out),
    ]
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", "edgeopt.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    return out, done.returncode, done.stdout + done.stderr


def test_channel_prune_writes_four_files_and_prints_before_and_after(
    channel_run: tuple[Path, int, str],
) -> None:
    out, code, stdout = channel_run
    assert code == 0, stdout
    names = sorted(path.name for path in out.parent.iterdir())
    assert names == ["pruned.edc", "pruned.json", "pruned.onnx", "pruned.pt"]
    for header in ("source", "pruned", "decoded .edc", "compressed_bytes", "energy cortex-m4"):
        assert header in stdout
    assert "channels kept" in stdout
    assert "skipped 6: output layer: its outputs are the classes" in stdout
    record = json.loads(out.with_suffix(".json").read_text())
    source, pruned = record["before"], record["after"]
    assert pruned["macs"] < 0.5 * source["macs"] and pruned["params"] < 0.5 * source["params"]
    assert pruned["size_bytes"] == out.stat().st_size
    assert pruned["accuracy"] > 0.6 and source["accuracy"] > 0.8
    assert record["compression"]["compressed_bytes"] == out.with_suffix(".edc").stat().st_size
    assert record["compression"]["ratio_vs_source_onnx"] == pytest.approx(
        source["size_bytes"] / out.with_suffix(".edc").stat().st_size
    )
    assert [layer["remaining"] for layer in record["steps"][0]["detail"]["layers"]] == [
        8,
        16,
        16,
        10,
    ]


def test_decompress_writes_the_onnx_that_was_measured(
    channel_run: tuple[Path, int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _, _ = channel_run
    back = tmp_path / "back.onnx"
    code, stdout, _ = run_cli(["decompress", str(out.with_suffix(".edc")), "-o", str(back)], capsys)
    assert code == 0 and f"wrote {back}" in stdout.replace("\n", "")
    digits = load_data("digits")
    x_test, y_test = digits.arrays("test")
    record = json.loads(out.with_suffix(".json").read_text())
    assert measure_accuracy(back, x_test, y_test) == record["compression"]["decoded"]["accuracy"]
    agree = run_onnx(back, x_test).argmax(1) == run_onnx(out, x_test).argmax(1)
    assert agree.mean() > 0.95  # 8-bit shared conv weights, 5-bit classifier


def test_channel_pruned_weights_load_into_the_same_spec(
    channel_run: tuple[Path, int, str],
) -> None:
    out, _, _ = channel_run
    digits = load_data("digits")
    handle = load_model("zoo:cnn-s", weights=out.with_suffix(".pt"), data=digits)
    x = digits.arrays("test")[0][:16]
    with torch.no_grad():
        expected = handle.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(out, x), expected, rtol=1e-4, atol=1e-4)


def test_gradual_unstructured_prune_keeps_the_dense_size_and_compresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mlp.onnx"
    args = ["prune", "zoo:lenet300?width=0.25", "--ratio", "0.9", "--schedule", "gradual"]
    args += ["--finetune-epochs", "1", "--compress", "--bits-fc", "4", "-o", str(out)]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"][0]["detail"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    source, pruned = record["before"], record["after"]
    assert pruned["size_bytes"] == pytest.approx(source["size_bytes"], rel=0.01)  # dense zeros
    assert pruned["macs"] == source["macs"]
    assert record["compression"]["ratio_vs_source_onnx"] > 10
    assert "weights kept" in stdout and "stored densely" in stdout


def test_ratio_outside_zero_one_is_one_sentence_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.onnx"
    code, stdout, err = run_cli(["prune", "zoo:cnn-s", "--ratio", "1", "-o", str(out)], capsys)
    assert code == 2
    assert err.strip() == "error: prune: ratio must be in [0, 1), got 1.0."
    assert list(tmp_path.iterdir()) == []


def test_onnx_only_model_says_what_is_needed_and_writes_nothing(
    channel_run: tuple[Path, int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _, _ = channel_run
    out = tmp_path / "p.onnx"
    code, _, err = run_cli(["prune", str(source), "-o", str(out)], capsys)
    assert code == 2
    assert "pruning needs a PyTorch model (zoo:NAME, module:factory with --weights" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "p.pt"], "must end in .onnx"),
        (["--kind", "2:4", "--ratio", "0.7", "-o", "p.onnx"], "ratio must be 0.5"),
        (["--ratio-of", "macs", "-o", "p.onnx"], "applies to granularity channel only"),
        (["--compress", "--bits-fc", "9", "-o", "p.onnx"], "bits_fc must be"),
        (["--target", "no-such-board", "-o", "p.onnx"], "no-such-board"),
    ],
)
def test_bad_options_are_refused_before_any_file_is_written(
    extra: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["prune", "zoo:cnn-s", "--finetune-epochs", "0", *extra], capsys)
    assert code == 2 and message in err
    assert list(tmp_path.iterdir()) == []


def test_decompress_refuses_a_file_that_is_not_compressed(
    channel_run: tuple[Path, int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _, _ = channel_run
    out = tmp_path / "x.onnx"
    code, _, err = run_cli(["decompress", str(source), "-o", str(out)], capsys)
    assert code == 2 and "not an edgeopt compressed model" in err
    assert not out.exists()
