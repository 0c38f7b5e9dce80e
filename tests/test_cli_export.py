"""``edgeopt export --format c`` end to end: the library, its sizes, and bad input (exit code 2,
one sentence, nothing written)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from clitools import run_cli as _run_cli

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("size") is None,
    reason="gcc and binutils' size are not installed (Debian: apt-get install gcc)",
)


run_cli = functools.partial(_run_cli, is_err_flat=True)


def conv_model(
    path: Path,
    *,
    channels: int = 4,
    size: int = 8,
    width: int | None = None,
    op: str = "Conv",
    is_quantized: bool = True,
) -> Path:
    """One 3x3 convolution (or another operator) on a CxSxS (or CxSxW) input, as int8 QDQ or in
    float."""
    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (channels, channels, 3, 3)).astype(np.int8)
    scalars = {
        "x_scale": np.float32(0.02),
        "x_zero": np.uint8(128),
        "w_scale": np.float32(0.01),
        "y_scale": np.float32(0.05),
        "y_zero": np.uint8(0),
    }
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in scalars.items()]
    if is_quantized:
        inits.append(numpy_helper.from_array(weights, "w_q"))
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="q_in"),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_f"], name="dq"),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="dq_w"),
        ]
        source, sink = "x_f", "y_f"
    else:
        inits.append(numpy_helper.from_array(weights.astype(np.float32) * 0.01, "w"))
        nodes, source, sink = [], "x", "y"
    if op == "Conv":
        nodes.append(helper.make_node("Conv", [source, "w"], ["y_f"], name="conv_1", pads=[1] * 4))
    else:
        nodes.append(helper.make_node(op, [source], ["y_f"], name=f"{op.lower()}_1"))
    if is_quantized:
        nodes += [
            helper.make_node("QuantizeLinear", ["y_f", "y_scale", "y_zero"], ["y_q"], name="q"),
            helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zero"], ["y"], name="dq_y"),
        ]
    else:
        nodes[-1].output[0] = sink
    shape = ["batch", channels, size, width or size]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@needs_gcc
def test_export_writes_the_library_and_reports_sizes_and_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_model(tmp_path / "int8.onnx")
    x = np.random.default_rng(1).standard_normal((40, 4, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(40) % 2)
    out = tmp_path / "c"
    args = ["export", str(model), "--format", "c", "-o", str(out), "--target", "cortex-m4"]
    code, stdout, err = run_cli([*args, "--data", f"npz:{tmp_path / 'x.npz'}"], capsys)
    assert code == 0, err
    stdout = " ".join(stdout.split())
    assert {"model.h", "model.c", "model_weights.c", "edgeopt_kernels.c"} <= {
        p.name for p in out.iterdir()
    }
    assert "arena (RAM)" in stdout and "measured: text + rodata" in stdout
    assert "top-1 agreement 100.00%" in stdout and "largest int8 difference 0 LSB" in stdout
    header = (out / "model.h").read_text()
    assert "#define MODEL_ARENA_BYTES 512" in header  # 256 B input + 256 B output
    assert "typedef uint8_t model_output_t;" in header


def test_export_without_data_prints_the_parity_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_model(tmp_path / "int8.onnx")
    out = tmp_path / "lib"
    code, stdout, _ = run_cli(["export", str(model), "-o", str(out), "--prefix", "kws"], capsys)
    assert code == 0
    assert (out / "kws.h").exists()
    assert f"edgeopt export {model} --format c -o {out} --prefix kws --force --data SPEC" in (
        " ".join(stdout.split())
    )


def test_a_float_model_says_quantize_first_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_model(tmp_path / "fp32.onnx", is_quantized=False)
    out = tmp_path / "c"
    code, _, err = run_cli(["export", str(model), "--format", "c", "-o", str(out)], capsys)
    assert code == 2
    assert "a float model" in err and "quantize it first (edgeopt quantize" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx"]


def test_an_unsupported_operator_is_named_with_its_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_model(tmp_path / "int8.onnx", op="Erf")
    out = tmp_path / "c"
    code, _, err = run_cli(["export", str(model), "--format", "c", "-o", str(out)], capsys)
    assert code == 2
    assert "node 'erf_1' (Erf): unsupported operator; GELU's erf has no int8 kernel" in err
    assert not out.exists()


def test_an_arena_over_the_targets_ram_says_by_how_much(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 8x256x256 in and out: 2 x 512 KiB live together, the Cortex-M4 profile has 640 KiB
    model = conv_model(tmp_path / "big.onnx", channels=8, size=256)
    out = tmp_path / "c"
    args = ["export", str(model), "--format", "c", "-o", str(out), "--target", "cortex-m4"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    needed = 2 * 8 * 256 * 256
    assert f"needs {needed:,} bytes, {needed - 655360:,} bytes (60%) more than" in err
    assert "655,360 bytes of RAM of target cortex-m4" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx"]


def test_an_existing_folder_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = conv_model(tmp_path / "int8.onnx")
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(["export", str(model), "-o", str(out)], capsys)
    assert code == 2 and "not empty" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code, _, _ = run_cli(["export", str(model), "-o", str(out), "--force"], capsys)
    assert code == 0 and not (out / "notes.txt").exists() and (out / "model.c").exists()


def test_an_unknown_format_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = conv_model(tmp_path / "int8.onnx")
    code, _, err = run_cli(["export", str(model), "--format", "coreml", "-o", "x"], capsys)
    assert code == 2 and "unknown export format 'coreml'; known: c, onnx, tflite." in err


def test_a_folded_audio_model_says_why_c_cannot_take_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """int16 PCM through the folded front end: its DFT Conv is float, so the C exporter refuses
    it in one sentence and names the way out (the unfolded model, features on the device)."""
    from scipy.io import wavfile

    from edgeopt.data import load_data
    from edgeopt.export.fold import fold_preprocessing

    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(2)
    for label in range(2):
        for take in range(8):  # FSDD names: takes 0-4 are the test split
            t = np.arange(4000) / 8000
            noise = 0.01 * rng.standard_normal(4000)
            tone = 0.5 * np.sin(2 * np.pi * 400 * (label + 1) * t) + noise
            wavfile.write(clips / f"{label}_ann_{take}.wav", 8000, (tone * 32767).astype(np.int16))
    data = load_data(f"audio:{clips}?mfcc=10")
    model = conv_model(tmp_path / "int8.onnx", channels=1, size=49, width=10)
    folded = fold_preprocessing(model, data, output=tmp_path / "raw.onnx", samples=0)
    assert folded.raw_dtype == "int16" and folded.frontend is not None
    out = tmp_path / "c"
    code, _, err = run_cli(["export", str(folded.path), "--format", "c", "-o", str(out)], capsys)
    assert code == 2 and "takes int16 PCM through the audio front end" in err
    assert "DFT Conv" in err and "export the unfolded int8 model" in err
    assert err.count(". ") == 0 and "Traceback" not in err
    assert not out.exists()


def test_a_sample_count_below_one_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--samples -5 silently meant "all but the last 5" (a negative slice)."""
    args = ["export", "missing.onnx", "-o", str(tmp_path / "c"), "--samples", "-5"]
    code, _, err = run_cli(args, capsys, is_err_flat=True)
    assert code == 2 and "--samples must be at least 1, got -5" in err
    assert not (tmp_path / "c").exists()


def test_a_library_folder_holding_the_model_is_refused_even_when_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`export m.onnx -o . --force` would have replaced the folder, the model in it."""
    model = conv_model(tmp_path / "int8.onnx")
    before = model.read_bytes()
    code, _, err = run_cli(["export", str(model), "-o", str(tmp_path), "--force"], capsys)
    assert code == 2 and "holds the input model" in err
    assert model.read_bytes() == before
