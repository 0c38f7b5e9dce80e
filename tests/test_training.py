from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from edgeopt.config import TrainConfig
from edgeopt.errors import InputError
from edgeopt.models import load_model
from edgeopt.pipeline import save_trained
from edgeopt.training import train


def test_training_learns_digits_and_is_reproducible() -> None:
    first = train("zoo:cnn-s", "digits", TrainConfig(epochs=4, seed=3))
    second = train("zoo:cnn-s", "digits", TrainConfig(epochs=4, seed=3))
    assert first.test_accuracy > 0.9
    assert first.history[-1].loss < first.history[0].loss
    for a, b in zip(
        first.model.module.state_dict().values(),
        second.model.module.state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_training_does_not_touch_the_source_module() -> None:
    handle = load_model("zoo:cnn-s")
    before = {k: v.clone() for k, v in handle.module.state_dict().items()}
    result = train(handle, "digits", TrainConfig(epochs=1))
    for key, value in handle.module.state_dict().items():
        assert torch.equal(value, before[key])
    assert result.model.history[-1].startswith("train(")


def test_save_writes_onnx_weights_and_record(tmp_path: Path) -> None:
    result = train("zoo:cnn-s", "digits", TrainConfig(epochs=2))
    files = save_trained(result, "digits", tmp_path / "out" / "cnn.onnx")
    record = json.loads(files.record_path.read_text())
    assert record["after"]["accuracy"] == pytest.approx(result.test_accuracy, abs=1e-9)
    assert record["input"]["test_accuracy_pytorch"] == result.test_accuracy
    assert record["data"]["normalization"]["mean"][0] > 0
    meta = {p.key: p.value for p in onnx.load(str(files.onnx_path)).metadata_props}
    assert json.loads(meta["edgeopt.normalization"])["raw_dtype"] == "uint8"
    reloaded = load_model("zoo:cnn-s", weights=files.weights_path)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(reloaded.module(x), result.model.module.eval()(x))


def test_save_refuses_a_non_onnx_output_and_writes_nothing(tmp_path: Path) -> None:
    result = train("zoo:cnn-s", "digits", TrainConfig(epochs=1))
    with pytest.raises(InputError, match="must end in .onnx"):
        save_trained(result, "digits", tmp_path / "cnn.bin")
    assert list(tmp_path.iterdir()) == []


def test_onnx_model_cannot_be_trained(tmp_path: Path) -> None:
    result = train("zoo:cnn-s", "digits", TrainConfig(epochs=1))
    files = save_trained(result, "digits", tmp_path / "cnn.onnx")
    with pytest.raises(InputError, match="training needs a PyTorch model"):
        train(str(files.onnx_path), "digits")


def test_model_with_the_wrong_class_count_is_refused() -> None:
    with pytest.raises(InputError, match="outputs \\(3,\\) per sample but digits has 10 classes"):
        train("zoo:cnn-s?classes=3", "digits", TrainConfig(epochs=1))


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", 0), ("learning_rate", 0.0), ("label_smoothing", 1.0)],
)
def test_bad_train_config_is_refused(field: str, value: float) -> None:
    with pytest.raises(InputError, match=field):
        TrainConfig(**{field: value})


def test_train_config_round_trips() -> None:
    config = TrainConfig(epochs=3, seed=7)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="unknown field"):
        TrainConfig.from_dict({**config.to_dict(), "epoch": 3})
