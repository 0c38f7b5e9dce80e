"""``Recipe`` (the ordered compression steps that made an artifact) and ``run``, which replays
one on a model, measuring the file before and after every step.

A recipe is at most one step of each kind, in the order the toolkit runs them: ``train`` (the
model trained from its initial weights), ``distill`` (a student trained on the model's
outputs), ``prune`` (weights or channels, then fine-tuning),
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
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
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
from edgeopt.models import bind_data
from edgeopt.models import load_model
from edgeopt.registry import get_stage
from edgeopt.registry import list_stages
from edgeopt.stages._stage import Deferred
from edgeopt.stages._stage import StageContext

if TYPE_CHECKING:
    from edgeopt.export.compressed import CompressionReport
    from edgeopt.metrics import Metrics
    from edgeopt.stages.quantize import QuantizeResult
    from edgeopt.target import Target
    from edgeopt.training import ProgressFn
    from edgeopt.training import TrainArtifacts
    from edgeopt.training import TrainedModel

__all__ = [
    "Compressed",
    "Compression",
    "Recipe",
    "Result",
    "Step",
    "StepRecord",
    "apply_recipe",
    "apply_step",
    "build_before_quantize",
    "finish_recipe",
    "quantize_step",
    "run",
    "save_trained",
]

RECIPE_KIND = "edgeopt-recipe"
RECIPE_VERSION = 1
STEP_ORDER = ("train", "distill", "prune", "quantize")


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
    """One step of a recipe: a stage config, plus the student for ``distill`` (a spec, or a
    loaded handle, written as its spec)."""

    config: Config
    student: str | ModelHandle | None = None

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
            return f"distill({self.student_spec.removeprefix('zoo:')})"
        return self.config.label()

    @property
    def student_spec(self) -> str:
        """The student's spec (``""`` for a step of another kind)."""
        student = self.student
        return "" if student is None else student if isinstance(student, str) else student.spec

    def to_dict(self) -> dict[str, Any]:
        head: dict[str, Any] = {"step": self.name}
        if self.student is not None:
            head["student"] = self.student_spec
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
    """What an fp32 export carries: later steps fold the normalization into the model."""
    return {
        "normalization": dataset.normalization.to_dict(),
        "classes": list(dataset.classes),
        "data": dataset.spec,
        "model_spec": handle.spec,
    }


def apply_step(
    model: ModelHandle | Sequence[ModelHandle],
    dataset: Dataset,
    step: Step,
    progress: ProgressFn | None = None,
) -> Any:
    """Run one training-side step (train, distill, prune) through its registered stage; return
    the stage's result, whose ``model`` is the new handle. ``model`` is a sequence only for a
    distill step (an ensemble of teachers)."""
    stage = get_stage(step.config.kind)
    with tempfile.TemporaryDirectory(prefix="edgeopt-stage-") as scratch:
        ctx = StageContext(model, dataset, Path(scratch), progress, student=step.student)  # type: ignore[arg-type]
        return stage.apply(ctx, step.config)


def build_before_quantize(
    handle: ModelHandle, dataset: Dataset, steps: tuple[Step, ...]
) -> ModelHandle:
    """Run the training-side steps and return the model they made."""
    for step in steps:
        handle = apply_step(handle, dataset, step).model
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


def quantize_step(
    handle: ModelHandle,
    dataset: Dataset,
    step: Step,
    output: Path,
    scratch: Path,
    progress: ProgressFn | None = None,
) -> QuantizeResult:
    """Write the model quantized by ``step`` into ``output``.

    PTQ and mixed precision start from the fp32 file written here with the data's metadata
    (normalization, classes), the same file a search candidate starts from.
    """
    from edgeopt.stages.quantize import quantize

    if not get_stage(step.config.kind).is_torch_only and handle.module is not None:
        fp32 = write_fp32(handle, dataset, scratch / f"{handle.name}.fp32.onnx")
        handle = load_model(str(fp32), data=dataset)
    config: Any = step.config
    return quantize(handle, config, data=dataset, output=output, progress=progress)


def finish_recipe(
    handle: ModelHandle, dataset: Dataset, step: Step | None, output: Path, scratch: Path
) -> Path:
    """Write the deployed file: quantized by ``step``, or the fp32 model when there is none."""
    if step is None:
        return write_fp32(handle, dataset, output)
    quantize_step(handle, dataset, step, output, scratch)
    return output


