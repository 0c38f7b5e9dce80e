from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.models import load_model


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "lenet5.onnx"
    return export_onnx(load_model("zoo:lenet5"), path)


def test_onnx_file_loads_with_its_input_shape(lenet_onnx: Path) -> None:
    handle = load_model(str(lenet_onnx))
    assert handle.onnx_path == lenet_onnx
    assert handle.input_shape == (1, 28, 28)
    assert handle.num_classes == 10
    assert not handle.is_torch


def test_a_path_object_loads_like_its_string(lenet_onnx: Path) -> None:
    from_path = load_model(lenet_onnx)
    assert from_path.onnx_path == load_model(str(lenet_onnx)).onnx_path
    assert from_path.input_shape == (1, 28, 28)


def test_onnx_with_external_data_loads(lenet_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(lenet_onnx))
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").stat().st_size > 200_000
    handle = load_model(str(path))
    assert handle.input_shape == (1, 28, 28)


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_model(str(tmp_path / "nope.onnx"))


def test_truncated_onnx_is_refused(lenet_onnx: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(lenet_onnx.read_bytes()[:5000])
    with pytest.raises(InputError, match="not a valid ONNX model"):
        load_model(str(broken))


def test_garbage_onnx_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not a protobuf at all" * 10)
    with pytest.raises(InputError, match="not a valid ONNX model"):
        load_model(str(junk))


def test_torch_export_program_loads_and_runs(tmp_path: Path) -> None:
    module = load_model("zoo:cnn-s").module
    program = torch.export.export(module, (torch.randn(1, 1, 8, 8),))
    path = tmp_path / "cnn.pt2"
    torch.export.save(program, str(path))
    handle = load_model(str(path))
    assert handle.input_shape == (1, 8, 8)
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(handle.module(x), module(x))


def test_factory_with_weights_loads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build():
                return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reference = load_model("userpkg.nets:build").module
    torch.nn.init.constant_(reference[1].weight, 0.25)
    weights = tmp_path / "w.pt"
    torch.save(reference.state_dict(), weights)
    handle = load_model("userpkg.nets:build?input=1x8x8", weights=weights)
    assert handle.input_shape == (1, 8, 8)
    assert torch.all(handle.module[1].weight == 0.25)
    sys.modules.pop("userpkg.nets", None)


def test_weights_that_do_not_match_are_named(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(load_model("zoo:lenet300").module.state_dict(), weights)
    with pytest.raises(InputError, match="does not match zoo:lenet5"):
        load_model("zoo:lenet5", weights=weights)


def test_weights_with_code_are_refused(tmp_path: Path) -> None:
    # weights_only=True: a pickled object (here a whole module) is not executed or accepted.
    weights = tmp_path / "module.pt"
    torch.save(load_model("zoo:lenet5").module, weights)
    with pytest.raises(InputError, match="not a PyTorch state dict"):
        load_model("zoo:lenet5", weights=weights)


def test_unknown_spec_form_is_refused() -> None:
    with pytest.raises(InputError, match="is not a model spec"):
        load_model("lenet5")


@pytest.mark.parametrize("damage", ["element-type", "short-bytes", "constant-node"])
def test_a_constant_the_checker_lets_through_is_refused_naming_it(
    lenet_onnx: Path, tmp_path: Path, damage: str
) -> None:
    """Found by the fuzzer: an initializer of element type 79 (or bytes that do not fill its
    shape) passes onnx.checker, and the C exporter's read of it was a KeyError (exit 1)."""
    model = onnx.load(str(lenet_onnx))
    init = model.graph.initializer[0]
    if damage == "element-type":
        init.data_type = 79
        expected = "element type 79"
    elif damage == "long-bytes":
        init.raw_data = init.raw_data + b"\0" * 4  # (too few: the checker refuses it)
        expected = "bytes, not the"
    else:
        value = onnx.numpy_helper.from_array(np.zeros(3, np.float32), "k")
        value.data_type = 63
        node = onnx.helper.make_node("Constant", [], ["unused_k"], value=value)
        model.graph.node.insert(0, node)
        expected = "element type 63"
    path = tmp_path / "damaged.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InputError, match=expected) as error:
        load_model(str(path))
    assert str(path) in str(error.value)


def test_a_damaged_program_is_one_sentence_and_no_logged_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """torch.export.load logs the traceback of a damaged archive as a warning; found by the
    fuzzer once it read stderr too."""
    import io
    import zipfile

    program = torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),))
    good = tmp_path / "ok.pt2"
    torch.export.save(program, good)
    for name, blob in {
        "junk.pt2": b"not a zip at all" * 20,
        "cut.pt2": good.read_bytes()[:-200],
    }.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputError, match="not a saved torch.export program"):
            load_model(str(tmp_path / name))
    source, out = zipfile.ZipFile(good), io.BytesIO()
    with zipfile.ZipFile(out, "w") as damaged:
        for info in source.infolist():
            data = source.read(info.filename)
            damaged.writestr(
                info, data[: len(data) // 2] if info.filename.endswith(".json") else data
            )
    (tmp_path / "half.pt2").write_bytes(out.getvalue())
    with pytest.raises(InputError, match="not a saved torch.export program"):
        load_model(str(tmp_path / "half.pt2"))
    assert "Traceback" not in capfd.readouterr().err
