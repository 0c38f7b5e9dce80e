"""The exact integer reference: what edgeopt measures on an int8 file is what the device computes.

The reference is the generated C library (int8 x int8 products, 32-bit sums, the requantization
of :mod:`edgeopt.export.c._lower`), built with gcc on this host: it cannot saturate. Every
int8 tensor that ONNX Runtime computes on edgeopt's measurement paths must equal it (0 LSB) with
the same top-1, for every zoo family, for 4-bit and for mixed-precision files. The
rewritten path is checked on every host, not only where the host needs it; the ``auto``
path must compute the same numbers as it here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.export.c import check_c
from edgeopt.export.c import export_c
from edgeopt.measure.int8 import REWRITTEN
from edgeopt.measure.int8 import make_exact_session
from edgeopt.measure.runtime import predict
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import quantize

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("size") is None,
    reason="gcc and binutils' size are not installed (Debian: apt-get install gcc)",
)

_FIXTURES = {
    "cnn-s": "cnn_s_int8",
    "lenet5": "lenet5_int8",
    "ds-cnn": "ds_cnn_int8",
    "resnet8": "resnet8_int8",
}
#: the other families come from the ``zoo_family_int8`` fixture
FAMILIES = [*_FIXTURES, "mobilenet-v1", "mobilenet-v2", "mobilenet-v3", "squeezenet", "shufflenet"]
SAMPLES = 64


def _quantized(family: str, request: pytest.FixtureRequest) -> Any:
    if family in _FIXTURES:
        return request.getfixturevalue(_FIXTURES[family])
    return request.getfixturevalue("zoo_family_int8")(family)


def _assert_measured_equals_reference(onnx_path: Path, samples: np.ndarray, out: Path) -> Any:
    """The C library against ONNX Runtime on the rewritten path: every int8 tensor equal;
    then the path edgeopt takes on this host (auto) gives the same logits."""
    export = export_c(onnx_path, out)
    parity = check_c(export, samples, path=REWRITTEN)
    assert parity.top1_agreement == 1.0
    assert parity.max_tensor_lsb == 0, parity.tensor_lsb
    assert len(parity.tensor_lsb) >= 3  # the intermediate tensors were compared too
    int8 = parity.arithmetic
    assert int8 is not None and int8.path == REWRITTEN
    assert int8.is_exact and int8.is_checked and int8.unchecked is None
    auto = make_exact_session(onnx_path)
    assert auto.arithmetic is not None and auto.arithmetic.is_exact
    measured = predict(auto, samples)
    reference = predict(make_exact_session(onnx_path, path=REWRITTEN), samples)
    np.testing.assert_allclose(measured, reference, rtol=0, atol=1e-6)
    assert (measured.argmax(axis=1) == reference.argmax(axis=1)).all()
    return auto.arithmetic


@needs_gcc
@pytest.mark.parametrize("family", FAMILIES)
def test_every_zoo_family_measures_the_integers_of_the_c_reference(
    family: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    quantized = _quantized(family, request)
    samples = quantized.samples[:SAMPLES]
    _assert_measured_equals_reference(quantized.onnx_path, samples, tmp_path / "c")


def _requantize(quantized: Any, config: Any, folder: Path, data: str | None = None) -> Path:
    """The fixture's fp32 file quantized again with ``config``, calibrated on ``data`` (default:
    the fixture's samples)."""
    folder.mkdir(parents=True, exist_ok=True)
    if data is None:
        np.savez(
            folder / "samples.npz", x=quantized.samples, y=np.arange(len(quantized.samples)) % 4
        )
        data = f"npz:{folder / 'samples.npz'}"
    fp32 = quantized.onnx_path.parent / "fp32.onnx"
    return quantize(str(fp32), config, data=data, output=folder / "q.onnx").model.onnx_path


@needs_gcc
@pytest.mark.parametrize("family", ["cnn-s", "ds-cnn", "resnet8", "mobilenet-v3"])
def test_4bit_files_are_measured_on_integer_kernels(
    family: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """ONNX Runtime computes 4-bit weights in float: every host takes the rewritten path,
    where they run as uint8 on its integer kernels and equal the reference."""
    quantized = _quantized(family, request)
    path = _requantize(quantized, PTQConfig(bits=4, calibration="minmax"), tmp_path)
    int8 = _assert_measured_equals_reference(path, quantized.samples[:SAMPLES], tmp_path / "c")
    assert int8.path == REWRITTEN and not int8.is_shipped_exact
    assert "4-bit" in int8.reason


@needs_gcc
def test_mixed_precision_file_is_measured_as_the_reference_computes_it(
    cnn_s_int8: Any, tmp_path: Path
) -> None:
    from edgeopt.stages.quantize.mixed import MixedPrecisionConfig

    sizes = [
        _requantize(cnn_s_int8, PTQConfig(bits=bits), tmp_path / f"w{bits}", "digits").stat()
        for bits in (8, 4)
    ]
    budget = sum(size.st_size for size in sizes) // 2
    config = MixedPrecisionConfig(max_flash_bytes=budget, allow_float=False)
    fp32 = cnn_s_int8.onnx_path.parent / "fp32.onnx"
    result = quantize(str(fp32), config, data="digits", output=tmp_path / "mixed.onnx")
    assert result.plan is not None and set(result.plan.bits.values()) == {4, 8}
    int8 = _assert_measured_equals_reference(
        result.model.onnx_path, cnn_s_int8.samples[:SAMPLES], tmp_path / "c"
    )
    assert int8.path == REWRITTEN  # its 4-bit layers need it on every host
