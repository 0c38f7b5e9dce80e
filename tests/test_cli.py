"""The command line end to end: exit codes, one-sentence errors, nothing written on failure."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from clitools import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "cnn.onnx"
    code = subprocess.run(
        [sys.executable, "-m", "edgeopt.cli", "train", "zoo:cnn-s", "--epochs", "3", "-o", out],
        capture_output=True,
        text=True,
        check=False,
    )
    assert code.returncode == 0, code.stderr
    assert "ONNX file" in code.stdout
    return out


def test_train_writes_onnx_weights_and_record(trained: Path) -> None:
    assert trained.exists() and trained.with_suffix(".pt").exists()
    record = json.loads(trained.with_suffix(".json").read_text())
    assert record["steps"][0]["config"]["epochs"] == 3
    assert record["after"]["accuracy"] > 0.8


def test_profile_prints_a_table_and_writes_json(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.json"
    code, stdout, _ = run_cli(
        [
            "profile",
            str(trained),
            "--data",
            "digits",
            "--target",
            "cortex-m4",
            "--json",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    assert "peak RAM" in stdout and "energy on cortex-m4" in stdout
    payload = json.loads(out.read_text())
    assert payload["accuracy"] > 0.8 and payload["fits"]["flash"] is True


def test_targets_lists_every_profile(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeopt.target import list_targets

    code, stdout, _ = run_cli(["targets"], capsys)
    assert code == 0
    for name in list_targets():
        assert name in stdout


def _wav(path: Path, rate: int) -> None:
    tone = (np.sin(np.arange(rate // 2) * 0.3) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(tone.tobytes())


def _bad_inputs(tmp: Path, trained: Path) -> dict[str, tuple[list[str], str]]:
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(trained.read_bytes()[:3000])
    empty = tmp / "empty"
    empty.mkdir()
    labelless = tmp / "labelless"
    labelless.mkdir()
    (labelless / "readme.txt").write_text("no class folders here")
    rates = tmp / "rates"
    rates.mkdir()
    _wav(rates / "0_a_0.wav", 8000)
    _wav(rates / "1_a_0.wav", 16000)
    return {
        "missing file": (["profile", str(tmp / "nope.onnx")], "does not exist"),
        "truncated onnx": (["profile", str(truncated)], "not a valid ONNX model"),
        "shape mismatch": (
            ["profile", str(trained), "--data", "npz:" + str(_npz(tmp))],
            "takes input 1x8x8",
        ),
        "unknown target": (["profile", str(trained), "--target", "cortex-m99"], "unknown target"),
        "unknown zoo": (["profile", "zoo:alexnet"], "unknown zoo model"),
        "empty folder": (["profile", str(trained), "--data", f"images:{empty}"], str(empty)),
        "label-less folder": (
            ["profile", str(trained), "--data", f"images:{labelless}"],
            str(labelless),
        ),
        "wav of another rate": (
            ["profile", str(trained), "--data", f"audio:{rates}"],
            "Hz",
        ),
    }


def _npz(tmp: Path) -> Path:
    path = tmp / "wide.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((40, 1, 12, 12)).astype(np.float32), y=np.arange(40) % 4)
    return path


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "truncated onnx",
        "shape mismatch",
        "unknown target",
        "unknown zoo",
        "empty folder",
        "label-less folder",
        "wav of another rate",
    ],
)
def test_bad_input_is_one_sentence_exit_2_and_writes_nothing(
    case: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = _bad_inputs(tmp_path, trained)[case]
    out = tmp_path / "result.json"
    code, stdout, stderr = run_cli([*args, "--json", str(out)], capsys)
    assert code == 2
    assert expected in stderr
    assert "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_train_output_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = run_cli(
        ["train", "zoo:cnn-s", "--epochs", "0", "-o", str(tmp_path / "m.onnx")], capsys
    )
    assert code == 2 and "epochs must be at least 1" in stderr
    assert list(tmp_path.iterdir()) == []


def test_console_script_reports_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgeopt.cli", "profile", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_file_names_print_as_themselves_not_as_markup(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Names come from users' files: "[red]" is text, and "[/oops]" does not crash Rich."""
    folder = tmp_path / "in"
    folder.mkdir()
    odd = folder / "[red]x.onnx"
    odd.write_bytes(trained.read_bytes())
    code, out, _ = run_cli(["profile", str(odd)], capsys, is_out_flat=True)
    assert code == 0 and "[red]x.onnx" in out
    code, _, err = run_cli(["profile", str(tmp_path / "[/oops].onnx")], capsys, is_err_flat=True)
    assert code == 2 and "[/oops].onnx" in err and "Traceback" not in err


