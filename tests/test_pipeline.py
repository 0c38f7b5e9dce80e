"""``pipeline.run``: a recipe replayed with the file measured before and after every step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeopt.data import load_data
from edgeopt.errors import BudgetError
from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.models import load_model
from edgeopt.pipeline import Recipe
from edgeopt.pipeline import Step
from edgeopt.pipeline import apply_recipe
from edgeopt.pipeline import run
from edgeopt.stages.prune import PruneConfig
from edgeopt.stages.quantize import MixedPrecisionConfig
from edgeopt.stages.quantize import PTQConfig

PRUNE = PruneConfig(granularity="channel", ratio=0.3, ratio_of="macs", finetune_epochs=0)


def test_run_measures_every_step_and_writes_what_apply_recipe_writes(tmp_path: Path) -> None:
    data = load_data("digits")
    recipe = Recipe(seed=0, steps=(Step(PRUNE), Step(PTQConfig())))
    result = run("zoo:cnn-s", recipe, data=data, output=tmp_path / "m.onnx", target="cortex-m4")
    replayed = apply_recipe("zoo:cnn-s", data, recipe, tmp_path / "again.onnx")
    assert result.path.read_bytes() == replayed.read_bytes()
    pruned, quantized = (step.metrics for step in result.steps)
    assert pruned.macs < result.before.macs  # channels removed
    assert quantized.size_bytes < pruned.size_bytes  # int8 weights
    assert result.after is quantized and quantized.estimate is not None
    record = json.loads(result.record_path.read_text())
    assert [step["step"] for step in record["steps"]] == ["prune(channel 0.3)", "ptq8"]
    assert record["before"]["macs"] == result.before.macs
    assert record["steps"][1]["metrics"]["accuracy"] == quantized.accuracy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.onnx", "m.json", "m.onnx"]


def test_run_refuses_before_any_work_and_writes_nothing(tmp_path: Path) -> None:
    data = load_data("digits")
    model = export_onnx(load_model("zoo:cnn-s", data=data), tmp_path / "in" / "model.onnx")
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(InputError, match="pruning"):
        run(str(model), Recipe(steps=(Step(PRUNE),)), data=data, output=out)
    with pytest.raises(InputError, match="would overwrite the input model"):
        run(str(model), Recipe(steps=(Step(PTQConfig()),)), data=data, output=model)
    # A step that fails after the work began: no file, and no folder the call made.
    deep = tmp_path / "new" / "deeper" / "m.onnx"
    too_small = MixedPrecisionConfig(max_flash_bytes=10)
    with pytest.raises(BudgetError, match="below the smallest file"):
        run("zoo:cnn-s", Recipe(steps=(Step(too_small),)), data=data, output=deep)
    assert not (tmp_path / "new").exists()
    assert not out.parent.exists()
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.onnx"]


def test_a_deferred_quantize_step_is_made_once_the_model_exists(tmp_path: Path) -> None:
    """The search's mixed precision: its budget is a fraction of the model's own int8 file, so
    its config is made after the training steps, and the result's recipe holds it."""
    from edgeopt.search.space import ptq_bytes
    from edgeopt.stages._stage import Deferred
    from edgeopt.stages.quantize import MixedPrecisionConfig
    from edgeopt.stages.quantize.mixed import mixed_budget

    seen = []

    def build(handle: object, dataset: object, scratch: Path) -> MixedPrecisionConfig:
        seen.append(handle)
        budget = mixed_budget(handle, dataset, 0.8, scratch, ptq_bytes=ptq_bytes)
        return MixedPrecisionConfig(max_flash_bytes=budget, allow_float=False)

    recipe = Recipe(seed=0, steps=(Step(PRUNE),))
    result = run(
        "zoo:cnn-s", recipe, data="digits", output=tmp_path / "m.onnx", deferred=Deferred(build)
    )
    assert len(seen) == 1 and seen[0].module is not None  # the pruned PyTorch model
    assert [step.name for step in result.recipe.steps] == ["prune", "quantize"]
    mixed = result.recipe.steps[-1].config
    assert isinstance(mixed, MixedPrecisionConfig)
    assert result.after.size_bytes <= mixed.max_flash_bytes
    assert [step.label for step in result.steps][-1].startswith("mixed(")


def test_train_and_distill_are_recipes_that_write_the_weights_too(tmp_path: Path) -> None:
    """``edgeopt train`` and ``distill`` are one-step recipes: the trained model's ONNX file,
    its state dict (loadable with ``--weights``) and the record, with the stage's own record
    (history, PyTorch accuracy) as the step's detail."""
    import torch

    from edgeopt.config import TrainConfig
    from edgeopt.stages.distill import DistillConfig

    data = load_data("digits")
    train = Recipe(seed=0, steps=(Step(TrainConfig(epochs=1)),))
    trained = run("zoo:cnn-s", train, data=data, output=tmp_path / "t.onnx")
    assert sorted(trained.files) == ["model", "record", "weights"]
    assert trained.after.accuracy > trained.before.accuracy  # trained vs initial weights
    record = json.loads(trained.record_path.read_text())
    assert record["steps"][0]["detail"]["history"][0]["epoch"] == 1
    reloaded = load_model("zoo:cnn-s", weights=trained.files["weights"], data=data)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(reloaded.module(x), trained.model.module.eval()(x))
    teachers = [trained.model, load_model(str(trained.path), data=data)]  # an ensemble
    step = Step(DistillConfig(epochs=1), student="zoo:cnn-s?width=0.5")
    student = run(teachers, Recipe(steps=(step,)), data=data, output=tmp_path / "s.onnx")
    assert student.before is None and student.output("distill").teacher_runtime.startswith("onnx")
    assert json.loads(student.record_path.read_text())["source_model"].count(" + ") == 1


def test_an_ensemble_or_a_compressed_int8_file_is_refused_before_any_work(tmp_path: Path) -> None:
    from edgeopt.pipeline import Compression

    out = tmp_path / "m.onnx"
    with pytest.raises(InputError, match="ensemble"):
        run(
            ["zoo:cnn-s", "zoo:cnn-s"],
            Recipe(steps=(Step(PTQConfig()),)),
            data="digits",
            output=out,
        )
    with pytest.raises(InputError, match="compression"):
        run(
            "zoo:cnn-s",
            Recipe(steps=(Step(PTQConfig()),)),
            data="digits",
            output=out,
            compress=Compression(),
        )
    assert list(tmp_path.iterdir()) == []
