"""``Recipe`` (the ordered compression steps that made an artifact) and ``run``, which replays
one on a model, measuring the file before and after every step.

A recipe is at most one step of each kind, in the order the toolkit runs them: ``distill`` (a
student trained on the model's outputs), ``prune`` (weights or channels, then fine-tuning),
``quantize`` (PTQ, QAT or mixed precision; always last, since it writes the deployed file).
Each step is the stage's own frozen config, so a recipe is exactly what the stage verbs take,
and its YAML form is the configs' ``to_dict`` with a ``step`` key::

    kind: edgeopt-recipe
    version: 1
    seed: 0
    steps:
    - {step: distill, student: "zoo:cnn-s?width=0.5", kind: distill, epochs: 5, seed: 0, ...}
    - {step: quantize, kind: quantize.ptq, bits: 8, calibration: mse, ...}

Every step is seeded (training shuffles, initial weights) and PyTorch runs deterministic
kernels, so :func:`apply_recipe` on the same model and data writes the same artifact: the search
relies on it to rebuild a candidate found by a worker on another machine. :func:`run` writes that
same artifact and a record of what each step cost (``OUT.json``), all staged beside the output
and renamed in together.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import yaml

from edgeopt._io import atomic_path
from edgeopt._io import read_yaml
from edgeopt._io import scratch_dir
from edgeopt.config import Config
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.registry import get_stage
from edgeopt.registry import list_stages
from edgeopt.stages._stage import Deferred
from edgeopt.stages._stage import StageContext

if TYPE_CHECKING:
    from edgeopt.metrics import Metrics
    from edgeopt.target import Target

__all__ = [
    "Recipe",
    "Result",
    "Step",
    "StepRecord",
    "apply_recipe",
    "build_before_quantize",
    "finish_recipe",
    "run",
]

RECIPE_KIND = "edgeopt-recipe"
RECIPE_VERSION = 1
STEP_ORDER = ("distill", "prune", "quantize")


def _config_class(kind: Any, name: str) -> type[Config]:
    """The registered config class of ``kind`` for step ``name`` (the stage registry is the
    one list of what a recipe may hold)."""
    if not isinstance(kind, str) or kind not in list_stages() or kind.split(".")[0] != name:
        raise InputError(f"recipe: step {name!r} cannot hold a {kind!r} config.")
    return get_stage(kind).config


def _plain(value: Any) -> Any:
    """Tuples as lists, so the YAML is plain (safe_dump refuses tuples)."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class Step:
    """One step of a recipe: a stage config, plus the student's spec for ``distill``."""

    config: Config
    student: str | None = None

    @property
    def name(self) -> str:
        """``distill``, ``prune`` or ``quantize`` (the part of the kind before the dot)."""
        return self.config.kind.split(".")[0]

    def __post_init__(self) -> None:
        if self.config.kind not in list_stages() or self.name not in STEP_ORDER:
            raise InputError(f"recipe: unknown step config {self.config.kind!r}.")
        if (self.name == "distill") != (self.student is not None):
            raise InputError("recipe: a distill step, and only it, names a student model.")

    def label(self) -> str:
        """A few characters for a recipe line: ``distill(cnn-s?width=0.5)``, ``ptq8``."""
        if self.student is not None:
            return f"distill({self.student.removeprefix('zoo:')})"
        return self.config.label()

    def to_dict(self) -> dict[str, Any]:
        head: dict[str, Any] = {"step": self.name}
        if self.student is not None:
            head["student"] = self.student
        return _plain({**head, **self.config.to_dict()})

    @classmethod
    def from_dict(cls, raw: Any) -> Step:
        """Rebuild a step, naming the field at fault."""
        if not isinstance(raw, dict):
            raise InputError("recipe: every step must be a mapping with a 'step' key.")
        raw = dict(raw)
        name = raw.pop("step", None)
        if name not in STEP_ORDER:
            raise InputError(f"recipe: step must be one of {', '.join(STEP_ORDER)}, got {name!r}.")
        student = raw.pop("student", None)
        kind = raw.get("kind", name if name != "quantize" else None)
        if kind is None:
            kinds = "|".join(k.removeprefix("quantize.") for k in list_stages() if "." in k)
            raise InputError(f"recipe: a quantize step needs a kind (quantize.{kinds}).")
        config_class = _config_class(kind, name)
        for key in ("exclude", "candidates"):
            if isinstance(raw.get(key), list):
                raw[key] = tuple(raw[key])
        try:
            config = config_class.from_dict(raw)
        except TypeError as exc:
            raise InputError(f"recipe: step {name!r} has a malformed field ({exc}).") from None
        if student is not None and not isinstance(student, str):
            raise InputError("recipe: student must be a model spec such as zoo:cnn-s?width=0.5.")
        return cls(config=config, student=student)