def test_an_internal_error_is_one_sentence_exit_1_with_a_log_to_report(
    trained: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edgeopt.measure

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug [/oops]")

    monkeypatch.setattr(edgeopt.measure, "profile", broken)
    code, _, err = run_cli(["profile", str(trained)], capsys, is_err_flat=True)
    assert code == 1 and "Traceback" not in err
    assert "internal error: RuntimeError: a bug [/oops]" in err and "please report it" in err
    log = Path(err.split("the traceback is in ", 1)[1].split(". This is a bug")[0])
    assert "RuntimeError: a bug [/oops]" in log.read_text() and "Traceback" in log.read_text()


def test_an_output_that_is_an_input_is_refused_before_any_work(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """decompress x.edc -o x.edc, profile m.onnx --json m.onnx, and train / prune writing
    OUT.pt over their --weights all destroyed their input; now one sentence, exit 2."""
    from edgeopt.export.compressed import compress_onnx

    model = tmp_path / "m.onnx"
    model.write_bytes(trained.read_bytes())
    weights = tmp_path / "w.pt"
    weights.write_bytes(trained.with_suffix(".pt").read_bytes())
    edc = tmp_path / "m.edc"
    compress_onnx(model, edc)
    before = {p: p.read_bytes() for p in (model, weights, edc)}
    cases = [
        (["decompress", str(edc), "-o", str(edc)], "the compressed model"),
        (["profile", str(model), "--json", str(model)], "the model"),
        (["bench", str(model), "--batch", "1", "--json", str(model)], "the model"),
        (
            [
                "train",
                "zoo:cnn-s",
                "--weights",
                str(weights),
                "--epochs",
                "1",
                "-o",
                str(tmp_path / "w.onnx"),
            ],
            "the weights",
        ),
        (
            [
                "prune",
                "zoo:cnn-s",
                "--weights",
                str(weights),
                "--ratio",
                "0.5",
                "-o",
                str(tmp_path / "w.onnx"),
            ],
            "the weights",
        ),
    ]
    for args, what in cases:
        code, _, err = run_cli(args, capsys, is_err_flat=True)
        assert code == 2, (args, err)
        assert f"would overwrite {what}" in err and "pick another path" in err, err
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "w.onnx").exists() and not (tmp_path / "w.json").exists()


def test_a_model_with_two_inputs_is_one_sentence_for_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was ONNX Runtime's "Required inputs (['b']) are missing" traceback, and optimize
    left its study.db behind."""
    import onnx
    from onnx import TensorProto
    from onnx import helper

    shape = [None, 1, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    rundir = tmp_path / "run"
    for args in (
        ["profile", str(model), "--data", "digits"],
        ["bench", str(model), "--batch", "1"],
        ["optimize", str(model), "--data", "digits", "--target", "cortex-m4", "-o", str(rundir)],
    ):
        code, _, err = run_cli(args, capsys, is_err_flat=True)
        assert code == 2 and "the model has 2 inputs ('a', 'b')" in err, (args, err)
    assert not rundir.exists()


def test_what_a_killed_run_left_beside_its_output_is_swept_by_the_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGKILLed quantize (here during QAT) left its hidden staging folder for ever; the next
    run in that folder removes those of dead processes and keeps those of running ones."""
    import os
    import signal
    import time

    from edgeopt._io import SCRATCH

    out = tmp_path / "runs" / "m.onnx"
    command = [sys.executable, "-m", "edgeopt.cli", "quantize", "zoo:cnn-s", "--method", "qat"]
    command += ["--epochs", "200", "-o", str(out.with_name("q.onnx"))]
    killed = subprocess.Popen(command)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.parent.glob(f"{SCRATCH}*")):
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left = list(out.parent.glob(f"{SCRATCH}{killed.pid}-*"))
    assert left, "the killed run staged nothing beside its output"
    alive = out.parent / f"{SCRATCH}{os.getpid()}-in-use"
    alive.mkdir()
    code, _, err = run_cli(["train", "zoo:cnn-s", "--epochs", "1", "-o", str(out)], capsys)
    assert code == 0, err
    assert not any(path.exists() for path in left)
    assert alive.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [alive.name, "m.json", "m.onnx", "m.pt"]
    )


