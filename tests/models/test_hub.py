"""torchvision: and timm: model specs (issue 14, item 1b): the libraries' own architectures,
fresh weights, no downloads, trained weights back through --weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clitools import run_cli
from edgeopt.errors import InputError
from edgeopt.models import load_model


@pytest.fixture(scope="module", autouse=True)
def _vision() -> None:
    from edgeopt.models.hub import _import_torchvision

    try:
        _import_torchvision()
        import timm  # noqa: F401
    except (InputError, ImportError) as exc:
        pytest.skip(f"the vision extra (torchvision, timm) is not installed: {exc}")


def test_counts_match_the_papers() -> None:
    """MobileNetV3-Small at 224x224: 56 M multiply-adds, 2.5 M parameters (Howard et al. 2019,
    "Searching for MobileNetV3", Table 3); what edgeopt counts on the exported file."""
    from edgeopt.measure import profile

    metrics = profile("torchvision:mobilenet_v3_small", is_latency_measured=False)
    assert metrics.macs == pytest.approx(56.5e6, rel=0.01)
    assert metrics.params == pytest.approx(2.54e6, rel=0.01)


def test_one_channel_input_rebuilds_the_stem_and_weights_round_trip(tmp_path: Path) -> None:
    spec = "torchvision:mnasnet0_5?classes=10&input=1x32x32"
    handle = load_model(spec)
    assert handle.input_shape == (1, 32, 32) and handle.num_classes == 10
    stem = next(m for m in handle.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.in_channels == 1
    # the state dict a training run writes loads back into the same spec
    state = handle.module.state_dict()
    for value in state.values():
        if value.is_floating_point():
            value.add_(0.01)
    torch.save(state, tmp_path / "w.pt")
    again = load_model(spec, weights=tmp_path / "w.pt")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.module(x), handle.module(x))


def test_defaults_come_from_the_data_and_the_seed_fixes_the_weights() -> None:
    from edgeopt.data import load_data

    digits = load_data("digits")  # 1x8x8, 10 classes: too small for SqueezeNet's pooling
    with pytest.raises(InputError, match=r"cannot take a 1x8x8 input.*\?input="):
        load_model("torchvision:squeezenet1_1", data=digits)
    first = load_model("timm:mobilenetv3_small_050?input=1x32x32&seed=3", data=digits)
    second = load_model("timm:mobilenetv3_small_050?input=1x32x32&seed=3", data=digits)
    assert first.num_classes == 10
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(first.module(x), second.module(x))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("torchvision:nope", "torchvision has no classification model 'nope'"),
        ("timm:nope", "timm has no model 'nope'"),
        ("torchvision:", "name the architecture"),
        ("torchvision:resnet18?weights=DEFAULT", "downloads nothing at run time"),
        ("timm:resnet18?pretrained=true", "downloads nothing at run time"),
        ("torchvision:resnet18?norm_layer=os.system", "must be a number or true/false"),
        ("torchvision:mobilenet_v2?width_mult=nan", "must be a number or true/false"),
        ("torchvision:mobilenet_v2?colour=1", "torchvision refused these keywords"),
        ("torchvision:mobilenet_v2?input=3x32x32&in_chans=1", "C = in_chans = 1"),
        ("torchvision:mobilenet_v2?classes=0", "between 1 and 100000"),
    ],
)
def test_bad_specs_are_one_sentence(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_model(spec)


def test_cli_trains_and_profiles_a_torchvision_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    monkeypatch.chdir(tmp_path)
    bunch = load_digits()  # 400 8x8 digits, each pixel a 4x4 block: 1x32x32
    x = np.kron(bunch.images[:400], np.ones((4, 4))).astype(np.uint8)[:, None]
    np.savez("digits32.npz", x=x, y=bunch.target[:400])
    spec, data = "torchvision:squeezenet1_1", "npz:digits32.npz"
    code, out, err = run_cli(
        ["train", spec, "--data", data, "--epochs", "1", "-o", "sq.onnx"], capsys
    )
    assert code == 0, err
    assert Path("sq.onnx").is_file() and Path("sq.pt").is_file()
    code, out, err = run_cli(["profile", spec, "--weights", "sq.pt", "--data", data], capsys)
    assert code == 0, err
    assert "accuracy" in out
