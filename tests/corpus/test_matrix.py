"""The corpus matrix (issue 14, items 1 and 1b): every command on twelve user-style models and
seven torchvision / timm architectures.

Each cell runs one ``edgeopt`` command as a user would, in a fresh working folder, and must end
in one of two ways: it succeeds, or it refuses in one sentence (exit 2) that names what it
cannot take. A traceback, an internal error (exit 1), a file left behind by a refusal or a
stray file in the working folder fails the cell. The cells run in-process (the CLI tests'
``run_cli``), a model's commands in order: train first, then every other command on what it
wrote (``--weights`` for the PyTorch ones, the ONNX file for the others).

It is marked ``corpus``: ``make corpus`` runs it (about 15 minutes on 2 cores), and the
README's matrix is its output (``EDGEOPT_CORPUS_OUT=DIR`` writes one JSON row per model;
``benchmarks/corpus.py`` turns them into the table).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clitools import run_cli
from corpus.usermodels import INPUTS
from corpus.usermodels import LIBRARY_SPECS

pytestmark = pytest.mark.corpus

#: The commands of a row, in the order they run (their names are the matrix's columns).
COMMANDS = (
    "train",
    "profile",
    "ptq",
    "qat",
    "prune-channel",
    "prune-weights",
    "export-c",
    "optimize",
)


@pytest.fixture(scope="module")
def sequences(tmp_path_factory: pytest.TempPathFactory) -> str:
    """scikit-learn's digits as 8 steps (rows) of 8 features, uint8 0-16: a real dataset in the
    shape a sequence model takes, kept as it is by the npz loader."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    path = tmp_path_factory.mktemp("corpus-data") / "digit-rows.npz"
    np.savez(path, x=bunch.images.astype(np.uint8).transpose(0, 2, 1), y=bunch.target)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def digits32(tmp_path_factory: pytest.TempPathFactory) -> str:
    """scikit-learn's digits at 1x32x32 (each pixel a 4x4 block), uint8 0-16: the smallest
    images torchvision's and timm's ImageNet architectures take."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    path = tmp_path_factory.mktemp("corpus-data") / "digits32.npz"
    x = np.kron(bunch.images, np.ones((4, 4))).astype(np.uint8)[:, None]
    np.savez(path, x=x, y=bunch.target)
    return f"npz:{path}"


def _vision_missing() -> str | None:
    """Why the torchvision / timm rows cannot run here, or None."""
    from edgeopt.errors import InputError
    from edgeopt.models.hub import _import_torchvision

    try:
        _import_torchvision()
        import timm  # noqa: F401
    except (InputError, ImportError) as exc:
        return f"the vision extra (torchvision, timm) is not installed: {exc}"
    return None


def _one_error_line(err: str) -> bool:
    """One sentence of refusal: progress lines (a line per epoch without a TTY) may come first;
    the refusal is the last line and the only one that starts with ``error:``."""
    lines = err.strip().splitlines()
    return sum(line.startswith("error:") for line in lines) == 1 and lines[-1].startswith("error:")


def _cell(
    args: list[str], capsys: pytest.CaptureFixture[str], writes: list[Path]
) -> dict[str, str]:
    """Run one command; classify its ending; check that a refusal left nothing behind."""
    before = set(Path.cwd().iterdir())
    code, out, err = run_cli(args, capsys)
    stray = sorted(p.name for p in set(Path.cwd().iterdir()) - before)
    message = " ".join(err.split())
    if code in (0, 3):  # 3: optimize found no candidate within the budget (said in its report)
        status = "ok" if code == 0 else "ok (no candidate met the budget)"
    elif code == 2 and "Traceback" not in err and _one_error_line(err):
        status = "refused"
        left = [str(p) for p in writes if p.exists()]
        assert not left, f"{args[0]} refused but left {left}"
    else:
        pytest.fail(f"edgeopt {' '.join(args)} ended with exit {code}: {err[-2000:]}")
    assert not stray, f"edgeopt {args[0]} left {stray} in the working folder"
    return {"status": status, "message": message if status == "refused" else out.strip()[-300:]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INPUTS) + sorted(LIBRARY_SPECS))
def test_every_command_succeeds_or_refuses_in_one_sentence(
    name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if name in LIBRARY_SPECS:
        missing = _vision_missing()
        if missing:
            pytest.skip(missing)
        spec, data = LIBRARY_SPECS[name], request.getfixturevalue("digits32")
    else:
        shape = INPUTS[name]
        data = "digits" if len(shape) == 3 else request.getfixturevalue("sequences")
        spec = f"corpus.usermodels:{name}"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    row: dict[str, dict[str, str]] = {}
    trained, weights = out / f"{name}.onnx", out / f"{name}.pt"
    row["train"] = _cell(
        ["train", spec, "--data", data, "--epochs", "3", "-o", str(trained)],
        capsys,
        [trained, weights],
    )
    if row["train"]["status"] != "ok":
        pytest.fail(f"{name}: train refused: {row['train']['message']}")
    torch_model = [spec, "--weights", str(weights)]
    ptq = out / f"{name}.ptq.onnx"
    cells = {
        "profile": (["profile", str(trained), "--data", data, "--target", "cortex-m4"], []),
        "ptq": (["quantize", str(trained), "--data", data, "-o", str(ptq)], [ptq]),
        "qat": (
            [
                "quantize",
                *torch_model,
                "--method",
                "qat",
                "--epochs",
                "1",
                "--data",
                data,
                "-o",
                str(out / f"{name}.qat.onnx"),
            ],
            [out / f"{name}.qat.onnx"],
        ),
        "prune-channel": (
            [
                "prune",
                *torch_model,
                "--kind",
                "channel",
                "--ratio",
                "0.3",
                "--finetune-epochs",
                "1",
                "--data",
                data,
                "-o",
                str(out / f"{name}.ch.onnx"),
            ],
            [out / f"{name}.ch.onnx", out / f"{name}.ch.pt"],
        ),
        "prune-weights": (
            [
                "prune",
                *torch_model,
                "--kind",
                "unstructured",
                "--ratio",
                "0.5",
                "--finetune-epochs",
                "1",
                "--data",
                data,
                "-o",
                str(out / f"{name}.un.onnx"),
            ],
            [out / f"{name}.un.onnx", out / f"{name}.un.pt"],
        ),
    }
    for command, (args, writes) in cells.items():
        row[command] = _cell(args, capsys, writes)
    c_dir = out / f"{name}_c"
    if ptq.exists():
        row["export-c"] = _cell(
            ["export", str(ptq), "--format", "c", "--data", data, "-o", str(c_dir)], capsys, [c_dir]
        )
    else:
        row["export-c"] = {"status": "skipped", "message": "no int8 file (ptq refused)"}
    run_dir = out / f"{name}-search"
    row["optimize"] = _cell(
        [
            "optimize",
            *torch_model,
            "--data",
            data,
            "--target",
            "cortex-m4",
            "--trials",
            "4",
            "--finetune-epochs",
            "1",
            "--epochs",
            "1",
            "--student-widths",
            "0.5",
            "-o",
            str(run_dir),
        ],
        capsys,
        [],
    )
    if os.environ.get("EDGEOPT_CORPUS_OUT"):
        folder = Path(os.environ["EDGEOPT_CORPUS_OUT"])
        folder.mkdir(parents=True, exist_ok=True)
        record = {"model": name, "spec": spec, "commands": COMMANDS, "cells": row}
        (folder / f"{name}.json").write_text(json.dumps(record, indent=1))
    assert set(row) == set(COMMANDS)
