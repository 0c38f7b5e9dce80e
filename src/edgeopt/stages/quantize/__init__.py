"""``quantize(model, config, data=..., output=...)``: the one verb of quantization.

The config picks the method:

- :class:`PTQConfig`, static post-training quantization: the fp32 model (a PyTorch model is
  exported first) is pre-processed, optionally equalized (CLE), calibrated on the data's
  calibration split, optionally AdaRounded and bias-corrected, and written as int8 QDQ ONNX that
  ONNX Runtime runs with int8 kernels.
- :class:`QATConfig`, quantization-aware training (:mod:`edgeopt.stages.quantize.qat`): a
  PyTorch model fine-tuned with fake quantization, written by the same QDQ writer.
- :class:`MixedPrecisionConfig` (:mod:`edgeopt.stages.quantize.mixed`): per-layer weight bits
  under a flash budget, from a measured per-layer sensitivity.
- :class:`DynamicConfig`: weights int8, activations quantized at run time (for completeness).

Each config's stage is found in the registry (:func:`edgeopt.registry.get_stage`): the verb
checks the inputs, loads the fp32 model for the post-training stages, calls the stage's
``apply`` and stamps and writes what it returns; it knows no method by name.

``edgeopt quantize`` runs a one-step recipe of the config (:func:`edgeopt.pipeline.run`),
which adds what the CLI shows: both files profiled and one record written with the model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import ClassVar

import numpy as np

from edgeopt._io import refuse_overwrite
from edgeopt.config import Config
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.models import ModelHandle
from edgeopt.models import bind_data
from edgeopt.models import load_model
from edgeopt.models import onnx_input_shape
from edgeopt.registry import get_stage
from edgeopt.registry import register_stage
from edgeopt.stages._stage import ChoiceContext
from edgeopt.stages._stage import QuantizeOutput
from edgeopt.stages._stage import StageContext
from edgeopt.stages._stage import check_input_shape
from edgeopt.stages._stage import load_fp32
from edgeopt.stages.quantize.calibrate import CALIBRATION_METHODS
from edgeopt.stages.quantize.calibrate import check_calibration_data
from edgeopt.stages.quantize.legalize import legalize
from edgeopt.stages.quantize.mixed import MixedPlan
from edgeopt.stages.quantize.mixed import MixedPrecisionConfig
from edgeopt.stages.quantize.qat import QATConfig
from edgeopt.training import EpochRecord
from edgeopt.training import ProgressFn

__all__ = [
    "DynamicConfig",
    "MixedPrecisionConfig",
    "PTQConfig",
    "QATConfig",
    "QuantizeResult",
    "make_config",
    "quantize",
]


def _check_exclude(kind: str, exclude: Any) -> tuple[str, ...]:
    if isinstance(exclude, str) or not all(isinstance(name, str) for name in exclude):
        raise InputError(f"{kind}: exclude must be a list of node names.")
    return tuple(exclude)


@dataclass(frozen=True)
class PTQConfig(Config):
    """Static post-training quantization: int8 activations, int8 (or int4) weights, QDQ ONNX.

    ``calibration`` defaults to ``mse``: over 7 small models (cnn-s at two widths and
    LeNet-300-100 on digits; LeNet-5, LeNet-300-100 and cnn-s on Fashion-MNIST), per-channel and
    per-tensor, it had the smallest mean test-accuracy drop (0.017 pp; minmax 0.029, percentile
    0.043, entropy 0.14) and a worst case (0.14 pp) no larger than minmax's. It spends the 256
    levels where the samples are and clips only where that lowers the expected error; minmax
    spends levels on rare outliers and entropy (KL) clipped too hard on the smaller models.

    Fields: ``calibration`` (minmax | percentile | entropy | mse), ``percentile`` (kept by the
    percentile calibrator), ``is_per_channel`` (weight scales per output channel),
    ``bits`` (8, or 4 for 4-bit weights with 8-bit activations), ``is_equalized`` (cross-layer
    equalization), ``is_bias_corrected`` (empirical bias correction), ``is_adarounded``
    (AdaRound), ``exclude`` (node names kept in float).
    """

    kind: ClassVar[str] = "quantize.ptq"
    calibration: str = "mse"
    percentile: float = 99.99
    is_per_channel: bool = True
    bits: int = 8
    is_equalized: bool = False
    is_bias_corrected: bool = False
    is_adarounded: bool = False
    exclude: tuple[str, ...] = ()

    def label(self) -> str:
        return f"ptq{self.bits}"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", _check_exclude(self.kind, self.exclude))
        if isinstance(self.bits, bool) or self.bits not in (4, 8):
            raise InputError(f"{self.kind}: bits must be 4 or 8, got {self.bits}.")
        if self.calibration not in CALIBRATION_METHODS:
            known = ", ".join(CALIBRATION_METHODS)
            raise InputError(
                f"{self.kind}: calibration must be one of {known}, got {self.calibration!r}."
            )
        if not 0.0 < self.percentile <= 100.0:
            raise InputError(f"{self.kind}: percentile must be in (0, 100], got {self.percentile}.")

    def describe(self) -> str:
        """One line for the model's history."""
        parts = [
            f"calibration={self.calibration}",
            f"bits={self.bits}",
            "per-channel" if self.is_per_channel else "per-tensor",
        ]
        parts += [
            name
            for flag, name in (
                (self.is_equalized, "cle"),
                (self.is_bias_corrected, "bias-correction"),
                (self.is_adarounded, "adaround"),
            )
            if flag
        ]
        return f"{self.kind}({', '.join(parts)})"


