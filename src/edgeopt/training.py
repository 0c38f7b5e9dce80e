"""Train a PyTorch model on a dataset's train split, deterministically, and evaluate it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

import numpy as np

from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.registry import register_stage

if TYPE_CHECKING:
    from edgeopt.stages._stage import StageContext

#: ``progress(epoch, epochs, step, steps, loss)`` is called after every batch.
ProgressFn = Callable[[int, int, int, int, float], None]
#: ``after_step(step)`` is called after every optimizer step, ``step`` counting from 1.
StepFn = Callable[[int], None]
#: ``batch_loss(outputs, inputs, labels, index)`` replaces the cross-entropy of :func:`fit`: the
#: module's outputs on a batch, the batch's inputs and labels, and the positions of its samples in
#: the train split (to look up per-sample targets, such as a teacher's logits); returns the loss.
BatchLossFn = Callable[[Any, Any, Any, Any], Any]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    val_accuracy: float
    learning_rate: float


@dataclass(frozen=True)
class TrainResult:
    """The trained model and what training saw (PyTorch-side numbers, for the log only)."""

    model: ModelHandle
    config: TrainConfig
    history: tuple[EpochRecord, ...]
    test_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "history": [vars(record) for record in self.history],
            "test_accuracy_pytorch": self.test_accuracy,
        }


class TrainedModel(Protocol):
    """What :func:`save_trained` needs of a result: :class:`TrainResult`, ``DistillResult``."""

    @property
    def model(self) -> ModelHandle: ...

    def to_dict(self) -> dict[str, Any]: ...


def seed_everything(seed: int) -> Any:
    """Seed Python, NumPy and PyTorch and make PyTorch pick deterministic kernels."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def evaluate(module: Any, x: np.ndarray, y: np.ndarray, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of a PyTorch module in eval mode."""
    import torch

    module.eval()
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(x), batch_size):
            logits = module(torch.from_numpy(x[begin : begin + batch_size]))
            correct += int((logits.argmax(1).numpy() == y[begin : begin + batch_size]).sum())
    return correct / max(1, len(x))


def check_classes(handle: ModelHandle, module: Any, data: Dataset) -> None:
    """Refuse a model whose output width differs from the data's class count."""
    import torch

    module.eval()
    with torch.no_grad():
        out = module(torch.zeros((1, *data.input_shape)))
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise InputError(
            f"{handle.spec}: the model outputs {tuple(out.shape[1:])} per sample but "
            f"{data.spec} has {data.num_classes} classes."
        )


