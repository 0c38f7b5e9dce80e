"""What a registered stage receives and returns (see :func:`edgeopt.registry.register_stage`).

A stage is one function, ``apply(ctx, config)``: the verbs (``quantize``, ``prune``,
``distill``), recipe replay and every search trial call it through the registry, so a new
technique is its config, that function and its registration, in one file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    import numpy as np

    from edgeopt.config import Config
    from edgeopt.data import Dataset
    from edgeopt.models import ModelHandle
    from edgeopt.training import EpochRecord
    from edgeopt.training import ProgressFn

__all__ = [
    "ChoiceContext",
    "Deferred",
    "QuantizeOutput",
    "StageContext",
    "check_input_shape",
    "load_fp32",
]


@dataclass(frozen=True)
class StageContext:
    """The inputs of one stage: the model, the data, a scratch folder that is removed after
    the stage, and, where they apply, the progress callback, the student's spec
    (distillation), the calibration inputs and the fp32 file (quantization) and ``stamp``,
    which writes the model's history into an ONNX model before a size is measured."""

    handle: ModelHandle
    dataset: Dataset | None
    scratch: Path
    progress: ProgressFn | None = None
    student: str | None = None
    calibration: np.ndarray | None = None
    fp32: Any = None
    stamp: Callable[[Any, list[str]], None] | None = None


@dataclass(frozen=True)
class QuantizeOutput:
    """What a quantization stage made: the quantized ONNX model (not yet written), the nodes
    left in float, the activation ranges, the fp32 file it started from, and what QAT
    (PyTorch accuracy, history) or mixed precision (its plan) add."""

    quantized: Any
    float_nodes: list[str]
    ranges: dict[str, Any] = field(default_factory=dict)
    fp32_path: Path | None = None
    qat_accuracy: float | None = None
    history: tuple[EpochRecord, ...] = ()
    plan: Any = None


@dataclass(frozen=True)
class ChoiceContext:
    """What a search choice builds its config from: the Optuna trial (to ask for its own
    parameters), the search's seed and its fine-tuning epochs, and ``ptq_bytes(handle,
    dataset, bits, scratch)``, the size of the model's PTQ file with ``bits``-bit weights
    written as the search writes a candidate (mixed precision's budget is a fraction of it).
    The search passes ``ptq_bytes`` in (:func:`edgeopt.search.space.ptq_bytes`): writing a
    candidate is the pipeline's, a layer above the stages.

    ``is_torch``: whether the trial's model is a PyTorch module (a PyTorch baseline or a
    distilled student). Without one the search can only quantize after training, so a
    post-training choice searches its own settings too (PTQ's calibrator, per-channel scales,
    CLE, bias correction) instead of offering a handful of recipes that trials would repeat.
    """

    trial: Any
    seed: int
    finetune_epochs: int
    ptq_bytes: Callable[[ModelHandle, Dataset, int, Path], int] | None = None
    is_torch: bool = True


@dataclass(frozen=True)
class Deferred:
    """A config that can only be made once the model exists (mixed precision's flash budget is
    a fraction of the model's own int8 file): ``build(handle, dataset, scratch) -> Config``."""

    build: Callable[[ModelHandle, Dataset, Path], Config]


#: operators only a quantized graph has
_QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
    }
)


def load_fp32(handle: ModelHandle, dataset: Dataset | None, scratch: Path) -> tuple[Any, Path]:
    """The fp32 ONNX model a post-training stage starts from, and its file: an ONNX model as
    it is (never modified), a PyTorch model exported into ``scratch``.

    A file that is already quantized (QDQ pairs, QLinear or integer operators: an
    ``edgeopt quantize`` output, an imported int8 ``.tflite``) is refused: quantizing it again
    would calibrate quantized values and stack a second rounding on the first.

    Raises:
        InputError: the model's input shape is not the data's, or it is already quantized.
    """
    import onnx

    from edgeopt.errors import InputError
    from edgeopt.models import onnx_input_shape
    from edgeopt.models import read_onnx

    if handle.onnx_path is not None:
        fp32, path = read_onnx(handle.onnx_path), handle.onnx_path
        quantized = [n for n in fp32.graph.node if n.op_type in _QUANTIZED_OPS]
        if quantized:
            kinds = ", ".join(sorted({n.op_type for n in quantized}))
            raise InputError(
                f"{handle.spec}: is already quantized ({len(quantized)} {kinds} node(s)); "
                "quantize its float source (the fp32 .onnx, or the PyTorch model with --weights) "
                "instead."
            )
    else:
        from edgeopt.export.onnx import export_onnx

        path = export_onnx(handle, scratch / f"{handle.name}.onnx")
        fp32 = onnx.load(str(path), load_external_data=True)
    check_input_shape(handle.spec, onnx_input_shape(fp32), dataset)
    return fp32, path


def check_input_shape(spec: str, shape: Any, dataset: Dataset | None) -> None:
    """Refuse a model whose input shape (without the batch; None: not fixed) is not the data's.

    Raises:
        InputError: naming the model, both shapes and the data.
    """
    from edgeopt.errors import InputError

    if dataset is not None and shape is not None and tuple(shape) != dataset.input_shape:
        want, got = "x".join(map(str, shape)), "x".join(map(str, dataset.input_shape))
        raise InputError(f"{spec}: the model takes input {want} but {dataset.spec} gives {got}.")