@dataclass(frozen=True)
class DynamicConfig(Config):
    """Dynamic quantization (ONNX Runtime's ``quantize_dynamic``): int8 weights, activations
    quantized per inference from their observed range; needs no calibration data.

    Fields: ``is_per_channel`` (weight scales per output channel), ``exclude`` (node names kept
    in float).
    """

    kind: ClassVar[str] = "quantize.dynamic"
    is_calibrated: ClassVar[bool] = False
    is_per_channel: bool = False
    exclude: tuple[str, ...] = ()

    def label(self) -> str:
        return "dynamic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", _check_exclude(self.kind, self.exclude))

    def describe(self) -> str:
        return f"{self.kind}({'per-channel' if self.is_per_channel else 'per-tensor'})"


QuantizeConfig = PTQConfig | DynamicConfig | QATConfig | MixedPrecisionConfig


@dataclass(frozen=True)
class QuantizeResult:
    """The written model, what stayed in float (named), the activation ranges, the config.

    QAT adds ``qat_accuracy`` (the fake-quantized PyTorch model's test accuracy, the number
    the exported file must match) and the per-epoch ``history``; mixed precision adds the
    ``plan`` (sensitivity table and chosen bits). ``notes`` says what was done to a file from
    elsewhere before quantizing it (an IR or opset upgrade, input dimensions bound:
    :mod:`edgeopt.stages.quantize.legalize`), in memory: the input file stays as it is.
    """

    model: ModelHandle
    float_nodes: tuple[str, ...]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    config: QuantizeConfig = field(default_factory=PTQConfig)
    qat_accuracy: float | None = None
    history: tuple[EpochRecord, ...] = ()
    plan: MixedPlan | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": str(self.model.onnx_path),
            "config": self.config.to_dict(),
            "float_nodes": list(self.float_nodes),
            "ranges": {name: [lo, hi] for name, (lo, hi) in self.ranges.items()},
        }
        if self.qat_accuracy is not None:  # quantization-aware training: the PyTorch side
            out["qat"] = {
                "test_accuracy_pytorch": self.qat_accuracy,
                "history": [vars(record) for record in self.history],
            }
        if self.plan is not None:
            out["mixed"] = self.plan.to_dict()
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _ptq(
    fp32: Any, config: PTQConfig, x: np.ndarray, source: str = "the model"
) -> tuple[Any, list[str], dict[str, Any]]:
    from edgeopt.stages.quantize.calibrate import collect_stats
    from edgeopt.stages.quantize.calibrate import ranges_from_stats
    from edgeopt.stages.quantize.equalize import adaround
    from edgeopt.stages.quantize.equalize import correct_bias
    from edgeopt.stages.quantize.equalize import equalize
    from edgeopt.stages.quantize.qdq import prepare
    from edgeopt.stages.quantize.qdq import write_qdq
    from edgeopt.stages.quantize.qdq import written_weight_scales

    prepared = prepare(fp32, source=source)
    names = {node.name for node in prepared.graph.node}
    missing = [name for name in config.exclude if name not in names]
    if missing:
        raise InputError(
            f"{config.kind}: exclude names node {missing[0]!r}, which is not in the model."
        )
    if config.is_equalized:
        prepared = equalize(prepared)
    stats = collect_stats(prepared, x)
    ranges = ranges_from_stats(
        prepared, stats, method=config.calibration, percentile=config.percentile
    )
    options: dict[str, Any] = {
        "per_channel": config.is_per_channel,
        "weight_bits": config.bits,
        "exclude_nodes": config.exclude,
    }
    scales = None
    if config.is_adarounded:
        dry_run, _ = write_qdq(prepared, ranges, source=source, **options)
        rounded = adaround(
            prepared,
            x,
            bits=config.bits,
            per_channel=config.is_per_channel,
            scales=written_weight_scales(dry_run),
            exclude_nodes=config.exclude,
        )
        prepared, scales = rounded.model, rounded.scales
    if config.is_bias_corrected:
        prepared = correct_bias(prepared, ranges, x, weight_scales=scales, **options)
    quantized, float_nodes = write_qdq(
        prepared, ranges, weight_scales=scales, source=source, **options
    )
    return quantized, float_nodes, ranges