@dataclass(frozen=True)
class Recipe:
    """An ordered list of compression steps and the seed they were made with.

    Example:
        >>> from edgeopt.stages.quantize import PTQConfig
        >>> r = Recipe(seed=0, steps=(Step(PTQConfig()),))
        >>> Recipe.from_dict(r.to_dict()) == r
        True
    """

    seed: int = 0
    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"recipe: seed must be a whole number, got {self.seed!r}.")
        object.__setattr__(self, "steps", tuple(self.steps))
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names) or names != sorted(names, key=STEP_ORDER.index):
            raise InputError(
                f"recipe: steps must be at most one each of {', '.join(STEP_ORDER)}, in that "
                f"order; got {', '.join(names)}."
            )

    @property
    def quantize_step(self) -> Step | None:
        return self.steps[-1] if self.steps and self.steps[-1].name == "quantize" else None

    def describe(self) -> str:
        """One line: ``distill(cnn-s?width=0.5) > prune(channel 0.3) > ptq8``."""
        return " > ".join(step.label() for step in self.steps) or "as is (fp32)"

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, raw: Any) -> Recipe:
        if not isinstance(raw, dict):
            raise InputError("recipe: must be a mapping with seed and steps.")
        raw = dict(raw)
        kind = raw.pop("kind", RECIPE_KIND)
        version = raw.pop("version", RECIPE_VERSION)
        if kind != RECIPE_KIND:
            raise InputError(f"recipe: kind {kind!r} is not {RECIPE_KIND!r}.")
        if not isinstance(version, int) or version > RECIPE_VERSION:
            raise InputError(f"recipe: version {version!r} is newer than {RECIPE_VERSION}.")
        unknown = sorted(set(raw) - {"seed", "steps"})
        if unknown:
            raise InputError(f"recipe: unknown field {unknown[0]!r}.")
        steps = raw.get("steps") or []
        if not isinstance(steps, list):
            raise InputError("recipe: steps must be a list.")
        return cls(seed=raw.get("seed", 0), steps=tuple(Step.from_dict(s) for s in steps))

    def to_yaml(self, path: str | Path) -> Path:
        """Write the recipe as YAML, atomically."""
        out = Path(path)
        body = {"kind": RECIPE_KIND, "version": RECIPE_VERSION, **self.to_dict()}
        with atomic_path(out) as tmp:
            tmp.write_text(yaml.safe_dump(body, sort_keys=False))
        return out

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        """Load a recipe file; errors name the file and the field."""
        source = Path(path)
        raw = read_yaml(source, "recipe")
        try:
            return cls.from_dict(raw)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None


def _onnx_metadata(handle: ModelHandle, dataset: Dataset) -> dict[str, object]:
    """What ``save_trained`` stamps: later steps fold the normalization into the model."""
    return {
        "normalization": dataset.normalization.to_dict(),
        "classes": list(dataset.classes),
        "data": dataset.spec,
        "model_spec": handle.spec,
    }


def build_before_quantize(
    handle: ModelHandle, dataset: Dataset, steps: tuple[Step, ...]
) -> ModelHandle:
    """Run the training-side steps (distill, prune) through their registered stages and
    return the model they made."""
    for step in steps:
        stage = get_stage(step.config.kind)
        with tempfile.TemporaryDirectory(prefix="edgeopt-stage-") as scratch:
            ctx = StageContext(handle, dataset, Path(scratch), student=step.student)
            handle = stage.apply(ctx, step.config).model
    return handle


def write_fp32(handle: ModelHandle, dataset: Dataset, output: Path) -> Path:
    """The model as an fp32 ONNX file: a PyTorch model exported, an ONNX file copied."""
    from edgeopt.export.onnx import export_onnx
    from edgeopt.export.onnx import save_onnx
    from edgeopt.models import read_onnx

    if handle.module is not None:
        return export_onnx(handle, output, metadata=_onnx_metadata(handle, dataset))
    assert handle.onnx_path is not None
    return save_onnx(read_onnx(handle.onnx_path), output)


