"""Knowledge distillation: the loss by hand, T^2 scaling, ONNX teachers, hints, bad input, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clitools import run_cli
from edgeopt.config import TrainConfig
from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.stages.distill import DistillConfig
from edgeopt.stages.distill import _ensemble_logits
from edgeopt.stages.distill import _teacher_logits
from edgeopt.stages.distill import distill
from edgeopt.stages.distill import distillation_loss
from edgeopt.stages.distill import feature_maps
from edgeopt.stages.distill import load_teachers
from edgeopt.training import train


@pytest.fixture(scope="module")
def teacher() -> ModelHandle:
    """cnn-s at twice the width, trained on digits (about 97% test accuracy)."""
    return train("zoo:cnn-s?width=2", "digits", TrainConfig(epochs=5, seed=1)).model


@pytest.fixture(scope="module")
def onnx_teacher(teacher: ModelHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(teacher, tmp_path_factory.mktemp("teacher") / "teacher.onnx")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_loss_equals_a_hand_computation() -> None:
    student = np.array([[1.0, -0.5, 2.0], [0.3, 0.2, -1.0]])
    teacher = np.array([[2.0, 0.0, 1.0], [-1.0, 1.5, 0.5]])
    labels = np.array([2, 1])
    t, alpha = 3.0, 0.7
    p_t, p_s = _softmax(teacher / t), _softmax(student / t)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s))) / len(labels)
    ce = -np.mean(np.log(_softmax(student)[np.arange(2), labels]))
    want = alpha * t * t * kl + (1 - alpha) * ce
    got = distillation_loss(
        torch.tensor(student),
        torch.tensor(teacher),
        torch.tensor(labels),
        temperature=t,
        alpha=alpha,
    )
    assert float(got) == pytest.approx(want, rel=1e-9)


def test_soft_term_gradient_does_not_shrink_with_temperature() -> None:
    # Hinton et al. sec. 2.1: with zero-mean logits and a high T the gradient of the soft term
    # tends to (z_s - z_t) / (K T^2); the T^2 factor makes it (z_s - z_t) / K at any high T.
    student = torch.tensor([[1.0, -2.0, 0.5, 0.5]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0, -1.5, 0.5]])
    expected = (student.detach() - teacher) / 4
    gaps = []
    for temperature in (10.0, 100.0):
        student.grad = None
        loss = distillation_loss(
            student, teacher, torch.tensor([0]), temperature=temperature, alpha=1.0
        )
        loss.backward()
        assert student.grad is not None
        gaps.append(float((student.grad - expected).abs().max()))
    # The approximation error is of order z / T: it shrinks tenfold, the gradient does not.
    assert gaps[1] < 0.005 < gaps[0] < 0.05


def test_distilled_student_is_not_worse_than_the_student_alone(teacher: ModelHandle) -> None:
    alone = train("zoo:cnn-s?width=0.5", "digits", TrainConfig(epochs=4))
    distilled = distill(teacher, "zoo:cnn-s?width=0.5", DistillConfig(epochs=4), data="digits")
    assert distilled.teacher_test_accuracy > 0.9
    assert distilled.test_accuracy >= alone.test_accuracy - 0.03
    assert distilled.model.history[-1].startswith("distill(teacher=zoo:cnn-s?width=2, T=4,")
    assert distilled.teacher_runtime == "pytorch"


def test_onnx_teacher_soft_targets_match_pytorch(teacher: ModelHandle, onnx_teacher: Path) -> None:
    from edgeopt.data import load_data

    x = load_data("digits").arrays("train")[0][:300]
    from_torch = _teacher_logits(teacher, x, where="digits")
    from_onnx = _teacher_logits(load_model(str(onnx_teacher)), x, where="digits")
    np.testing.assert_allclose(from_onnx, from_torch, atol=1e-4, rtol=0)


def test_onnx_teacher_distils_with_onnx_runtime(onnx_teacher: Path) -> None:
    result = distill(
        str(onnx_teacher), "zoo:cnn-s?width=0.5", DistillConfig(epochs=2), data="digits"
    )
    assert result.teacher_runtime == "onnxruntime"
    assert result.teacher_test_accuracy > 0.9
    assert result.test_accuracy > 0.5
    assert "ONNX Runtime" in result.notes[0]


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another architecture, another seed, as an ONNX file: the second member of an ensemble."""
    trained = train("zoo:lenet300", "digits", TrainConfig(epochs=4, seed=2)).model
    return export_onnx(trained, tmp_path_factory.mktemp("second") / "mlp.onnx")


def test_an_ensemble_teaches_with_its_mean_logits(
    teacher: ModelHandle, second_teacher: Path
) -> None:
    from edgeopt.data import load_data

    data = load_data("digits")
    members = [teacher, load_model(str(second_teacher))]
    x_test, y_test = data.arrays("test")
    mean = (
        _teacher_logits(members[0], x_test, where="digits")
        + _teacher_logits(members[1], x_test, where="digits")
    ) / 2
    np.testing.assert_allclose(_ensemble_logits(members, x_test, where="digits"), mean, atol=1e-6)
    result = distill(
        [teacher, str(second_teacher)], "zoo:cnn-s?width=0.5", DistillConfig(epochs=5), data=data
    )
    assert result.teacher_test_accuracy == pytest.approx(np.mean(mean.argmax(1) == y_test))
    assert result.teacher == f"zoo:cnn-s?width=2 + {second_teacher}"
    assert result.teacher_runtime == "onnxruntime+pytorch"
    assert any("ensemble of 2 teachers" in note for note in result.notes)
    assert result.test_accuracy > 0.5