def _dynamic(
    fp32: Any, config: DynamicConfig, scratch: Path, source: str = "the model"
) -> tuple[Any, list[str]]:
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic

    from edgeopt.stages.quantize.qdq import ort_scratch
    from edgeopt.stages.quantize.qdq import prepare

    prepared = prepare(fp32, source=source)
    names = {node.name for node in prepared.graph.node}
    missing = [name for name in config.exclude if name not in names]
    if missing:
        raise InputError(
            f"{config.kind}: exclude names node {missing[0]!r}, which is not in the model."
        )
    prepared_path, target = scratch.resolve() / "prepared.onnx", scratch.resolve() / "dynamic.onnx"
    onnx.save(prepared, str(prepared_path))
    try:
        with ort_scratch("edgeopt-dynamic-"):  # it may write files into the working directory
            quantize_dynamic(
                str(prepared_path),
                str(target),
                per_channel=config.is_per_channel,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(config.exclude),
            )
    except Exception as exc:  # ONNX Runtime's quantizer raises ValueError, KeyError, ...
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(
            f"{source}: ONNX Runtime's dynamic quantization fails ({detail})."
        ) from None
    quantized = onnx.load(str(target))
    after = {(node.name, node.op_type) for node in quantized.graph.node}
    inits = {init.name for init in prepared.graph.initializer}
    float_nodes = [
        f"{node.name} ({node.op_type})"
        for node in prepared.graph.node
        if (node.name, node.op_type) in after and any(n and n not in inits for n in node.input)
    ]
    return quantized, float_nodes


def check_output(output: Path, handle: ModelHandle) -> None:
    if output.suffix != ".onnx":
        raise InputError(f"{output}: the output of quantize must end in .onnx.")
    refuse_overwrite([output, output.with_suffix(".json")], {"the input model": handle.onnx_path})


#: The command line's option for each config field it can set, in the order they are checked.
OPTION_FLAGS = {
    "max_flash_bytes": "--max-flash",
    "epochs": "--epochs",
    "learning_rate": "--lr",
    "calibration": "--calibration",
    "is_equalized": "--equalize",
    "is_bias_corrected": "--bias-correction",
    "is_adarounded": "--adaround",
    "bits": "--bits",
    "is_per_channel": "--per-tensor",
}
#: The methods offered first, in this order; other registered ones follow.
_FIRST_METHODS = ("ptq", "qat", "dynamic")


def methods() -> tuple[str, ...]:
    """The ``--method`` names: every registered quantization stage but mixed precision (which
    is PTQ with a flash budget, ``--max-flash``)."""
    from edgeopt.registry import list_stages

    names = [k.removeprefix("quantize.") for k in list_stages() if k.startswith("quantize.")]
    names = [name for name in names if name != "mixed"]
    first = [name for name in _FIRST_METHODS if name in names]
    return (*first, *(name for name in names if name not in first))


def make_config(
    method: str = "ptq",
    *,
    calibration: str | None = None,
    is_per_channel: bool | None = None,
    bits: int | None = None,
    max_flash_bytes: int | None = None,
    epochs: int | None = None,
    learning_rate: float | None = None,
    is_equalized: bool = False,
    is_bias_corrected: bool = False,
    is_adarounded: bool = False,
) -> QuantizeConfig:
    """The config the command line's options describe; options left None keep the defaults.

    The method names a registered stage; each option sets the config field of its name, and
    one the config has no field for is refused rather than ignored. ``max_flash_bytes`` turns
    PTQ into mixed precision.

    Raises:
        InputError: an unknown method, bits outside {4, 8}, or an option the method does not
            take (named).

    Example:
        >>> make_config("ptq", max_flash_bytes=20_000).kind
        'quantize.mixed'
    """
    import dataclasses

    known = methods()
    if method not in known:
        raise InputError(f"--method must be one of {', '.join(known)}, got {method!r}.")
    if bits is not None and (isinstance(bits, bool) or bits not in (4, 8)):
        raise InputError(f"--bits must be 4 or 8, got {bits}.")
    is_mixed = max_flash_bytes is not None and method == "ptq"
    config_class = get_stage("quantize.mixed" if is_mixed else f"quantize.{method}").config
    given = {
        "max_flash_bytes": max_flash_bytes,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "calibration": calibration,
        "is_equalized": is_equalized or None,
        "is_bias_corrected": is_bias_corrected or None,
        "is_adarounded": is_adarounded or None,
        "bits": bits,
        "is_per_channel": is_per_channel,
    }
    fields = {f.name for f in dataclasses.fields(config_class)}
    what = "mixed precision (--max-flash)" if is_mixed else method
    for name, value in given.items():
        if value is not None and name not in fields:
            raise InputError(f"{OPTION_FLAGS[name]} does not apply to {what}.")
    return config_class(**{name: value for name, value in given.items() if value is not None})


