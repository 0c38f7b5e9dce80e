"""Fixtures for the stage tests: one small trained model on real data, shared by the modules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.models import ModelHandle


@dataclass(frozen=True)
class Trained:
    """The digits cnn-s trained briefly, its fp32 ONNX file, the data and the PyTorch model."""

    onnx_path: Path
    data: Dataset
    model: ModelHandle | None = None


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_data("digits")


@pytest.fixture(scope="session")
def cnn_s(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> Trained:
    """zoo:cnn-s trained 8 epochs on digits (about 2 s), exported to fp32 ONNX."""
    import torch

    from edgeopt.export.onnx import export_onnx
    from edgeopt.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is as fast, and robust on shared cores
    try:
        result = train("zoo:cnn-s", digits, TrainConfig(epochs=8))
    finally:
        torch.set_num_threads(threads)
    path = export_onnx(result.model, tmp_path_factory.mktemp("cnn-s") / "fp32.onnx")
    return Trained(path, digits, result.model)
