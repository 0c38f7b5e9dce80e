"""``distill(teacher, student, DistillConfig(...))``: train a small student on a teacher's outputs.

Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
Network", https://arxiv.org/abs/1503.02531): the student minimises

    alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

where ``z_t`` and ``z_s`` are the teacher's and the student's logits. The gradients of the soft
term scale as 1 / T^2, so the T^2 factor keeps its weight against the hard term the same at any
temperature (the paper's section 2).

Optionally a FitNets hint (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets",
https://arxiv.org/abs/1412.6550) is added: a 1x1 convolution (the regressor) maps the student's
last feature map to the teacher's feature map of the same spatial size, and ``feature_weight``
times their mean squared difference joins the loss. FitNets trains the hint first and distils
after; here both are trained together, one loop, one schedule.

The teacher's logits on the train split are computed once before training: there is no data
augmentation, so they never change. A PyTorch teacher runs in PyTorch, an ONNX teacher with ONNX
Runtime. Several teachers are an ensemble: their mean logits are the soft targets, which is how
Hinton et al. distil an ensemble into one deployable model (on Fashion-MNIST, an ensemble of three
models taught LeNet-5 1.6 times what the best single one did; BENCHMARKS.md). The
training loop is :func:`edgeopt.training.fit` with its ``batch_loss`` hook.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any
from typing import ClassVar

import numpy as np

from edgeopt.config import Config
from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.models import bind_data
from edgeopt.models import load_model
from edgeopt.registry import register_stage
from edgeopt.stages._stage import StageContext
from edgeopt.training import EpochRecord
from edgeopt.training import ProgressFn
from edgeopt.training import check_classes
from edgeopt.training import evaluate
from edgeopt.training import fit
from edgeopt.training import seed_everything

__all__ = [
    "DistillConfig",
    "DistillResult",
    "FeaturePair",
    "distill",
    "distillation_loss",
    "feature_maps",
    "load_teachers",
]

#: Layers whose output is not a feature of their own: skipped when picking the hint layers.
_PASS_THROUGH = ("Dropout", "Dropout2d", "Identity", "Flatten")


@dataclass(frozen=True)
class DistillConfig(Config):
    """Knowledge distillation: soft-target loss, optional feature hint, Adam with cosine decay.

    Fields: ``temperature`` (T, softens both softmaxes; Hinton et al. used 1-20, 4 is a common
    middle), ``alpha`` (weight of the soft term; ``1 - alpha`` weighs cross-entropy on the labels),
    ``feature_weight`` (weight of the FitNets hint loss; 0 turns it off), and the training fields
    of :class:`edgeopt.config.TrainConfig` (``epochs``, ``batch_size``, ``learning_rate``,
    ``weight_decay``, ``seed``).
    """

    kind: ClassVar[str] = "distill"
    temperature: float = 4.0
    alpha: float = 0.9
    feature_weight: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise InputError(f"distill: temperature must be above 0, got {self.temperature}.")
        if not 0 <= self.alpha <= 1:
            raise InputError(f"distill: alpha must be in [0, 1], got {self.alpha}.")
        if not self.feature_weight >= 0:
            raise InputError(
                f"distill: feature_weight must be 0 or more, got {self.feature_weight}."
            )
        if self.epochs < 1:
            raise InputError(f"distill: epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise InputError(f"distill: batch_size must be at least 1, got {self.batch_size}.")
        if not self.learning_rate > 0:
            raise InputError(f"distill: learning_rate must be above 0, got {self.learning_rate}.")
        if not self.weight_decay >= 0:
            raise InputError(f"distill: weight_decay must be 0 or more, got {self.weight_decay}.")

    def train_config(self) -> TrainConfig:
        """The training-loop settings (the same loop and defaults as ``train``)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )

    def describe(self, teacher: str) -> str:
        """One line for the student's history."""
        hint = f", feature_weight={self.feature_weight:g}" if self.feature_weight else ""
        return (
            f"distill(teacher={teacher}, T={self.temperature:g}, alpha={self.alpha:g}{hint}, "
            f"epochs={self.epochs}, seed={self.seed})"
        )


