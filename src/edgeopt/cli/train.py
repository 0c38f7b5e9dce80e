"""``edgeopt train`` and ``edgeopt distill``: a trained model exported to ONNX with its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli._common import DataOpt
from edgeopt.cli._common import ModelArg
from edgeopt.cli._common import WeightsOpt
from edgeopt.cli._common import trained_outputs
from edgeopt.cli._progress import epoch_progress
from edgeopt.report.console import render_distill
from edgeopt.report.console import render_train


def train(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx (weights: OUT.pt)")],
    data: DataOpt = "digits",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 10,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 64,
    learning_rate: Annotated[float, typer.Option("--lr", help="Adam learning rate")] = 3e-3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    weights: WeightsOpt = None,
) -> None:
    """Train a PyTorch model, export it to ONNX and save its weights beside it."""
    from edgeopt.config import TrainConfig
    from edgeopt.pipeline import Recipe
    from edgeopt.pipeline import Step
    from edgeopt.pipeline import run

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed
    )
    with epoch_progress("train") as progress:
        result = run(
            model,
            Recipe(seed=seed, steps=(Step(config),)),
            data=data or "digits",
            output=output,
            weights=weights,
            progress=progress,
        )
    render_train(result, title=f"trained {model} on {result.data['spec']}")


def distill(
    teacher: Annotated[
        list[str],
        typer.Option(
            help="trained teacher: model.onnx | zoo:NAME | module:factory | .pt2; repeat it for "
            "an ensemble (mean logits)"
        ),
    ],
    student: Annotated[str, typer.Option(help="PyTorch student: zoo:NAME?width= | module:factory")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx (weights: OUT.pt)")],
    data: DataOpt = "digits",
    temperature: Annotated[float, typer.Option(help="softmax temperature T")] = 4.0,
    alpha: Annotated[float, typer.Option(help="weight of the soft-target loss")] = 0.9,
    feature_weight: Annotated[
        float, typer.Option(help="weight of the FitNets feature loss (0: off)")
    ] = 0.0,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 10,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 64,
    learning_rate: Annotated[float, typer.Option("--lr", help="Adam learning rate")] = 3e-3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    teacher_weights: Annotated[
        list[Path] | None,
        typer.Option(help="state dict for a zoo or factory teacher (once per --teacher)"),
    ] = None,
    weights: WeightsOpt = None,
) -> None:
    """Distil a teacher into a student (Hinton et al. 2015), export it like `train` does."""
    from edgeopt._io import refuse_overwrite
    from edgeopt.data import load_data
    from edgeopt.models import load_model
    from edgeopt.pipeline import Recipe
    from edgeopt.pipeline import Step
    from edgeopt.pipeline import run
    from edgeopt.stages.distill import DistillConfig
    from edgeopt.stages.distill import load_teachers

    config = DistillConfig(
        temperature=temperature,
        alpha=alpha,
        feature_weight=feature_weight,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )
    teacher_paths = list(teacher_weights or [])
    inputs: dict[str, str | Path | None] = {
        "the student": student,
        "the weights": weights,
        "the data": data,
        **{f"teacher {spec}": spec for spec in teacher},
        **{f"the weights of teacher {i + 1}": path for i, path in enumerate(teacher_paths)},
    }
    refuse_overwrite(trained_outputs(output), inputs)
    dataset = load_data(data or "digits")
    teacher_handles = load_teachers(teacher, weights=teacher_paths, data=dataset)
    student_handle = load_model(student, weights=weights, data=dataset)
    step = Step(config, student=student_handle)
    with epoch_progress("distill") as progress:
        result = run(
            teacher_handles,
            Recipe(seed=seed, steps=(step,)),
            data=dataset,
            output=output,
            progress=progress,
        )
    title = f"distilled {' + '.join(teacher)} into {student} on {dataset.spec}"
    render_distill(result, title=title)