def apply_recipe(
    model: str | ModelHandle,
    data: str | Dataset,
    recipe: Recipe | str | Path,
    output: str | Path,
    *,
    weights: str | Path | None = None,
) -> Path:
    """Replay a recipe on a model: the same model, data and recipe give the same artifact
    (the file :func:`run` writes, without measuring it).

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
    resolved, out, dataset, handles = _resolve(model, data, recipe, output, weights)
    (handle,) = handles
    last = resolved.quantize_step
    before = tuple(step for step in resolved.steps if step.name != "quantize")
    built = build_before_quantize(handle, dataset, before)
    out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out.parent, "recipe-") as scratch:
        return finish_recipe(built, dataset, last, out, Path(scratch))


def _resolve(
    model: str | ModelHandle | Sequence[str | ModelHandle],
    data: str | Dataset,
    recipe: Recipe | str | Path,
    output: str | Path,
    weights: str | Path | None,
) -> tuple[Recipe, Path, Dataset, tuple[ModelHandle, ...]]:
    """The inputs of a replay resolved once, and refused before any work when they cannot go
    together (a training step on an ONNX-only model, an ensemble anywhere but before a distill
    step, an output that is not ``.onnx``, a quantization with unusable calibration data)."""
    from edgeopt.stages.quantize import check_inputs

    resolved = recipe if isinstance(recipe, Recipe) else Recipe.from_yaml(recipe)
    out = Path(output)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output must end in .onnx.")
    dataset = load_data(data)
    models = [model] if isinstance(model, str | ModelHandle) else list(model)
    first = resolved.steps[0] if resolved.steps else None
    if len(models) != 1 and (first is None or first.name != "distill"):
        raise InputError("several models (an ensemble) can only be the teachers of a distill step.")
    handles = tuple(load_model(m, weights=weights, data=dataset) for m in models)
    dataset = bind_data(handles[0], dataset)  # the input contract: what this model is fed
    for step in resolved.steps:  # up to a distill step, which makes a PyTorch student
        if step.name == "distill":
            break
        get_stage(step.config.kind).require_torch(handles[0])
    last = resolved.quantize_step
    if last is not None and len(resolved.steps) == 1:
        check_inputs(handles[0], last.config, dataset)  # type: ignore[arg-type]
    return resolved, out, dataset, handles


@dataclass(frozen=True)
class StepRecord:
    """One step of a run: its one-line label, its config, the metrics of the file after it (a
    training-side step's model is measured as its fp32 ONNX export), the stage's own record
    (``detail``: a training history, the pruned layers, the quantized ranges) and its result
    object (``output``, not serialized: what the console renders)."""

    label: str
    config: dict[str, Any]
    metrics: Metrics
    detail: dict[str, Any] = field(default_factory=dict)
    output: Any = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.label,
            "config": self.config,
            "metrics": self.metrics.to_dict(),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Compression:
    """Deep Compression (Han et al. 2016) of the written fp32 model into ``OUT.edc``: codebook
    bits of convolution and fully connected weights (:func:`edgeopt.compress_onnx`)."""

    bits_conv: int = 8
    bits_fc: int = 5


@dataclass(frozen=True)
class Compressed:
    """``OUT.edc``: the compression report, the source model compressed alike (its bytes) and
    the metrics of the ONNX file that ``OUT.edc`` decodes to."""

    report: CompressionReport
    source_bytes: int
    decoded: Metrics

    def to_dict(self, source: Metrics, name: str) -> dict[str, Any]:
        paths = ("source", "shared_onnx", "compressed")
        return {
            **{k: v for k, v in self.report.to_dict().items() if k not in paths},
            "file": name,
            "source_compressed_bytes": self.source_bytes,
            "ratio_vs_source_onnx": source.size_bytes / max(1, self.report.compressed_bytes),
            "decoded": self.decoded.to_dict(),
        }


@dataclass(frozen=True)
class Result:
    """A recipe run: the files written (``model``, ``record``, and ``weights`` or ``compressed``
    where written), the input's metrics (None for an ensemble of teachers: no one file) and
    each step's, the model made (its handle: the PyTorch module of a trained model)."""

    files: dict[str, Path]
    recipe: Recipe
    before: Metrics | None
    steps: tuple[StepRecord, ...]
    model: ModelHandle
    source: str
    data: dict[str, Any]
    compressed: Compressed | None = None
    context: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        """The written model."""
        return self.files["model"]

    @property
    def record_path(self) -> Path:
        return self.files["record"]

    @property
    def after(self) -> Metrics:
        """The metrics of the written file."""
        if self.steps:
            return self.steps[-1].metrics
        assert self.before is not None
        return self.before

    def output(self, step: str) -> Any:
        """The result object of the step named ``step`` (``prune``, ``quantize``, ...)."""
        for planned, record in zip(self.recipe.steps, self.steps, strict=True):
            if planned.name == step:
                return record.output
        raise KeyError(step)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "model": self.path.name,
            "source_model": self.source,
            "data": self.data,
            "recipe": self.recipe.to_dict(),
            "description": self.recipe.describe(),
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict(),
            "steps": [step.to_dict() for step in self.steps],
            "files": {key: path.name for key, path in self.files.items()},
        }
        if self.context is not None:
            record["input"] = self.context
        if self.compressed is not None and self.before is not None:
            name = self.files["compressed"].name
            record["compression"] = self.compressed.to_dict(self.before, name)
        return record