def finish_recipe(
    handle: ModelHandle, dataset: Dataset, step: Step | None, output: Path, scratch: Path
) -> Path:
    """Write the deployed file: quantized by ``step``, or the fp32 model when there is none.

    PTQ and mixed precision start from the fp32 file written here with the data's metadata
    (normalization, classes), the same file a search candidate starts from.
    """
    from edgeopt.stages.quantize import quantize

    if step is None:
        return write_fp32(handle, dataset, output)
    if not get_stage(step.config.kind).is_torch_only and handle.module is not None:
        fp32 = write_fp32(handle, dataset, scratch / f"{handle.name}.fp32.onnx")
        handle = load_model(str(fp32), data=dataset)
    quantize(handle, step.config, data=dataset, output=output)  # type: ignore[arg-type]
    return output


def apply_recipe(
    model: str | ModelHandle,
    data: str | Dataset,
    recipe: Recipe | str | Path,
    output: str | Path,
    *,
    weights: str | Path | None = None,
) -> Path:
    """Replay a recipe on a model: the same model, data and recipe give the same artifact.

    Args:
        model: the model the recipe started from (the search's baseline): a spec or a handle.
        data: the data spec or dataset the search used.
        recipe: a :class:`Recipe` or the path of its YAML file.
        output: the ``.onnx`` file to write (atomically).
        weights: a state dict for a zoo or factory spec.

    Returns:
        The written path.

    Raises:
        InputError: a bad model, data or recipe (named), an output that is not ``.onnx``, or a
            training-side step on an ONNX-only model.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.stages.quantize import PTQConfig
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.onnx"
        >>> apply_recipe("zoo:cnn-s", "digits", Recipe(steps=(Step(PTQConfig()),)), out) == out
        True
    """
    resolved, out, dataset, handle = _resolve(model, data, recipe, output, weights)
    quantize_step = resolved.quantize_step
    before = tuple(step for step in resolved.steps if step.name != "quantize")
    built = build_before_quantize(handle, dataset, before)
    out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out.parent, "recipe-") as scratch:
        return finish_recipe(built, dataset, quantize_step, out, Path(scratch))


def _resolve(
    model: str | ModelHandle,
    data: str | Dataset,
    recipe: Recipe | str | Path,
    output: str | Path,
    weights: str | Path | None,
) -> tuple[Recipe, Path, Dataset, ModelHandle]:
    """The inputs of a replay resolved once, and refused before any work when they cannot go
    together (a training step on an ONNX-only model, an output that is not ``.onnx``)."""
    resolved = recipe if isinstance(recipe, Recipe) else Recipe.from_yaml(recipe)
    out = Path(output)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output must end in .onnx.")
    dataset = load_data(data)
    handle = load_model(model, weights=weights, data=dataset)
    first = resolved.steps[0] if resolved.steps else None
    if handle.module is None and first is not None and first.name == "prune":
        handle.require_torch("pruning")
    quantize_step = resolved.quantize_step
    if quantize_step is not None and get_stage(quantize_step.config.kind).is_torch_only:
        if handle.module is None and not any(s.name == "distill" for s in resolved.steps):
            handle.require_torch(quantize_step.config.kind.removeprefix("quantize.").upper())
    return resolved, out, dataset, handle


@dataclass(frozen=True)
class StepRecord:
    """One step of a run: its one-line label, its config and the metrics of the file after it
    (a training-side step's model is measured as its fp32 ONNX export)."""

    label: str
    config: dict[str, Any]
    metrics: Metrics

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.label, "config": self.config, "metrics": self.metrics.to_dict()}


@dataclass(frozen=True)
class Result:
    """A recipe run: the written model and record, the input's metrics and each step's."""

    path: Path
    record_path: Path
    recipe: Recipe
    before: Metrics
    steps: tuple[StepRecord, ...]

    @property
    def after(self) -> Metrics:
        """The metrics of the written file."""
        return self.steps[-1].metrics if self.steps else self.before

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.path.name,
            "recipe": self.recipe.to_dict(),
            "description": self.recipe.describe(),
            "before": self.before.to_dict(),
            "steps": [step.to_dict() for step in self.steps],
        }