def test_a_factory_module_is_found_in_the_current_folder(tmp_path: Path) -> None:
    """`edgeopt profile mynet:build` needed PYTHONPATH=. (the console script's folder is first
    on sys.path); a factory that raises is one sentence naming it."""
    import os
    import shutil

    (tmp_path / "mynet.py").write_text(
        "import torch\n\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n\n"
        "def broken():\n"
        "    raise ValueError('no such layer')\n"
    )
    script = shutil.which("edgeopt", path=str(Path(sys.executable).parent))
    assert script is not None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = [script, "profile", "mynet:build", "--data", "digits"]
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "MACs" in done.stdout
    run[2] = "mynet:broken"
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "mynet:broken: the factory raised ValueError (no such layer)" in done.stderr


def test_an_unwritable_output_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only place (here /proc, which takes no new file even for root) was a
    FileNotFoundError traceback after the training."""
    for args in (
        ["train", "zoo:cnn-s", "--epochs", "1", "-o", "/proc/edgeopt/m.onnx"],
        ["profile", "zoo:cnn-s", "--json", "/proc/edgeopt/p.json"],
        ["optimize", "zoo:cnn-s", "--target", "cortex-m4", "-o", "/proc/edgeopt/run"],
    ):
        code, _, err = run_cli(args, capsys, is_err_flat=True)
        assert code == 2 and "cannot write in /proc" in err, (args, err)


def test_a_full_disk_is_one_sentence_and_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The disk filling while train writes its weights (the write fails with ENOSPC, as it
    does on a full disk): exit 2, one sentence, no file and no staging folder left."""
    import errno

    import torch

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "m.pt"))

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "out" / "m.onnx"
    code, _, err = run_cli(["train", "zoo:cnn-s", "--epochs", "1", "-o", str(out)], capsys)
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_full_disk_leaves_no_empty_study_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """optimize stopped by a full disk before any trial: no empty study.db (which the next
    run would resume) and no run folder it made."""
    import errno
    import importlib

    search = importlib.import_module("edgeopt.search.optimize")  # the module, not the verb

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "x"))

    monkeypatch.setattr(search, "_baseline", full)
    run = tmp_path / "run"
    args = ["optimize", "zoo:cnn-s", "--target", "cortex-m4", "--trials", "1", "-o", str(run)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert not run.exists()
    # A run folder that existed keeps what it held, but not an empty study.
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    code, _, _ = run_cli(args, capsys)
    assert code == 2 and sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_without_a_terminal_progress_is_a_line_per_epoch_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgeopt train ... > log 2>&1` wrote nothing until the end: a live bar draws nothing
    where stderr is not a terminal. There each finished epoch is a line on stderr, and stdout
    keeps the results alone."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # either would make stderr "a terminal"
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "m.onnx"
    code, stdout, err = run_cli(["train", "zoo:cnn-s", "--epochs", "2", "-o", str(out)], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "train: epoch 1/2 done",
        "train: epoch 2/2 done",
    ]
    assert all(" loss " in line and line.endswith(" s)") for line in lines)
    assert "epoch 1/2" not in stdout and "test accuracy" in stdout
