"""What ``edgeopt export`` decides lives in the library: the option checks of ExportConfig and
the parity verdicts (a folded file, a C library), with the messages the command prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeopt.data.dataset import Normalization
from edgeopt.errors import InputError
from edgeopt.export.artifact import ExportConfig
from edgeopt.export.artifact import check_export
from edgeopt.export.artifact import export_model
from edgeopt.export.c import CBuildError
from edgeopt.export.c import CParity
from edgeopt.export.c import require_exact
from edgeopt.export.fold import FoldResult
from edgeopt.export.onnx import ExportError
from edgeopt.measure.int8 import Int8Arithmetic
from edgeopt.measure.int8 import host_int8


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "coreml"}, "unknown export format 'coreml'; known: c, onnx, tflite."),
        ({"samples": 0}, "--samples must be at least 1, got 0."),
        ({"weight_type": "int4"}, "--weight-type must be int8 or uint8, got 'int4'."),
        ({"weight_type": "uint8"}, "--weight-type uint8 needs --format onnx without --raw-input"),
        (
            {"weight_type": "uint8", "format": "onnx", "is_raw_input": True},
            "--weight-type uint8 needs --format onnx without --raw-input",
        ),
        ({"format": "onnx"}, "--raw-input needs --format onnx and --data SPEC"),
        ({"is_raw_input": True}, "--raw-input needs --format onnx and --data SPEC"),
    ],
)
def test_export_config_refuses_what_writes_nothing_useful(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        ExportConfig(**fields)  # type: ignore[arg-type]


def test_export_config_survives_a_dict_round_trip() -> None:
    config = ExportConfig(format="onnx", is_raw_input=True, samples=50, prefix="kws")
    assert ExportConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["kind"] == "export"


def test_raw_input_without_data_is_refused_before_reading_the_model(tmp_path: Path) -> None:
    config = ExportConfig(format="onnx", is_raw_input=True)
    out = tmp_path / "raw.onnx"
    with pytest.raises(InputError, match="--raw-input needs --format onnx and --data SPEC"):
        export_model(tmp_path / "missing.onnx", config, output=out)
    assert not out.exists()


def _parity(agreement: float, lsb: int, *, is_reference_exact: bool = True) -> CParity:
    arithmetic = Int8Arithmetic(
        path="as-shipped",
        reason="VNNI on this host",
        host=host_int8(),
        is_exact=is_reference_exact,
        is_checked=True,
    )
    return CParity(100, agreement, 0.5, 1.0, lsb, {"y": lsb}, "gcc", arithmetic)


def test_an_exact_c_library_is_accepted() -> None:
    assert require_exact(_parity(1.0, 0), library="c", data="digits") is None


def test_a_c_library_off_the_exact_integers_is_a_build_error() -> None:
    with pytest.raises(CBuildError) as caught:
        require_exact(_parity(0.99, 3), library="out/c", data="digits")
    assert str(caught.value) == (
        "out/c: the C library differs from the exact integers on digits (top-1 agreement "
        "99.00%, 3 LSB); please report it."
    )


def test_a_reference_that_is_not_the_integers_is_not_judged() -> None:
    parity = _parity(0.99, 3, is_reference_exact=False)
    note = require_exact(parity, library="c", data="digits")
    assert note == (
        "not checked: ONNX Runtime does not compute this file's integers exactly on this host "
        "(VNNI on this host)."
    )


def test_a_folded_file_whose_top1_differs_is_an_export_error() -> None:
    norm = Normalization(mean=(0.5,), std=(0.25,), raw_dtype="uint8")
    same = FoldResult(Path("raw.onnx"), "prepended", "uint8", norm, 100, 1.0, 1e-6)
    assert check_export(same, source="m.onnx", data="digits") is None
    off = FoldResult(Path("raw.onnx"), "prepended", "uint8", norm, 100, 0.97, 0.8)
    with pytest.raises(ExportError) as caught:
        check_export(off, source="m.onnx", data="digits")
    assert str(caught.value) == (
        "raw.onnx: the folded model's top-1 differs from m.onnx on 3.00% of digits's test "
        "samples; please report it."
    )