def train(
    model: str | ModelHandle,
    data: str | Dataset,
    config: TrainConfig | None = None,
    *,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train on the train split with a fixed seed; pick nothing on the test split.

    Args:
        model: a PyTorch model spec or handle (zoo models take the data's classes and input).
        data: a data spec or dataset.
        config: epochs, batch size, learning rate, seed; defaults to ``TrainConfig()``.
        progress: called after every batch, for progress bars.

    Returns:
        The trained handle, the per-epoch history and the PyTorch test accuracy.

    Raises:
        InputError: an ONNX-only model, or a model whose input or output does not fit the data.

    Example:
        >>> result = train("zoo:cnn-s", "digits", TrainConfig(epochs=1))
        >>> 0.0 <= result.test_accuracy <= 1.0
        True
    """
    import copy

    config = config or TrainConfig()
    dataset = load_data(data)
    handle = load_model(model, data=dataset)
    source = handle.require_torch("training")
    if handle.input_shape is not None and tuple(handle.input_shape) != dataset.input_shape:
        raise InputError(
            f"{handle.spec}: the model takes input {handle.input_shape} but {dataset.spec} "
            f"gives {dataset.input_shape}."
        )
    generator = seed_everything(config.seed)
    module = copy.deepcopy(source)
    try:
        check_classes(handle, module, dataset)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:160]
        raise InputError(f"{handle.spec}: cannot run on {dataset.spec} input ({detail}).") from None
    history = fit(module, dataset, config, generator=generator, progress=progress)
    x_test, y_test = dataset.arrays("test")
    trained = handle.with_module(
        module,
        f"train(epochs={config.epochs}, seed={config.seed})",
        normalization=dataset.normalization.to_dict(),
    )
    return TrainResult(
        model=trained,
        config=config,
        history=history,
        test_accuracy=evaluate(module, x_test, y_test),
    )


def fit(
    module: Any,
    dataset: Dataset,
    config: TrainConfig,
    *,
    generator: Any,
    after_step: StepFn | None = None,
    progress: ProgressFn | None = None,
    batch_loss: BatchLossFn | None = None,
) -> tuple[EpochRecord, ...]:
    """Train ``module`` in place on the train split with Adam and cosine learning-rate decay.

    This is the loop :func:`train` runs; fine-tuning steps (pruning) reuse it with ``after_step``,
    called with the number of optimizer steps taken so far right after each one (to re-apply
    pruning masks, or to prune further on a schedule); distillation reuses it with
    ``batch_loss``. The module is left in eval mode.

    Args:
        module: the PyTorch module, changed in place.
        dataset: its train split is trained on; the validation accuracy is logged per epoch.
        config: epochs, batch size, learning rate, weight decay, label smoothing (the seed is the
            caller's: it made ``generator``).
        generator: the ``torch.Generator`` that shuffles the batches.
        after_step: called as ``after_step(step)`` after every optimizer step (``step`` from 1).
        progress: called after every batch, for progress bars.
        batch_loss: called as ``batch_loss(outputs, inputs, labels, index)`` instead of the
            cross-entropy (with the config's label smoothing) on every batch.

    Returns:
        One record per epoch.
    """
    import torch

    x_train, y_train = (torch.from_numpy(a) for a in dataset.arrays("train"))
    x_val, y_val = dataset.arrays("val")
    steps = math.ceil(len(x_train) / config.batch_size)
    optimizer = torch.optim.Adam(
        module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history = []
    for epoch in range(config.epochs):
        module.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for step in range(steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            inputs, labels = x_train[index], y_train[index]
            if batch_loss is None:
                loss = loss_fn(module(inputs), labels)
            else:
                loss = batch_loss(module(inputs), inputs, labels, index)
            loss.backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step(epoch * steps + step + 1)
            total += float(loss.detach()) * len(index)
            if progress is not None:
                progress(epoch, config.epochs, step, steps, float(loss.detach()))
        history.append(
            EpochRecord(
                epoch=epoch + 1,
                loss=total / len(x_train),
                val_accuracy=evaluate(module, x_val, y_val),
                learning_rate=float(schedule.get_last_lr()[0]),
            )
        )
    module.eval()
    return tuple(history)


@dataclass(frozen=True)
class TrainArtifacts:
    """The files ``save_trained`` wrote, and the test accuracy measured on the ONNX file."""

    onnx_path: Path
    weights_path: Path
    record_path: Path
    onnx_test_accuracy: float


def trained_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """The files :func:`save_trained` writes for ``OUT.onnx``: the model, its weights
    (``OUT.pt``) and its record (``OUT.json``).

    Raises:
        InputError: ``path`` does not end in ``.onnx``.

    Example:
        >>> [p.name for p in trained_paths("runs/m.onnx")]
        ['m.onnx', 'm.pt', 'm.json']
    """
    out = Path(path)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output of train must end in .onnx.")
    return out, out.with_suffix(".pt"), out.with_suffix(".json")


@register_stage(TrainConfig, is_torch_only=True, noun="training")
def apply_train(ctx: StageContext, config: TrainConfig) -> TrainResult:
    """Train the context's PyTorch model from its initial weights (:func:`train`)."""
    assert ctx.dataset is not None
    return train(ctx.handle, ctx.dataset, config, progress=ctx.progress)
