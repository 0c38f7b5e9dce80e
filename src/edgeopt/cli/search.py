"""``edgeopt optimize`` and ``edgeopt apply``: search recipes under a device budget, replay one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli._common import DataOpt
from edgeopt.cli._common import ModelArg
from edgeopt.cli._common import WeightsOpt
from edgeopt.cli._common import comma_list
from edgeopt.cli._common import err_console
from edgeopt.cli._common import float_list
from edgeopt.cli._progress import status
from edgeopt.cli._progress import trial_progress
from edgeopt.report.console import accuracy_budget
from edgeopt.report.console import render_optimize
from edgeopt.report.console import render_run


def optimize(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="RUNDIR: study, trials, report")],
    target: Annotated[str, typer.Option(help="target name or YAML file")],
    data: DataOpt = "digits",
    max_accuracy_drop: Annotated[
        str | None,
        typer.Option(
            "--max-accuracy-drop",
            metavar="PP|none",
            help="percentage points below the baseline (default 1); none: no limit",
        ),
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="estimated on the target")
    ] = None,
    max_energy_uj: Annotated[
        float | None, typer.Option("--max-energy-uj", help="estimated on the target")
    ] = None,
    max_flash: Annotated[
        int | None, typer.Option("--max-flash", help="bytes (default: the target's flash)")
    ] = None,
    max_ram: Annotated[
        int | None, typer.Option("--max-ram", help="bytes (default: the target's RAM)")
    ] = None,
    objectives: Annotated[
        str, typer.Option(help="comma list of accuracy, latency, energy, flash, ram")
    ] = "accuracy,energy",
    trials: Annotated[
        int, typer.Option(help="distinct candidates to measure (a repeated recipe is not rebuilt)")
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="seconds after which no trial starts")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="RDB URL (default sqlite:///RUNDIR/study.db)")
    ] = None,
    study: Annotated[str, typer.Option(help="study name in the storage")] = "edgeopt",
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    wait: Annotated[
        float,
        typer.Option(help="seconds to wait for trials still running on other workers"),
    ] = 3600.0,
    sampler: Annotated[str, typer.Option(help="tpe | nsga2")] = "tpe",
    quantize: Annotated[
        str, typer.Option(help="quantization choices: none, ptq8, qat8, ptq4, mixed")
    ] = "none,ptq8,qat8,ptq4,mixed",
    epochs: Annotated[int, typer.Option(help="distillation epochs per trial")] = 5,
    finetune_epochs: Annotated[int, typer.Option(help="pruning / QAT epochs per trial")] = 2,
    students: Annotated[
        str, typer.Option(help="extra students, comma list of zoo specs (zoo:ds-cnn-s,...)")
    ] = "",
    student_widths: Annotated[
        str, typer.Option(help="students: the model's zoo architecture at these widths")
    ] = "0.5,0.25",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    weights: WeightsOpt = None,
) -> None:
    """Search compression recipes under the device budget; keep the best one that fits."""
    from edgeopt.errors import BudgetError
    from edgeopt.search import OptimizeConfig
    from edgeopt.search import optimize as run_search

    drop = {} if max_accuracy_drop is None else {"max_accuracy_drop_pp": pp(max_accuracy_drop)}
    config = OptimizeConfig(
        **drop,
        max_latency_ms=max_latency_ms,
        max_energy_uj=max_energy_uj,
        max_flash_bytes=max_flash,
        max_ram_bytes=max_ram,
        objectives=comma_list(objectives),
        trials=trials,
        timeout_s=timeout,
        storage=storage,
        study=study,
        workers=workers,
        wait_s=wait,
        sampler=sampler,
        quantize_methods=comma_list(quantize),
        distill_epochs=epochs,
        finetune_epochs=finetune_epochs,
        students=comma_list(students),
        student_widths=float_list(student_widths, "--student-widths"),
        seed=seed,
    )
    # Said before the trials (on stderr, with the progress), so a run that takes an hour shows
    # its accuracy budget while it can still be stopped and given another one.
    err_console.print(accuracy_budget(config.max_accuracy_drop_pp), highlight=False)
    with trial_progress("optimize", total=config.trials) as progress:
        result = run_search(
            model,
            data or "digits",
            target,
            config,
            rundir=output,
            weights=weights,
            progress=progress,
        )
    render_optimize(result)
    if not result.is_feasible:
        raise BudgetError(result.explanation or "no candidate meets the budget.")


def pp(text: str) -> float | None:
    """``--max-accuracy-drop``: a number of percentage points, or ``none`` for no limit (a
    float option could not say "no limit", and leaving it out means the default budget)."""
    from edgeopt.errors import InputError

    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(
            f"--max-accuracy-drop: give percentage points (e.g. 1) or none, got {text!r}."
        ) from None


def apply(
    model: ModelArg,
    recipe: Annotated[Path, typer.Option(help="recipe.yaml written by optimize")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.onnx")],
    data: DataOpt = "digits",
    target: Annotated[str | None, typer.Option(help="target name: profile the file on it")] = None,
    weights: WeightsOpt = None,
) -> None:
    """Replay a saved recipe on the model: the same seed gives the same artifact."""
    from edgeopt.pipeline import Recipe
    from edgeopt.pipeline import run

    parsed = Recipe.from_yaml(recipe)
    with status(f"applying {parsed.describe()}"):
        result = run(
            model, recipe, data=data or "digits", output=output, target=target, weights=weights
        )
    render_run(result)
