"""edgeopt: fit trained neural networks to low-power devices, measured on the exported artifact."""

from __future__ import annotations

from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import BudgetError
from edgeopt.errors import EdgeoptError
from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.measure import profile
from edgeopt.metrics import Metrics
from edgeopt.metrics import Violation
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.registry import list_models
from edgeopt.stages.quantize import DynamicConfig
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import QuantizeResult
from edgeopt.stages.quantize import quantize
from edgeopt.target import Estimate
from edgeopt.target import Target
from edgeopt.target import list_targets
from edgeopt.training import TrainResult
from edgeopt.training import save_trained
from edgeopt.training import train

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "Dataset",
    "DynamicConfig",
    "EdgeoptError",
    "Estimate",
    "InputError",
    "Metrics",
    "ModelHandle",
    "PTQConfig",
    "QuantizeResult",
    "Target",
    "TrainConfig",
    "TrainResult",
    "Violation",
    "__version__",
    "export_onnx",
    "list_models",
    "list_targets",
    "load_data",
    "load_model",
    "profile",
    "quantize",
    "save_trained",
    "train",
]
