"""Every registered stage, as soon as it is registered: its config survives the dict and recipe
round trips, a recipe of it keeps the model's input and output shapes, and replaying that
recipe writes the same file bit for bit (issue 13, item 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeopt.config import Config
from edgeopt.errors import InputError
from edgeopt.pipeline import Recipe
from edgeopt.pipeline import Step
from edgeopt.pipeline import apply_recipe
from edgeopt.registry import get_stage
from edgeopt.registry import list_stages
from edgeopt.registry import register_stage
from edgeopt.search.space import step_choices

#: Small settings, so that each stage runs in seconds on the tiny model.
CHEAP = {"epochs": 1, "finetune_epochs": 0, "steps_per_epoch": 4, "validation_samples": 64}
#: Fields a stage's config has no usable default for.
REQUIRED = {"quantize.mixed": {"max_flash_bytes": 10**7}}
STUDENT = "zoo:cnn-s?width=0.5"


def example(kind: str) -> Config:
    cls = get_stage(kind).config
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in CHEAP.items() if k in names}, **REQUIRED.get(kind, {}))


def step_of(config: Config) -> Step:
    return Step(config, student=STUDENT if config.kind == "distill" else None)


def test_the_built_in_stages_are_registered() -> None:
    assert {"distill", "prune", "quantize.ptq", "quantize.qat", "quantize.mixed"} <= set(
        list_stages()
    )
    assert list_stages() == sorted(list_stages())


@pytest.mark.parametrize("kind", list_stages())
def test_a_stage_config_survives_the_dict_and_recipe_round_trips(kind: str) -> None:
    config = example(kind)
    assert config.kind == kind and get_stage(kind).step == kind.split(".")[0]
    assert type(config).from_dict(config.to_dict()) == config
    recipe = Recipe(seed=3, steps=(step_of(config),))
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.describe() and "\n" not in recipe.describe()


@pytest.mark.slow
@pytest.mark.parametrize("kind", list_stages())
def test_a_recipe_of_the_stage_keeps_shapes_and_replays_bit_for_bit(
    kind: str, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from edgeopt.data import load_data

    data = load_data("digits")
    recipe = Recipe(seed=0, steps=(step_of(example(kind)),))
    first = apply_recipe("zoo:cnn-s", data, recipe, tmp_path / "a.onnx")
    second = apply_recipe("zoo:cnn-s", data, recipe, tmp_path / "b.onnx")
    assert first.read_bytes() == second.read_bytes()
    model = onnx.load(str(first))
    session = ort.InferenceSession(str(first), providers=["CPUExecutionProvider"])
    x = data.arrays("test")[0][:5].astype(np.float32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    assert logits.shape == (5, len(data.classes))
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1


def test_every_search_choice_builds_a_config_of_its_stage() -> None:
    """The search draws from what the stages registered: each choice makes a config (or a
    config deferred until the model exists) of a stage of that step."""
    import optuna

    from edgeopt.stages._stage import ChoiceContext
    from edgeopt.stages._stage import Deferred

    study = optuna.create_study()
    for step in ("prune", "quantize"):
        for name, build in step_choices(step).items():
            made = build(ChoiceContext(trial=study.ask(), seed=1, finetune_epochs=2))
            if isinstance(made, Deferred):
                continue
            assert get_stage(made.kind).step == step, name


def test_a_stage_registered_twice_or_unknown_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_stage(get_stage("prune").config)(lambda ctx, config: None)
    with pytest.raises(InputError, match="unknown stage 'quantize.int1'; known: distill"):
        get_stage("quantize.int1")
