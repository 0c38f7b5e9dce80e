"""Fixtures shared by every test module (fixtures only)."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the host profile's measurement cache out of the user's ~/.cache during tests."""
    folder = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(folder))
    yield folder
    patch.undo()


# -- small int8 QDQ models on real data, quantized once (export, measure and stage tests) --


@dataclass(frozen=True)
class Quantized:
    """An int8 QDQ model and float samples to run it on (a test split or fixed inputs)."""

    onnx_path: Path
    samples: np.ndarray
    source: str  # where the samples come from


def _train_and_quantize(
    spec: str, data: Dataset, folder: Path, *, epochs: int, calibration: str = "mse"
) -> Path:
    import torch

    from edgeopt.export.onnx import export_onnx
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize
    from edgeopt.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast, and robust on shared cores
    try:
        trained = train(spec, data, TrainConfig(epochs=epochs))
    finally:
        torch.set_num_threads(threads)
    fp32 = export_onnx(trained.model, folder / "fp32.onnx")
    return quantize(
        str(fp32), PTQConfig(calibration=calibration), data=data, output=folder / "int8.onnx"
    ).model.onnx_path


def _random_npz(folder: Path, shape: tuple[int, ...], *, samples: int, seed: int) -> str:
    """Random but fixed inputs (smoothed along the last axis, like images) and labels."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal((samples, *shape)), axis=-1).astype(np.float32) / 4
    path = folder / "random.npz"
    np.savez(path, x=x, y=np.arange(samples) % 4)
    return f"npz:{path}"


@pytest.fixture(scope="session")
def cnn_s_int8(tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    """zoo:cnn-s trained 8 epochs on digits, int8 by PTQ; its digits test split."""
    digits = load_data("digits")
    folder = tmp_path_factory.mktemp("cnn-s-int8")
    path = _train_and_quantize("zoo:cnn-s", digits, folder, epochs=8)
    return Quantized(path, digits.arrays("test")[0], "digits test split")


@pytest.fixture(scope="session")
def lenet5_int8(tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    """zoo:lenet5 int8: trained on 2,000 Fashion-MNIST images when shared/data has them (300
    test images), else trained briefly on fixed random 1x28x28 inputs."""
    from edgeopt.testing import shared_data_dir

    folder = tmp_path_factory.mktemp("lenet5-int8")
    fashion = shared_data_dir("fashion-mnist")
    if fashion is not None:
        data = load_data(f"idx:{fashion}?limit=2000")
        path = _train_and_quantize("zoo:lenet5", data, folder, epochs=1)
        return Quantized(path, data.arrays("test")[0][:300], "Fashion-MNIST test split")
    data = load_data(_random_npz(folder, (1, 28, 28), samples=256, seed=5))
    path = _train_and_quantize("zoo:lenet5?classes=4", data, folder, epochs=1)
    return Quantized(path, data.arrays("test")[0], "fixed random 1x28x28 inputs")


def _zoo_int8(spec: str, shape: tuple[int, ...], folder: Path, seed: int) -> Quantized:
    """A zoo model with BatchNorm statistics from one short epoch, PTQ'd on random data."""
    data = load_data(_random_npz(folder, shape, samples=192, seed=seed))
    path = _train_and_quantize(spec, data, folder, epochs=1, calibration="minmax")
    return Quantized(path, data.arrays("test")[0], "fixed random inputs")


@pytest.fixture(scope="session")
def ds_cnn_int8(tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    """zoo:ds-cnn-s (depthwise + pointwise blocks) on random 1x49x10 spectrograms."""
    folder = tmp_path_factory.mktemp("ds-cnn-int8")
    return _zoo_int8("zoo:ds-cnn-s?classes=4", (1, 49, 10), folder, seed=6)


@pytest.fixture(scope="session")
def resnet8_int8(tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    """zoo:resnet8 (residual adds) at 3x16x16 on random inputs."""
    folder = tmp_path_factory.mktemp("resnet8-int8")
    return _zoo_int8("zoo:resnet8?classes=4&input=3x16x16", (3, 16, 16), folder, seed=7)


#: One small member of every zoo family the C reference is checked on (random inputs).
ZOO_FAMILIES = {
    "mobilenet-v1": ("zoo:mobilenet-v1?width=0.25&classes=4&input=3x32x32", (3, 32, 32)),
    "mobilenet-v2": ("zoo:mobilenet-v2?width=0.35&classes=4&input=3x32x32", (3, 32, 32)),
    "mobilenet-v3": ("zoo:mobilenet-v3-small?width=0.5&classes=4&input=3x32x32", (3, 32, 32)),
    "squeezenet": ("zoo:squeezenet1.1?width=0.5&classes=4&input=3x32x32", (3, 32, 32)),
    "shufflenet": ("zoo:shufflenet-v2?width=0.5&classes=4&input=3x32x32", (3, 32, 32)),
}


@pytest.fixture(scope="session")
def zoo_family_int8(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Quantized]:
    """``get(family)``: that family's small model, int8 by PTQ on random inputs (made once)."""
    made: dict[str, Quantized] = {}

    def get(family: str) -> Quantized:
        if family not in made:
            spec, shape = ZOO_FAMILIES[family]
            folder = tmp_path_factory.mktemp(family)
            made[family] = _zoo_int8(spec, shape, folder, seed=len(made) + 11)
        return made[family]

    return get
