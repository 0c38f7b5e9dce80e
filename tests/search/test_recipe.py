"""Recipes: the YAML round trip, bad files named, and a replay that reproduces its artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt import InputError
from edgeopt import load_data
from edgeopt.measure.runtime import make_session
from edgeopt.search import Recipe
from edgeopt.search import Step
from edgeopt.search import apply_recipe
from edgeopt.stages.distill import DistillConfig
from edgeopt.stages.prune import PruneConfig
from edgeopt.stages.quantize import MixedPrecisionConfig
from edgeopt.stages.quantize import PTQConfig


def outputs(path: Path) -> np.ndarray:
    x, _ = load_data("digits").arrays("test")
    session = make_session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_recipe_survives_a_yaml_round_trip(tmp_path: Path) -> None:
    recipe = Recipe(
        seed=7,
        steps=(
            Step(DistillConfig(epochs=1, seed=7), student="zoo:cnn-s?width=0.5"),
            Step(PruneConfig(granularity="channel", ratio=0.3, ratio_of="macs", seed=7)),
            Step(MixedPrecisionConfig(max_flash_bytes=12_345, allow_float=False)),
        ),
    )
    path = recipe.to_yaml(tmp_path / "r.yaml")
    text = path.read_text()
    assert "kind: edgeopt-recipe" in text and "student: zoo:cnn-s?width=0.5" in text
    assert Recipe.from_yaml(path) == recipe
    assert recipe.describe() == "distill(cnn-s?width=0.5) > prune(channel 0.3) > mixed(12,345 B)"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("seed: 0\nsteps:\n- {step: quantize, kind: quantize.ptq}\n- {step: prune}\n", "order"),
        ("seed: 0\nsteps:\n- {step: quantize, kind: quantize.ptq, bits: 3}\n", "bits"),
        ("seed: 0\nsteps:\n- {step: fold}\n", "step"),
        ("seed: 0\nsteps:\n- {step: prune, speed: 3}\n", "speed"),
    ],
)
def test_bad_recipe_file_is_one_sentence_naming_the_file(
    tmp_path: Path, body: str, field: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(InputError) as info:
        Recipe.from_yaml(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_apply_recipe_twice_gives_identical_outputs(trained: Path, tmp_path: Path) -> None:
    recipe = Recipe(
        seed=3,
        steps=(
            Step(DistillConfig(epochs=1, seed=3), student="zoo:cnn-s?width=0.5"),
            Step(PruneConfig(granularity="channel", ratio=0.3, ratio_of="macs", seed=3)),
            Step(PTQConfig()),
        ),
    )
    model = "zoo:cnn-s"
    weights = trained.with_suffix(".pt")
    first = apply_recipe(model, "digits", recipe, tmp_path / "a.onnx", weights=weights)
    second = apply_recipe(model, "digits", recipe, tmp_path / "b.onnx", weights=weights)
    a, b = outputs(first), outputs(second)
    assert a.shape == (359, 10)
    np.testing.assert_array_equal(a, b)
    # Distilled at half width and pruned: the artifact is smaller than the teacher's int8 file.
    plain = apply_recipe(
        model, "digits", Recipe(steps=(Step(PTQConfig()),)), tmp_path / "c.onnx", weights=weights
    )
    assert first.stat().st_size < plain.stat().st_size


def test_apply_recipe_refuses_pruning_an_onnx_model(trained: Path, tmp_path: Path) -> None:
    recipe = Recipe(steps=(Step(PruneConfig(ratio=0.5)),))
    with pytest.raises(InputError, match="pruning needs a PyTorch model"):
        apply_recipe(str(trained), "digits", recipe, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_mixed_budget_below_the_4bit_file_is_raised_to_it(tmp_path: Path) -> None:
    """A small model's all-4-bit file is most of its int8 file: a low fraction of the int8 file
    must not ask mixed precision for fewer bytes than 4-bit weights reach (such a trial failed
    with BudgetError after its training)."""
    from edgeopt import load_model
    from edgeopt.pipeline import finish_recipe
    from edgeopt.search.space import ptq_bytes
    from edgeopt.stages.quantize.mixed import mixed_budget

    data = load_data("digits")
    handle = load_model("zoo:cnn-s", data=data)
    budget = mixed_budget(handle, data, 0.01, tmp_path, ptq_bytes=ptq_bytes)
    int8, int4 = ((tmp_path / f"int{bits}.onnx").stat().st_size for bits in (8, 4))
    assert int(0.01 * int8) < int4 == budget
    config = MixedPrecisionConfig(max_flash_bytes=budget, allow_float=False)
    out = finish_recipe(handle, data, Step(config), tmp_path / "mixed.onnx", tmp_path)
    assert out.stat().st_size <= budget


def test_the_search_mixed_choice_sizes_its_budget_with_the_search_ptq_files(
    tmp_path: Path,
) -> None:
    """The mixed choice is made by the stage but sized by the search: ``suggest_plan`` hands
    it ``ptq_bytes`` (the stage does not import the search), and the deferred config's budget
    is the drawn fraction of the int8 file, at least the 4-bit file."""
    import optuna

    from edgeopt import load_model
    from edgeopt.search.space import suggest_plan

    trial = optuna.trial.FixedTrial({"prune": "none", "quantize": "mixed", "mixed_fraction": 0.8})
    plan = suggest_plan(
        trial, students=[], is_torch=True, seed=0, distill_epochs=1, finetune_epochs=1
    )
    assert plan.quantize is None and plan.deferred is not None
    data = load_data("digits")
    config = plan.deferred.build(load_model("zoo:cnn-s", data=data), data, tmp_path)
    int8, int4 = ((tmp_path / f"int{bits}.onnx").stat().st_size for bits in (8, 4))
    assert isinstance(config, MixedPrecisionConfig)
    assert config.max_flash_bytes == max(int(0.8 * int8), int4)


def test_a_step_config_version_that_is_not_a_number_is_bad_input(tmp_path: Path) -> None:
    """int(version) of a mangled recipe raised a bare ValueError (found by benchmarks/fuzz.py)."""
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "kind: edgeopt-recipe\nversion: 1\nseed: 0\n"
        "steps:\n- step: quantize\n  kind: quantize.ptq\n  version: 'x'\n"
    )
    with pytest.raises(InputError, match="version 'x' is not a whole number"):
        Recipe.from_yaml(path)