@dataclass(frozen=True)
class FeaturePair:
    """The student and teacher layers the hint loss ties together, with their output shapes."""

    student_layer: str
    teacher_layer: str
    student_shape: tuple[int, ...]  # (C, H, W), no batch
    teacher_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "student_layer": self.student_layer,
            "teacher_layer": self.teacher_layer,
            "student_shape": list(self.student_shape),
            "teacher_shape": list(self.teacher_shape),
            "adapter": f"conv1x1 {self.student_shape[0]}->{self.teacher_shape[0]}",
        }


@dataclass(frozen=True)
class DistillResult:
    """The distilled student and what training saw (PyTorch-side numbers, for the log only)."""

    model: ModelHandle
    config: DistillConfig
    history: tuple[EpochRecord, ...]
    test_accuracy: float
    teacher: str
    teacher_test_accuracy: float
    teacher_runtime: str  # "pytorch" | "onnxruntime" | "onnxruntime+pytorch" (an ensemble)
    feature_pair: FeaturePair | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "history": [vars(record) for record in self.history],
            "test_accuracy_pytorch": self.test_accuracy,
            "teacher": {
                "spec": self.teacher,
                "runtime": self.teacher_runtime,
                "test_accuracy": self.teacher_test_accuracy,
            },
            "feature_pair": self.feature_pair.to_dict() if self.feature_pair else None,
            "notes": list(self.notes),
        }