def _check_bits(config: QuantizeConfig) -> None:
    bits = getattr(config, "bits", 8)
    if isinstance(bits, bool) or bits not in (4, 8):
        raise InputError(f"{config.kind}: bits must be 4 or 8, got {bits}.")


def quantize_stage(config: Any) -> Any:
    """The registered quantization stage of ``config`` (refusing any other kind of config)."""
    kind = getattr(config, "kind", "")
    if not isinstance(kind, str) or not kind.startswith("quantize."):
        raise InputError(f"quantize takes a quantization config, not {type(config).__name__}.")
    return get_stage(kind)


def check_inputs(
    handle: ModelHandle, config: QuantizeConfig, dataset: Dataset | None
) -> np.ndarray | None:
    """Check what the method needs before any work: a PyTorch model for a training stage (QAT),
    data and a usable calibration split for every method that calibrates; return the
    calibration inputs."""
    stage = quantize_stage(config)
    _check_bits(config)
    stage.require_torch(handle)
    if not getattr(config, "is_calibrated", True):
        return None
    if dataset is None:
        raise InputError(f"{config.kind} needs data to calibrate on; give a data spec.")
    check_input_shape(handle.spec, handle.input_shape, dataset)
    x = dataset.arrays("calib")[0]
    check_calibration_data(x, source=f"the calibration split of {dataset.spec}")
    return x


def quantize_into(
    handle: ModelHandle,
    config: QuantizeConfig,
    dataset: Dataset | None,
    out: Path,
    scratch: Path,
    progress: ProgressFn | None = None,
) -> tuple[QuantizeResult, Path]:
    """Quantize into ``out`` with the stage registered for ``config``; the fp32 ONNX file it
    started from is returned beside the result (the input file itself, or an export inside
    ``scratch``)."""
    import onnx

    from edgeopt.export.onnx import save_onnx

    stage = quantize_stage(config)
    x = check_inputs(handle, config, dataset)
    history_of_model = handle.history + (config.describe(),)
    props: dict[str, str] = {}
    fp32: Any = None
    fp32_path: Path | None = None

    def stamp(model: Any, float_nodes: list[str]) -> None:
        """Put the history, the config and the float nodes into the file's metadata."""
        props.update({p.key: p.value for p in fp32.metadata_props})
        if dataset is not None:  # the input contract: what the quantized file is fed
            props.setdefault("edgeopt.normalization", json.dumps(dataset.normalization.to_dict()))
        props["edgeopt.history"] = json.dumps(list(history_of_model))
        props["edgeopt.quantize"] = json.dumps(config.to_dict())
        props["edgeopt.float_nodes"] = json.dumps(float_nodes)
        del model.metadata_props[:]
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value

    notes: tuple[str, ...] = ()
    if not stage.is_torch_only:  # a training stage exports its own fp32 file
        fp32, fp32_path = load_fp32(handle, dataset, scratch)
        sample_shape = dataset.input_shape if dataset is not None else None
        fp32, notes = legalize(fp32, handle.spec, sample_shape)  # a file from elsewhere
    ctx = StageContext(
        handle, dataset, scratch, progress=progress, calibration=x, fp32=fp32, stamp=stamp
    )
    made: QuantizeOutput = stage.apply(ctx, config)
    if fp32 is None:
        assert made.fp32_path is not None
        fp32_path = made.fp32_path
        fp32 = onnx.load(str(fp32_path))
    assert fp32_path is not None
    shape = onnx_input_shape(fp32)
    stamp(made.quantized, made.float_nodes)
    save_onnx(made.quantized, out)
    written = ModelHandle(
        name=handle.name,
        spec=str(out),
        input_shape=handle.input_shape or shape,
        onnx_path=out,
        num_classes=handle.num_classes,
        history=history_of_model,
        metadata=props,
    )
    result = QuantizeResult(
        model=written,
        float_nodes=tuple(made.float_nodes),
        ranges={name: (float(lo), float(hi)) for name, (lo, hi) in made.ranges.items()},
        config=config,
        qat_accuracy=made.qat_accuracy,
        history=made.history,
        plan=made.plan,
        notes=notes,
    )
    return result, fp32_path