def run(
    model: str | ModelHandle,
    recipe: Recipe | str | Path,
    *,
    data: str | Dataset,
    output: str | Path,
    target: str | Target | None = None,
    weights: str | Path | None = None,
    threads: int = 1,
    deferred: Deferred | None = None,
) -> Result:
    """Replay ``recipe`` on ``model`` and measure the file before and after every step.

    The written model is the same file :func:`apply_recipe` writes (same steps, same seed);
    ``OUT.json`` beside it records the input's metrics and each step's (with
    :func:`edgeopt.measure.profile_onnx`, on the data's test split and the target). Both are
    staged beside the output and renamed in together: both appear, or neither.

    Args:
        model: the model the recipe starts from: a spec or a handle.
        recipe: a :class:`Recipe` or the path of its YAML file.
        data: the data spec or dataset (training, calibration and the measured test split).
        output: the ``.onnx`` file to write.
        target: the device profile of the estimates (latency, energy, fits), if any.
        weights: a state dict for a zoo or factory spec.
        threads: ONNX Runtime threads of the host latency.
        deferred: the quantize step when its config can only be made once the model before it
            exists (the search's mixed precision: a budget that is a fraction of the model's
            own int8 file); the result's recipe holds the config it made.

    Returns:
        The paths, the recipe and the metrics before and after each step.

    Raises:
        InputError: a bad model, data, recipe or target, an output that is not ``.onnx`` or
            would overwrite the input model or the recipe, a training-side step on an
            ONNX-only model; nothing is written then.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.stages.quantize import PTQConfig
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.onnx"
        >>> result = run("zoo:cnn-s", Recipe(steps=(Step(PTQConfig()),)), data="digits", output=out)
        >>> result.after.size_bytes < result.before.size_bytes, result.record_path.exists()
        (True, True)
    """
    from edgeopt._io import refuse_overwrite
    from edgeopt.measure import profile_onnx
    from edgeopt.target import Target

    resolved, out, dataset, handle = _resolve(model, data, recipe, output, weights)
    device = Target.from_name(target) if isinstance(target, str) else target
    record = out.with_suffix(".json")
    inputs = {"the input model": handle.onnx_path}
    if not isinstance(recipe, Recipe):
        inputs["the recipe"] = Path(recipe)
    refuse_overwrite([out, record], inputs)

    def measure(path: Path) -> Metrics:
        return profile_onnx(path, data=dataset, target=device, threads=threads)

    made = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]
    try:
        return _run_staged(resolved, out, record, dataset, handle, measure, deferred)
    except BaseException:
        for folder in made:  # deepest first: the folders this call made, if left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _run_staged(
    resolved: Recipe,
    out: Path,
    record: Path,
    dataset: Dataset,
    handle: ModelHandle,
    measure: Any,
    deferred: Deferred | None,
) -> Result:
    """``run`` once its inputs are resolved and checked: the steps in a staging folder beside
    ``out``, each file measured, then the model and the record renamed in."""
    import os

    from edgeopt._io import write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out.parent, "run-") as staging:
        folder = Path(staging)
        last = write_fp32(handle, dataset, folder / "input.onnx")
        before = measure(last)
        records: list[StepRecord] = []
        steps = list(resolved.steps)
        index = 0
        while index < len(steps) or deferred is not None:
            if index == len(steps):  # the training steps are done: make the deferred config
                assert deferred is not None
                (folder / "deferred").mkdir()
                steps.append(Step(deferred.build(handle, dataset, folder / "deferred")))
                resolved, deferred = Recipe(seed=resolved.seed, steps=tuple(steps)), None
            step = steps[index]
            if step.name == "quantize":
                last = finish_recipe(handle, dataset, step, folder / out.name, folder)
            else:
                handle = build_before_quantize(handle, dataset, (step,))
                last = write_fp32(handle, dataset, folder / f"step-{index}.onnx")
            records.append(StepRecord(step.label(), step.to_dict(), measure(last)))
            index += 1
        # Without a quantize step the last fp32 file (the input's, with no steps) ships as it is:
        # write_fp32 is what finish_recipe would write again.
        result = Result(out, record, resolved, before, tuple(records))
        write_json(folder / record.name, result.to_dict())
        os.replace(last, out)
        os.replace(folder / record.name, record)
    return result