def distillation_loss(
    student_logits: Any,
    teacher_logits: Any,
    labels: Any,
    *,
    temperature: float,
    alpha: float,
) -> Any:
    """Hinton et al.'s loss: ``alpha T^2 KL(p_t^T || p_s^T) + (1 - alpha) CE(z_s, y)``.

    The KL divergence is averaged over the batch (``batchmean``), as the cross-entropy is.

    Args:
        student_logits: (N, K) student logits (a tensor with gradients).
        teacher_logits: (N, K) teacher logits.
        labels: (N,) integer labels.
        temperature: T, dividing both sets of logits before the softmax.
        alpha: weight of the soft term.

    Returns:
        The scalar loss tensor.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> loss = distillation_loss(z, z, torch.tensor([0]), temperature=4.0, alpha=1.0)
        >>> float(loss)
        0.0
    """
    import torch.nn.functional as functional

    log_student = functional.log_softmax(student_logits / temperature, dim=1)
    log_teacher = functional.log_softmax(teacher_logits / temperature, dim=1)
    soft = functional.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    hard = functional.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def feature_maps(module: Any, input_shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """Leaf layers with a spatial (N, C, H, W) output, in the order a forward pass calls them.

    Pass-through layers (dropout, identity) are left out; a layer called twice is listed where
    it was called last.

    Example:
        >>> from edgeopt.models import load_model
        >>> feature_maps(load_model("zoo:lenet5").module, (1, 28, 28))[-1]
        ('5', (16, 5, 5))
    """
    import torch

    calls: dict[str, tuple[int, ...]] = {}
    handles = []

    def recorder(name: str) -> Any:
        def hook(_: Any, __: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                calls.pop(name, None)  # re-insert: the dict keeps the order of last calls
                calls[name] = tuple(int(d) for d in output.shape[1:])

        return hook

    for name, layer in module.named_modules():
        if name and not any(True for _ in layer.children()):
            if type(layer).__name__ not in _PASS_THROUGH:
                handles.append(layer.register_forward_hook(recorder(name)))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return list(calls.items())


def _pick_pair(
    student: Any, teacher: Any, input_shape: tuple[int, ...]
) -> tuple[FeaturePair | None, str]:
    """The student's last spatial feature map and the teacher's last one of the same H x W."""
    student_maps = [(n, s) for n, s in feature_maps(student, input_shape) if s[1] * s[2] > 1]
    if not student_maps:
        return None, "feature loss skipped: the student has no spatial feature map"
    student_name, student_shape = student_maps[-1]
    matches = [
        (name, shape)
        for name, shape in feature_maps(teacher, input_shape)
        if shape[1:] == student_shape[1:]
    ]
    if not matches:
        size = "x".join(map(str, student_shape[1:]))
        return None, f"feature loss skipped: no teacher feature map is {size} like the student's"
    teacher_name, teacher_shape = matches[-1]
    pair = FeaturePair(student_name, teacher_name, student_shape, teacher_shape)
    return pair, (
        f"feature loss: student {student_name} {student_shape} -> conv1x1 -> teacher "
        f"{teacher_name} {teacher_shape}"
    )


def _teacher_logits(teacher: ModelHandle, x: np.ndarray, *, where: str) -> np.ndarray:
    """The teacher's logits on ``x``: PyTorch for a module, ONNX Runtime for a file."""
    if teacher.module is not None:
        import torch

        module = teacher.module.eval()
        outputs = []
        try:
            with torch.no_grad():
                for begin in range(0, len(x), 512):
                    outputs.append(module(torch.from_numpy(x[begin : begin + 512])).numpy())
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:160]
            raise InputError(f"{teacher.spec}: cannot run on {where} input ({detail}).") from None
        logits = np.concatenate(outputs)
    else:
        from edgeopt.measure.int8 import make_exact_session
        from edgeopt.measure.runtime import predict

        assert teacher.onnx_path is not None
        # An int8 teacher teaches with the integers a device computes, on any host.
        session = make_exact_session(teacher.onnx_path, threads=1)
        try:
            logits = predict(session, x)
        except Exception as exc:  # onnxruntime raises its own exception types
            detail = " ".join(str(exc).split())[:160]
            raise InputError(f"{teacher.spec}: cannot run on {where} input ({detail}).") from None
    if logits.ndim != 2:
        raise InputError(
            f"{teacher.spec}: the teacher outputs {logits.shape[1:]} per sample, not class logits."
        )
    return logits.astype(np.float32)


def _ensemble_logits(teachers: list[ModelHandle], x: np.ndarray, *, where: str) -> np.ndarray:
    """The mean of the teachers' logits (one teacher: its logits)."""
    total = _teacher_logits(teachers[0], x, where=where)
    for teacher in teachers[1:]:
        total = total + _teacher_logits(teacher, x, where=where)
    return (total / len(teachers)).astype(np.float32)


def _check_teacher_normalization(teacher: ModelHandle, dataset: Dataset) -> None:
    """Refuse an ONNX teacher whose recorded input normalization differs from the data's."""
    raw = teacher.metadata.get("edgeopt.normalization")
    if raw is None:
        return
    recorded = json.loads(raw)
    ours = dataset.normalization
    same = len(recorded["mean"]) == len(ours.mean) and np.allclose(
        recorded["mean"], ours.mean, rtol=1e-4
    )
    same = same and np.allclose(recorded["std"], ours.std, rtol=1e-4)
    if not same:
        raise InputError(
            f"{teacher.spec}: the teacher was trained on inputs normalized with mean "
            f"{recorded['mean']} and std {recorded['std']}, but {dataset.spec} gives mean "
            f"{list(ours.mean)} and std {list(ours.std)}."
        )


def _with_adapter(student: Any, adapter: Any) -> Any:
    """A module whose forward is the student's and whose parameters include the adapter's."""
    from torch import nn

    class StudentWithAdapter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = student
            self.adapter = adapter

        def forward(self, x: Any) -> Any:
            return self.student(x)

    return StudentWithAdapter()


def load_teachers(
    specs: Sequence[str | Path],
    *,
    weights: Sequence[str | Path] = (),
    data: Dataset | None = None,
) -> list[ModelHandle]:
    """Load the teachers of :func:`distill`, each with its state dict where weights are given.

    Args:
        specs: one model spec per teacher (an ensemble when several).
        weights: a state dict per teacher, in the order of ``specs``, or none at all.
        data: the dataset, whose classes and input zoo teachers take.

    Returns:
        The teachers' handles, in the order of ``specs``.

    Raises:
        InputError: weights given, but not one per teacher; or a spec :func:`load_model`
            refuses.

    Example:
        >>> [t.spec for t in load_teachers(["zoo:cnn-s", "zoo:lenet5"])]
        ['zoo:cnn-s', 'zoo:lenet5']
    """
    if weights and len(weights) != len(specs):
        raise InputError(
            f"--teacher-weights: give one per --teacher ({len(specs)}), or none; got "
            f"{len(weights)}."
        )
    return [
        load_model(spec, weights=weights[i] if weights else None, data=data)
        for i, spec in enumerate(specs)
    ]


def distill(  # noqa: C901  (the public verb checks each teacher and the student before any training)
    teacher: str | ModelHandle | Sequence[str | ModelHandle],
    student: str | ModelHandle,
    config: DistillConfig | None = None,
    *,
    data: str | Dataset,
    progress: ProgressFn | None = None,
) -> DistillResult:
    """Train ``student`` on the train split to match ``teacher``'s softened outputs.

    Args:
        teacher: a trained PyTorch model (spec or handle) or an ONNX file; or several, an
            ensemble whose mean logits are the soft targets (Hinton et al. 2015, section 3:
            distilling an ensemble into one small model).
        student: a PyTorch model spec or handle (zoo models take the data's classes and input).
        config: temperature, alpha, feature weight and training settings; defaults to
            ``DistillConfig()``.
        data: the data spec or dataset (teacher and student take its input).
        progress: called after every batch, for progress bars.

    Returns:
        The trained student's handle, the per-epoch history, the PyTorch test accuracy of the
        student and of the teacher, the feature layers paired (if any) and notes.

    Raises:
        InputError: an ONNX student, teacher and student with different class counts, a model
            whose input or output does not fit the data, an ONNX teacher normalized unlike the
            data, or a feature loss asked of an ONNX teacher or of an ensemble.

    Example:
        >>> from edgeopt.training import train
        >>> teacher = train("zoo:cnn-s", "digits", TrainConfig(epochs=2)).model
        >>> result = distill(teacher, "zoo:cnn-s?width=0.5", DistillConfig(epochs=1), data="digits")
        >>> result.model.history[-1].startswith("distill(")
        True
    """
    import torch
    import torch.nn.functional as functional

    config = config or DistillConfig()
    dataset = load_data(data)
    student_handle = load_model(student, data=dataset)
    source = student_handle.require_torch("distillation")
    given = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if not given:
        raise InputError("distill: give at least one teacher.")
    teachers = [load_model(one, data=dataset) for one in given]
    dataset = bind_data(teachers[0], dataset)  # the student learns from what the teacher is fed
    for handle in (student_handle, *teachers):
        if handle.input_shape is not None and tuple(handle.input_shape) != dataset.input_shape:
            raise InputError(
                f"{handle.spec}: the model takes input {handle.input_shape} but {dataset.spec} "
                f"gives {dataset.input_shape}."
            )
    if config.feature_weight > 0 and (len(teachers) > 1 or teachers[0].module is None):
        what = "an ensemble has no one set" if len(teachers) > 1 else "so give a PyTorch teacher"
        raise InputError(
            f"{' + '.join(t.spec for t in teachers)}: the feature loss needs the teacher's "
            f"feature maps ({what}); set feature_weight to 0."
        )
    for index, handle in enumerate(teachers):
        if handle.module is not None:
            # A copy: hooks and eval mode must not touch the caller's module.
            teachers[index] = replace(handle, module=copy.deepcopy(handle.module))
        else:
            _check_teacher_normalization(handle, dataset)
    teacher_spec = " + ".join(t.spec for t in teachers)
    x_train, _ = dataset.arrays("train")
    first = [_teacher_logits(t, x_train[:1], where=dataset.spec).shape[1] for t in teachers]
    if len(set(first)) > 1:
        counts = ", ".join(f"{t.spec} {n}" for t, n in zip(teachers, first, strict=True))
        raise InputError(f"the teachers predict different class counts ({counts}).")
    teacher_classes = first[0]
    module = copy.deepcopy(source).eval()
    try:
        with torch.no_grad():
            student_out = module(torch.zeros((1, *dataset.input_shape)))
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:160]
        raise InputError(
            f"{student_handle.spec}: cannot run on {dataset.spec} input ({detail})."
        ) from None
    if student_out.ndim == 2 and student_out.shape[1] != teacher_classes:
        raise InputError(
            f"teacher {teacher_spec} predicts {teacher_classes} classes but student "
            f"{student_handle.spec} predicts {student_out.shape[1]}; they must match."
        )
    check_classes(student_handle, module, dataset)

    generator = seed_everything(config.seed)
    soft_targets = torch.from_numpy(_ensemble_logits(teachers, x_train, where=dataset.spec))
    runtimes = sorted({"PyTorch" if t.module is not None else "ONNX Runtime" for t in teachers})
    notes = [
        f"teacher logits on the {len(x_train)} train samples computed once with "
        + " and ".join(runtimes)
    ]
    if len(teachers) > 1:
        notes.append(f"an ensemble of {len(teachers)} teachers: the soft targets are mean logits")
    pair = None
    captured: dict[str, Any] = {}
    hooks = []
    trainee = module
    teacher_module = teachers[0].module if len(teachers) == 1 else None
    if config.feature_weight > 0 and teacher_module is not None:
        pair, note = _pick_pair(module, teacher_module, dataset.input_shape)
        notes.append(note)
    adapter = None
    if pair is not None and teacher_module is not None:
        adapter = torch.nn.Conv2d(pair.student_shape[0], pair.teacher_shape[0], 1)
        trainee = _with_adapter(module, adapter)
        for key, owner, name in (
            ("student", module, pair.student_layer),
            ("teacher", teacher_module, pair.teacher_layer),
        ):

            def keep(_: Any, __: Any, output: Any, key: str = key) -> None:
                captured[key] = output

            hooks.append(owner.get_submodule(name).register_forward_hook(keep))
        teacher_module.eval()

    def batch_loss(outputs: Any, inputs: Any, labels: Any, index: Any) -> Any:
        loss = distillation_loss(
            outputs,
            soft_targets[index],
            labels,
            temperature=config.temperature,
            alpha=config.alpha,
        )
        if adapter is not None and teacher_module is not None:
            with torch.no_grad():
                teacher_module(inputs)
            hint = functional.mse_loss(adapter(captured["student"]), captured["teacher"])
            loss = loss + config.feature_weight * hint
        return loss

    try:
        history = fit(
            trainee,
            dataset,
            config.train_config(),
            generator=generator,
            progress=progress,
            batch_loss=batch_loss,
        )
    finally:
        for hook in hooks:
            hook.remove()
    x_test, y_test = dataset.arrays("test")
    teacher_test_logits = _ensemble_logits(teachers, x_test, where=dataset.spec)
    return DistillResult(
        model=student_handle.with_module(
            module, config.describe(teacher_spec), normalization=dataset.normalization.to_dict()
        ),
        config=config,
        history=history,
        test_accuracy=evaluate(module, x_test, y_test),
        teacher=teacher_spec,
        teacher_test_accuracy=float(np.mean(teacher_test_logits.argmax(1) == y_test)),
        teacher_runtime="+".join(
            sorted({"pytorch" if t.module is not None else "onnxruntime" for t in teachers})
        ),
        feature_pair=pair,
        notes=tuple(notes),
    )


@register_stage(DistillConfig)
def apply_distill(ctx: StageContext, config: DistillConfig) -> DistillResult:
    """Train the step's student on the context's model as teacher (:func:`distill`)."""
    assert ctx.dataset is not None and ctx.student is not None
    return distill(ctx.handle, ctx.student, config, data=ctx.dataset, progress=ctx.progress)