#: The calibrators an ONNX-only search draws, in a fixed order (an Optuna categorical must not
#: change within a study): the default (the lowest mean drop measured, see PTQConfig) first.
SEARCHED_CALIBRATIONS = ("mse", "minmax", "percentile", "entropy")


def _ptq_choice(bits: int) -> Callable[[ChoiceContext], PTQConfig]:
    """The search's ``ptq{bits}`` choice. For a PyTorch model it is PTQ's defaults (its space
    has students, pruning and QAT to explore, and its draws stay as they were); for an
    ONNX-only model, whose space is post-training quantization alone, the trial also draws
    the calibrator, per-channel or per-tensor weight scales, cross-layer equalization and
    bias correction (the same parameter names for 8 and 4 bits), so trials differ."""

    def choose(choice: ChoiceContext) -> PTQConfig:
        if choice.is_torch:
            return PTQConfig(bits=bits)
        trial = choice.trial
        return PTQConfig(
            bits=bits,
            calibration=trial.suggest_categorical("ptq_calibration", SEARCHED_CALIBRATIONS),
            is_per_channel=trial.suggest_categorical("ptq_per_channel", (True, False)),
            is_equalized=trial.suggest_categorical("ptq_cle", (False, True)),
            is_bias_corrected=trial.suggest_categorical("ptq_bias_correction", (False, True)),
        )

    return choose


@register_stage(PTQConfig, choices={"ptq8": _ptq_choice(8), "ptq4": _ptq_choice(4)})
def apply_ptq(ctx: StageContext, config: PTQConfig) -> QuantizeOutput:
    """Static post-training quantization of the fp32 model on the calibration inputs."""
    assert ctx.calibration is not None and ctx.fp32 is not None
    quantized, float_nodes, ranges = _ptq(ctx.fp32, config, ctx.calibration, ctx.handle.spec)
    return QuantizeOutput(quantized, float_nodes, ranges)


@register_stage(DynamicConfig)
def apply_dynamic(ctx: StageContext, config: DynamicConfig) -> QuantizeOutput:
    """ONNX Runtime's dynamic quantization of the fp32 model (no calibration)."""
    quantized, float_nodes = _dynamic(ctx.fp32, config, ctx.scratch, ctx.handle.spec)
    return QuantizeOutput(quantized, float_nodes)


def quantize(
    model: str | ModelHandle,
    config: QuantizeConfig | None = None,
    *,
    data: str | Dataset | None = None,
    output: str | Path,
    progress: ProgressFn | None = None,
) -> QuantizeResult:
    """Quantize a model to an int8 (or int4-weight, or mixed-precision) QDQ ONNX file.

    Args:
        model: a model spec or handle; a PyTorch model is exported to fp32 ONNX first, an ONNX
            file is used as it is (and never modified). QAT needs a PyTorch model.
        config: :class:`PTQConfig` (the default), :class:`QATConfig`,
            :class:`MixedPrecisionConfig` or :class:`DynamicConfig`.
        data: the dataset; static methods calibrate on its calibration split, QAT trains on
            its train split, mixed precision measures sensitivity on its validation split.
        output: the ``.onnx`` file to write, atomically; nothing is written on any error.
        progress: QAT calls it after every batch, for progress bars.

    Returns:
        The written model's handle, the nodes left in float (``"name (OpType)"``), the
        activation ranges and the config; QAT's PyTorch accuracy and history; the mixed
        precision plan.

    Raises:
        InputError: a bad model or data spec, bits outside {4, 8}, no data for a static
            method, a calibration split with fewer than two samples or with NaN / inf, an
            ONNX-only model for QAT, an excluded node that does not exist, an output that is
            not ``.onnx`` or is the input file.
        BudgetError: a flash budget below the smallest mixed-precision file.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "int8.onnx"
        >>> result = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=out)
        >>> result.model.onnx_path == out, result.float_nodes
        (True, ())
    """
    config = config or PTQConfig()
    out = Path(output)
    dataset = load_data(data) if data is not None else None
    handle = load_model(model, data=dataset)
    dataset = bind_data(handle, dataset) if dataset is not None else None
    check_output(out, handle)
    with tempfile.TemporaryDirectory(prefix="edgeopt-quantize-") as scratch:
        result, _ = quantize_into(handle, config, dataset, out, Path(scratch), progress)
    return result