def run(
    model: str | ModelHandle | Sequence[str | ModelHandle],
    recipe: Recipe | str | Path,
    *,
    data: str | Dataset,
    output: str | Path,
    target: str | Target | None = None,
    weights: str | Path | None = None,
    threads: int = 1,
    deferred: Deferred | None = None,
    progress: ProgressFn | None = None,
    compress: Compression | None = None,
    context: dict[str, Any] | None = None,
) -> Result:
    """Replay ``recipe`` on ``model`` and measure the file before and after every step.

    Every verb that writes a model is a recipe run here: ``train``, ``distill``, ``prune`` and
    ``quantize`` (a one-step recipe), ``apply`` and each search trial. The written model is the
    file :func:`apply_recipe` writes (same steps, same seed); beside it ``OUT.json`` records the
    input's metrics, each step's (with :func:`edgeopt.measure.profile_onnx`, on the data's test
    split and the target) and each stage's own record; ``OUT.pt`` holds the state dict when the
    written model is a PyTorch model's export (load it with ``--weights``), and ``OUT.edc`` its
    Deep Compression when asked. All are staged beside the output and renamed in together.

    Args:
        model: the model the recipe starts from: a spec or a handle; several for an ensemble
            of teachers (the recipe then starts with distill).
        recipe: a :class:`Recipe` or the path of its YAML file.
        data: the data spec or dataset (training, calibration and the measured test split).
        output: the ``.onnx`` file to write.
        target: the device profile of the estimates (latency, energy, fits), if any.
        weights: a state dict for a zoo or factory spec.
        threads: ONNX Runtime threads of the host latency.
        deferred: the quantize step when its config can only be made once the model before it
            exists (the search's mixed precision: a budget that is a fraction of the model's
            own int8 file); the result's recipe holds the config it made.
        progress: called after every training batch (training, distillation, QAT).
        compress: also write ``OUT.edc``, measure the ONNX it decodes to and compress the
            input alike, for comparison (a recipe that ends in fp32 only).
        context: what made the input model (a training result's record), kept in the record.

    Returns:
        The paths, the recipe, the metrics before and after each step and the stages' results.

    Raises:
        InputError: a bad model, data, recipe or target, an output that is not ``.onnx`` or
            would overwrite an input, a training-side step on an ONNX-only model; nothing is
            written then.

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

    resolved, out, dataset, handles = _resolve(model, data, recipe, output, weights)
    device = Target.from_name(target) if isinstance(target, str) else target
    is_fp32 = resolved.quantize_step is None and deferred is None
    files = {"model": out, "record": out.with_suffix(".json")}
    if is_fp32 and (resolved.steps or handles[0].module is not None):
        files["weights"] = out.with_suffix(".pt")
    if compress is not None:
        from edgeopt.export.compressed import INDEX_BITS
        from edgeopt.export.compressed import check_options

        if not is_fp32:
            raise InputError("compression (.edc) is of an fp32 model; the recipe quantizes it.")
        check_options(compress.bits_conv, compress.bits_fc, INDEX_BITS, "kmeans")
        files["compressed"] = out.with_suffix(".edc")
    inputs: dict[str, Any] = {"the weights": weights, "the recipe": None, "the data": None}
    for h in handles:
        inputs["the input model" if len(handles) == 1 else f"teacher {h.spec}"] = h.onnx_path
    if not isinstance(recipe, Recipe):
        inputs["the recipe"] = Path(recipe)
    for what, given in (("the data", data), ("the target", target)):
        if isinstance(given, str):
            inputs[what] = given
    refuse_overwrite(list(files.values()), inputs)

    def measure(path: Path) -> Metrics:
        return profile_onnx(path, data=dataset, target=device, threads=threads)

    made = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]
    plan = _Plan(resolved, files, dataset, measure, deferred, progress, compress, context)
    try:
        return plan.run(handles)
    except BaseException:
        for folder in made:  # deepest first: the folders this call made, if left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


@dataclass
class _Plan:
    """``run`` once its inputs are resolved and checked: the steps in a staging folder beside
    the output, each file measured, then every file renamed in."""

    recipe: Recipe
    files: dict[str, Path]
    dataset: Dataset
    measure: Callable[[Path], Metrics]
    deferred: Deferred | None
    progress: ProgressFn | None
    compress: Compression | None
    context: dict[str, Any] | None

    def run(self, handles: tuple[ModelHandle, ...]) -> Result:
        import os

        from edgeopt._io import write_json

        out = self.files["model"]
        out.parent.mkdir(parents=True, exist_ok=True)
        with scratch_dir(out.parent, "run-") as staging:
            folder = Path(staging)
            source = folder / "input.onnx"
            before = None
            if len(handles) == 1:
                before = self.measure(write_fp32(handles[0], self.dataset, source))
            handle, records, last = self.steps(handles, folder, source)
            staged = {key: folder / path.name for key, path in self.files.items()}
            os.replace(last, staged["model"])
            if "weights" in staged:
                import torch

                module = handle.require_torch("saving its weights")
                torch.save(module.state_dict(), staged["weights"])
            compressed = None
            if self.compress is not None:
                compressed = self.compressed(source, staged, folder)
            result = Result(
                files=self.files,
                recipe=self.recipe,
                before=before,
                steps=tuple(records),
                model=handle
                if handle.module is not None
                else replace(handle, spec=str(out), onnx_path=out),
                source=" + ".join(h.spec for h in handles),
                data=self.dataset.describe(),
                compressed=compressed,
                context=self.context,
            )
            write_json(staged["record"], result.to_dict())
            for key, path in self.files.items():
                os.replace(staged[key], path)
        return result

    def steps(
        self, handles: tuple[ModelHandle, ...], folder: Path, source: Path
    ) -> tuple[ModelHandle, list[StepRecord], Path]:
        """Apply every step (and the deferred one), measuring the file after each; return the
        model made, the records and the last file written."""
        steps, records = list(self.recipe.steps), []
        model: Any = handles if len(handles) > 1 else handles[0]
        last, index = source, 0
        while index < len(steps) or self.deferred is not None:
            if index == len(steps):  # the training steps are done: make the deferred config
                assert self.deferred is not None
                (folder / "deferred").mkdir()
                steps.append(Step(self.deferred.build(model, self.dataset, folder / "deferred")))
                self.recipe, self.deferred = Recipe(self.recipe.seed, tuple(steps)), None
            step = steps[index]
            if step.name == "quantize":
                last = folder / f"step-{index}.onnx"
                made = quantize_step(model, self.dataset, step, last, folder, self.progress)
                out = self.files["model"]
                made = replace(made, model=replace(made.model, spec=str(out), onnx_path=out))
                detail = {**made.to_dict(), "ranges_summary": _ranges_summary(made.ranges)}
            else:
                made = apply_step(model, self.dataset, step, self.progress)
                model = made.model
                last = write_fp32(model, self.dataset, folder / f"step-{index}.onnx")
                detail = made.to_dict()
            metrics = self.measure(last)
            records.append(StepRecord(step.label(), step.to_dict(), metrics, detail, made))
            index += 1
        if not steps:  # as is: the input's fp32 file ships
            return model, records, last
        if steps[-1].name == "quantize":
            model = records[-1].output.model
        return model, records, last

    def compressed(self, source: Path, staged: dict[str, Path], folder: Path) -> Compressed:
        """Write ``OUT.edc`` from the staged model, measure what it decodes to, and compress the
        input alike (its size, for comparison)."""
        from edgeopt.export.compressed import compress_onnx
        from edgeopt.export.compressed import decompress

        assert self.compress is not None
        bits = {"bits_conv": self.compress.bits_conv, "bits_fc": self.compress.bits_fc}
        report = compress_onnx(
            staged["model"], staged["compressed"], shared_path=folder / "shared.onnx", **bits
        )
        alike = compress_onnx(source, folder / "source.edc", **bits)
        decoded = self.measure(decompress(staged["compressed"], folder / "decoded.onnx"))
        final = self.files["compressed"]
        report = replace(
            report,
            source_path=self.files["model"],
            shared_path=final,
            compressed_path=final,
        )
        return Compressed(report, alike.compressed_bytes, decoded)


def _ranges_summary(ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The activation ranges in four numbers: how many, the lowest, the highest, the median
    width (the full table is in ``detail.ranges``)."""
    import numpy as np

    if not ranges:
        return {"tensors": 0}
    widths = np.array([hi - lo for lo, hi in ranges.values()])
    return {
        "tensors": len(ranges),
        "lowest": min(lo for lo, _ in ranges.values()),
        "highest": max(hi for _, hi in ranges.values()),
        "median_width": float(np.median(widths)),
    }


def save_trained(result: TrainedModel, data: str | Dataset, path: str | Path) -> TrainArtifacts:
    """Write a model trained in this process as :func:`run` writes a recipe with no step
    (``OUT.onnx``, ``OUT.pt``, ``OUT.json``), the training's own record under ``input``."""
    from edgeopt.training import TrainArtifacts
    from edgeopt.training import trained_paths

    trained_paths(path)
    result.model.require_torch("saving")
    done = run(result.model, Recipe(), data=data, output=path, context=result.to_dict())
    return TrainArtifacts(done.path, done.files["weights"], done.record_path, done.after.accuracy)  # type: ignore[arg-type]
