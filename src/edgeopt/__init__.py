"""edgeopt: fit trained neural networks to low-power devices, measured on the exported artifact."""

from __future__ import annotations

from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import BudgetError
from edgeopt.errors import EdgeoptError
from edgeopt.errors import InputError
from edgeopt.export.compressed import CompressionReport
from edgeopt.export.compressed import compress_onnx
from edgeopt.export.compressed import decompress
from edgeopt.export.fold import FoldResult
from edgeopt.export.fold import fold_preprocessing
from edgeopt.export.onnx import export_onnx
from edgeopt.export.tflite import TFLiteExport
from edgeopt.export.tflite import write_tflite
from edgeopt.export.uint8 import Uint8Result
from edgeopt.export.uint8 import write_uint8
from edgeopt.measure import profile
from edgeopt.measure.bench import BenchConfig
from edgeopt.measure.bench import BenchReport
from edgeopt.measure.bench import bench
from edgeopt.measure.int8 import HostInt8
from edgeopt.measure.int8 import Int8Arithmetic
from edgeopt.measure.int8 import host_int8
from edgeopt.measure.int8 import make_exact_session
from edgeopt.metrics import Metrics
from edgeopt.metrics import Violation
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.pipeline import Compression
from edgeopt.pipeline import Result
from edgeopt.pipeline import Step
from edgeopt.pipeline import run
from edgeopt.pipeline import save_trained
from edgeopt.registry import list_models
from edgeopt.search import OptimizeConfig
from edgeopt.search import OptimizeResult
from edgeopt.search import Recipe
from edgeopt.search import apply_recipe
from edgeopt.search import optimize
from edgeopt.stages.distill import DistillConfig
from edgeopt.stages.distill import DistillResult
from edgeopt.stages.distill import distill
from edgeopt.stages.prune import PruneConfig
from edgeopt.stages.prune import PruneResult
from edgeopt.stages.prune import prune
from edgeopt.stages.prune.sensitivity import SensitivityTable
from edgeopt.stages.prune.sensitivity import sensitivity
from edgeopt.stages.quantize import DynamicConfig
from edgeopt.stages.quantize import MixedPrecisionConfig
from edgeopt.stages.quantize import PTQConfig
from edgeopt.stages.quantize import QATConfig
from edgeopt.stages.quantize import QuantizeResult
from edgeopt.stages.quantize import quantize
from edgeopt.target import Estimate
from edgeopt.target import Target
from edgeopt.target import list_targets
from edgeopt.training import TrainResult
from edgeopt.training import train

__version__ = "0.1.0"

__all__ = [
    "BenchConfig",
    "BenchReport",
    "BudgetError",
    "Compression",
    "CompressionReport",
    "Dataset",
    "DistillConfig",
    "DistillResult",
    "DynamicConfig",
    "EdgeoptError",
    "FoldResult",
    "Estimate",
    "HostInt8",
    "Int8Arithmetic",
    "InputError",
    "Metrics",
    "MixedPrecisionConfig",
    "ModelHandle",
    "OptimizeConfig",
    "OptimizeResult",
    "PTQConfig",
    "PruneConfig",
    "PruneResult",
    "QATConfig",
    "QuantizeResult",
    "Recipe",
    "Result",
    "SensitivityTable",
    "Step",
    "TFLiteExport",
    "Target",
    "TrainConfig",
    "TrainResult",
    "Uint8Result",
    "Violation",
    "__version__",
    "bench",
    "apply_recipe",
    "compress_onnx",
    "decompress",
    "distill",
    "export_onnx",
    "fold_preprocessing",
    "host_int8",
    "list_models",
    "list_targets",
    "load_data",
    "load_model",
    "make_exact_session",
    "optimize",
    "profile",
    "prune",
    "quantize",
    "run",
    "save_trained",
    "sensitivity",
    "train",
    "write_tflite",
    "write_uint8",
]