def test_feature_loss_is_refused_for_an_ensemble(
    teacher: ModelHandle, second_teacher: Path
) -> None:
    with pytest.raises(InputError, match="an ensemble has no one set"):
        distill(
            [teacher, str(second_teacher)],
            "zoo:cnn-s?width=0.5",
            DistillConfig(epochs=1, feature_weight=1.0),
            data="digits",
        )


def test_teacher_and_student_class_counts_must_match(teacher: ModelHandle) -> None:
    with pytest.raises(InputError, match="predicts 10 classes but student .* predicts 5"):
        distill(teacher, "zoo:cnn-s?classes=5", DistillConfig(epochs=1), data="digits")


def test_onnx_student_is_refused(onnx_teacher: Path) -> None:
    with pytest.raises(InputError, match="distillation needs a PyTorch model"):
        distill(str(onnx_teacher), str(onnx_teacher), DistillConfig(epochs=1), data="digits")


def test_feature_loss_needs_a_pytorch_teacher(onnx_teacher: Path) -> None:
    with pytest.raises(InputError, match="feature loss needs the teacher's feature maps"):
        distill(
            str(onnx_teacher),
            "zoo:cnn-s?width=0.5",
            DistillConfig(epochs=1, feature_weight=1.0),
            data="digits",
        )


def test_feature_loss_pairs_the_last_maps_through_a_1x1_adapter(teacher: ModelHandle) -> None:
    result = distill(
        teacher,
        "zoo:cnn-s?width=0.5",
        DistillConfig(epochs=1, feature_weight=1.0),
        data="digits",
    )
    pair = result.feature_pair
    assert pair is not None
    # cnn-s: conv16-conv32-pool-conv32; at width 0.5 the last map is 16x4x4, at width 2 64x4x4.
    assert pair.student_shape == (16, 4, 4) and pair.teacher_shape == (64, 4, 4)
    assert pair.to_dict()["adapter"] == "conv1x1 16->64"
    assert not any("adapter" in name for name in result.model.module.state_dict())


def test_feature_loss_is_skipped_with_a_note_when_no_shapes_match(teacher: ModelHandle) -> None:
    result = distill(
        teacher,
        "zoo:lenet300?width=0.25",
        DistillConfig(epochs=1, feature_weight=1.0),
        data="digits",
    )
    assert result.feature_pair is None
    assert any(
        "feature loss skipped: the student has no spatial feature map" in n for n in result.notes
    )


def test_feature_maps_lists_spatial_outputs_in_call_order() -> None:
    maps = feature_maps(load_model("zoo:lenet5").module, (1, 28, 28))
    assert [shape for _, shape in maps] == [
        (6, 28, 28),
        (6, 28, 28),
        (6, 14, 14),
        (16, 10, 10),
        (16, 10, 10),
        (16, 5, 5),
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 0.0), ("alpha", 1.5), ("feature_weight", -1.0), ("epochs", 0)],
)
def test_bad_config_is_one_sentence_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(InputError, match=f"distill: {field} must"):
        DistillConfig(**{field: value})


def test_config_round_trips() -> None:
    config = DistillConfig(temperature=2.0, alpha=0.5, feature_weight=0.1, epochs=3, seed=7)
    assert DistillConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["kind"] == "distill"


def test_cli_distill_writes_onnx_weights_and_record(
    onnx_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student.onnx"
    args = ["distill", "--teacher", str(onnx_teacher), "--student", "zoo:cnn-s?width=0.5"]
    code, stdout, err = run_cli([*args, "--epochs", "1", "-o", str(out)], capsys)
    assert code == 0, err
    assert out.is_file() and out.with_suffix(".pt").is_file() and out.with_suffix(".json").is_file()
    assert "teacher" in stdout and "ONNX file" in stdout


def test_cli_distill_class_mismatch_is_exit_2_and_writes_nothing(
    onnx_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student.onnx"
    args = ["distill", "--teacher", str(onnx_teacher), "--student", "zoo:cnn-s?classes=3"]
    code, _, err = run_cli([*args, "--epochs", "1", "-o", str(out)], capsys)
    assert code == 2
    assert "predicts 10 classes but student zoo:cnn-s?classes=3 predicts 3" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert list(tmp_path.iterdir()) == []


def test_cli_distill_from_two_teachers(
    onnx_teacher: Path, second_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student.onnx"
    args = ["distill", "--teacher", str(onnx_teacher), "--teacher", str(second_teacher)]
    args += ["--student", "zoo:cnn-s?width=0.5", "--epochs", "1", "-o", str(out)]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "an ensemble of 2 teachers" in stdout and out.is_file()


def test_cli_teacher_weights_must_match_the_teachers(
    onnx_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "w.pt"
    args = ["distill", "--teacher", "zoo:cnn-s", "--teacher", str(onnx_teacher)]
    args += ["--teacher-weights", str(weights), "--student", "zoo:cnn-s?width=0.5"]
    code, _, err = run_cli([*args, "-o", str(tmp_path / "s.onnx")], capsys)
    assert code == 2 and "give one per --teacher (2), or none; got 1" in err
    assert list(tmp_path.iterdir()) == []


def test_teacher_weights_must_be_one_per_teacher() -> None:
    with pytest.raises(InputError, match=r"give one per --teacher \(2\), or none; got 1\."):
        load_teachers(["zoo:cnn-s", "zoo:lenet5"], weights=[Path("w.pt")])
    assert [t.spec for t in load_teachers(["zoo:cnn-s"])] == ["zoo:cnn-s"]
