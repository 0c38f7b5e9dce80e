"""Load a model from a spec into a :class:`ModelHandle`, the one type every command takes.

Specs: an ``.onnx`` file (external data beside it is found), a ``.tflite`` file (imported as
ONNX: :mod:`edgeopt.models.tflite`), a saved ``torch.export`` program (``.pt2``),
``package.module:factory`` plus a state-dict file, ``zoo:NAME?width=&classes=&input=``, or
``torchvision:NAME`` / ``timm:NAME`` (:mod:`.hub`).
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.errors import InputError
from edgeopt.spec import parse_spec

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from edgeopt.data import Dataset

__all__ = ["ModelHandle", "bind_data", "load_model", "onnx_input_shape", "read_onnx"]


@dataclass(frozen=True)
class ModelHandle:
    """A model on the training side (``module``) or the deployment side (``onnx_path``).

    ``input_shape`` excludes the batch dimension; ``history`` lists what made the model, in
    order (``zoo:cnn-s``, ``train(epochs=5)``, ...).
    """

    name: str
    spec: str
    input_shape: tuple[int, ...] | None
    module: nn.Module | None = None
    onnx_path: Path | None = None
    num_classes: int | None = None
    history: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    normalize: str | None = None  # the spec's ?normalize= (auto | none | MEAN,STD), if given

    @property
    def is_torch(self) -> bool:
        return self.module is not None

    def require_torch(self, step: str) -> nn.Module:
        """The PyTorch module, or an InputError saying ``step`` needs one."""
        if self.module is None:
            raise InputError(
                f"{self.spec}: {step} needs a PyTorch model (zoo:NAME, module:factory with "
                "--weights, or a .pt2 program), not an ONNX file."
            )
        return self.module

    def require_input_shape(self) -> tuple[int, ...]:
        if self.input_shape is None:
            raise InputError(
                f"{self.spec}: the input shape is unknown; add ?input=CxHxW to the spec or give "
                "--data."
            )
        return self.input_shape

    def with_module(
        self, module: nn.Module, step: str, *, normalization: dict[str, object] | None = None
    ) -> ModelHandle:
        """A new handle holding ``module`` with ``step`` appended to the history; a model
        trained on normalized data carries that ``normalization`` (its input contract, which
        every export of it stamps)."""
        metadata = dict(self.metadata)
        if normalization is not None:
            import json

            metadata["edgeopt.normalization"] = json.dumps(normalization)
        return replace(
            self, module=module, onnx_path=None, history=self.history + (step,), metadata=metadata
        )


def read_onnx(path: Path, *, is_one_input_required: bool = True) -> onnx.ModelProto:
    """Load and check an ONNX file (external data beside it included), as one sentence on error.

    Compression and accuracy feed the data's samples to the model's one input, so a model with
    none or several is refused unless ``is_one_input_required`` is off (``profile`` without data
    makes every input: :mod:`edgeopt.feed`).
    """
    import onnx

    if not path.is_file():
        raise InputError(f"{path}: model file does not exist.")
    try:
        model = onnx.load(str(path), load_external_data=True)
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a valid ONNX model ({first[:160]}).") from None
    if len(model.graph.input) == 0 and is_one_input_required:
        raise InputError(f"{path}: the ONNX graph has no inputs.")
    for init in model.graph.initializer:
        _check_tensor(init, path)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                _check_tensor(attribute.t, path)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 and is_one_input_required:
        names = ", ".join(repr(name) for name in inputs[:4])
        raise InputError(
            f"{path}: the model has {len(inputs)} inputs ({names}); edgeopt measures and "
            "compresses models with one input, the data's samples."
        )
    return model


#: ONNX element types stored several to a byte (their raw length is not count x itemsize).
_PACKED_TYPES = frozenset(
    {"UINT4", "INT4", "FLOAT4E2M1", "UINT2", "INT2", "FLOAT6E2M3", "FLOAT6E3M2"}
)


def _check_tensor(tensor: onnx.TensorProto, path: Path) -> None:
    """Refuse a constant whose element type is unknown or whose raw bytes do not fill its
    shape (the checker lets both through; reading it later was a KeyError or ValueError)."""
    import onnx

    name = tensor.name[:80]
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except (KeyError, ValueError, TypeError):
        raise InputError(
            f"{path}: tensor {name!r} has element type {tensor.data_type}, which ONNX does not "
            "define."
        ) from None
    if any(dim < 0 for dim in tensor.dims):
        raise InputError(f"{path}: tensor {name!r} has a negative dimension {list(tensor.dims)}.")
    # Sub-byte types (int4, uint4, float4, int2, ...) pack several elements per byte.
    packed = onnx.TensorProto.DataType.Name(tensor.data_type) in _PACKED_TYPES
    if tensor.HasField("raw_data") and not packed and dtype.kind != "O":
        count = 1
        for dim in tensor.dims:
            count *= dim
        if count * dtype.itemsize != len(tensor.raw_data):
            raise InputError(
                f"{path}: tensor {name!r} holds {len(tensor.raw_data):,} bytes, not the "
                f"{count * dtype.itemsize:,} its shape {list(tensor.dims)} needs."
            )


def onnx_input_shape(model: onnx.ModelProto) -> tuple[int, ...] | None:
    """Shape of the first graph input without the batch dimension (None where symbolic)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:])
    return None if any(d <= 0 for d in shape) else shape


def _onnx_num_classes(model: onnx.ModelProto) -> int | None:
    if not model.graph.output:
        return None
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value"):
        return int(dims[1].dim_value)
    return None


def _load_onnx(spec: str, path: Path, *, is_one_input_required: bool) -> ModelHandle:
    model = read_onnx(path, is_one_input_required=is_one_input_required)
    return ModelHandle(
        name=path.stem,
        spec=spec,
        input_shape=onnx_input_shape(model),
        onnx_path=path,
        num_classes=_onnx_num_classes(model),
        history=(f"onnx:{path.name}",),
        metadata={p.key: p.value for p in model.metadata_props},
    )


def _load_tflite(spec: str, path: Path) -> ModelHandle:
    """A ``.tflite`` file through its ONNX import (a private temporary file, removed at exit)."""
    from edgeopt.models.tflite import import_tflite

    model, onnx_path = import_tflite(path)
    return ModelHandle(
        name=path.stem,
        spec=spec,
        input_shape=onnx_input_shape(model),
        onnx_path=onnx_path,
        num_classes=_onnx_num_classes(model),
        history=(f"tflite:{path.name}",),
        metadata={p.key: p.value for p in model.metadata_props},
    )


def _load_program(spec: str, path: Path) -> ModelHandle:
    import torch

    if not path.is_file():
        raise InputError(f"{path}: model file does not exist.")
    import logging
    import zipfile

    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a saved torch.export program (not a zip archive).")
    # torch.export.load logs a damaged archive's traceback as a warning before it fails or
    # returns nothing; the user gets the one sentence below instead.
    logger = logging.getLogger("torch.export")
    was_disabled, logger.disabled = logger.disabled, True
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # zip / pickle / version errors
        kind = type(exc).__name__
        raise InputError(f"{path}: not a saved torch.export program ({kind}).") from None
    finally:
        logger.disabled = was_disabled
    placeholders = [
        node for node in program.graph.nodes if node.op == "placeholder" and "val" in node.meta
    ]
    user_inputs = program.graph_signature.user_inputs
    shapes = [tuple(n.meta["val"].shape) for n in placeholders if n.name in user_inputs]
    input_shape = tuple(int(d) for d in shapes[0][1:]) if shapes else None
    return ModelHandle(
        name=path.stem,
        spec=spec,
        input_shape=input_shape,
        module=program.module(),
        history=(f"pt2:{path.name}",),
    )


def _load_state_dict(
    module: nn.Module, weights: Path, spec: str, input_shape: tuple[int, ...] | None
) -> None:
    """Load a state dict in place; a channel-pruned one first shrinks the module to its counts.

    Channel pruning (``edgeopt prune --kind channel``) removes output channels, so its state
    dict no longer fits the architecture the spec builds; with the input shape known, the same
    channels are removed from the fresh module through Torch-Pruning's dependency graph first.
    """
    import torch

    if not weights.is_file():
        raise InputError(f"{weights}: weights file does not exist.")
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler of a damaged file raises anything (IndexError, ...)
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise InputError(f"{weights}: not a PyTorch state dict ({first}).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{weights}: holds a {type(state).__name__}, not a state dict.")
    if input_shape is not None:
        from edgeopt.models.layers import match_channels

        try:
            match_channels(module, state, torch.zeros((1, *input_shape)))
        except Exception:  # noqa: BLE001, S110  (a graph it cannot follow: the load says why)
            pass
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:  # a module's _load_from_state_dict raises either
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"{weights}: does not match {spec} ({detail}).") from None


def _load_factory(spec: str, weights: Path | None) -> ModelHandle:
    from torch import nn

    parsed = parse_spec(spec)
    parsed.check_keys({"input"})
    module_name, factory_name = parsed.scheme, parsed.body
    # The user's module is found where the user is, as `python -m` would: the console script's
    # own folder is first on sys.path, not the current directory. (This runs the user's code:
    # the README says so.)
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"{spec}: cannot import {module_name!r} ({exc}).") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise InputError(f"{spec}: {module_name!r} has no callable {factory_name!r}.")
    try:
        model = factory()
    except Exception as exc:  # the user's code: its failure is bad input, named
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"{spec}: the factory raised {type(exc).__name__} ({detail}).") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec}: the factory returned a {type(model).__name__}, not a module.")
    input_shape = parsed.pop_shape("input", None)
    if weights is not None:
        _load_state_dict(model, weights, spec, input_shape)
    return ModelHandle(
        name=factory_name,
        spec=spec,
        input_shape=input_shape,
        module=model.eval(),
        history=(spec,) + ((f"weights:{weights.name}",) if weights else ()),
    )


def _load_zoo(spec: str, weights: Path | None, data: Dataset | None) -> ModelHandle:
    from edgeopt.models.zoo import build_zoo_model
    from edgeopt.models.zoo import zoo_info

    parsed = parse_spec(spec)
    parsed.check_keys({"width", "classes", "input", "seed"})
    info = zoo_info(parsed.body)
    if not info.has_classes and (data is not None or "classes" in parsed.params):
        raise InputError(
            f"{spec}: {parsed.body} reconstructs its input instead of predicting classes, so "
            "classes, training and accuracy do not apply to it."
        )
    # Knobs the spec leaves out come from the data, then from the architecture's defaults.
    classes = parsed.pop_int("classes", data.num_classes if data is not None else 10)
    default_shape = data.input_shape if data is not None else info.default_input
    input_shape = parsed.pop_shape("input", default_shape)
    width = parsed.pop_float("width", 1.0)
    module = build_zoo_model(
        parsed.body,
        width=width,
        classes=classes,
        input_shape=input_shape,
        seed=parsed.pop_int("seed", 0),
    )
    if weights is not None:
        _load_state_dict(module, weights, spec, input_shape)
    return ModelHandle(
        name=parsed.body,
        spec=spec,
        input_shape=input_shape,
        module=module.eval(),
        num_classes=classes if info.has_classes else None,
        history=(spec,) + ((f"weights:{weights.name}",) if weights else ()),
    )


def _load_hub(spec: str, weights: Path | None, data: Dataset | None) -> ModelHandle:
    from edgeopt.models.hub import build_hub

    built = build_hub(spec, data)
    if weights is not None:
        _load_state_dict(built.module, weights, spec, built.input_shape)
    return ModelHandle(
        name=built.name,
        spec=spec,
        input_shape=built.input_shape,
        module=built.module.eval(),
        num_classes=built.num_classes,
        history=(spec,) + ((f"weights:{weights.name}",) if weights else ()),
    )


def load_model(
    spec: str | Path | ModelHandle,
    *,
    weights: str | Path | None = None,
    data: Dataset | None = None,
    is_one_input_required: bool = True,
) -> ModelHandle:
    """Load a model from any supported spec.

    Args:
        spec: ``path.onnx``, ``path.tflite``, ``path.pt2``,
            ``package.module:factory[?input=CxHxW]`` or
            ``zoo:NAME[?width=W&classes=K&input=CxHxW&seed=S]`` (``seed`` picks the initial
            weights); a handle is returned unchanged.
        weights: a PyTorch state dict for a factory or zoo model, loaded with
            ``weights_only=True`` (no code in the file is run).
        data: when given, a zoo model's class count and input shape default to the data's.
        is_one_input_required: refuse an ONNX file with no input or several (off for
            ``profile`` without data, which makes every input).

    Returns:
        The model handle.

    Raises:
        InputError: missing or corrupt file, unknown zoo name, bad knob, weights that do not match.

    Example:
        >>> handle = load_model("zoo:lenet5")
        >>> handle.input_shape, handle.num_classes
        ((1, 28, 28), 10)
    """
    if isinstance(spec, ModelHandle):
        return spec
    spec, normalize = _pop_normalize(str(spec))
    handle = _load(spec, weights, data, is_one_input_required)
    return replace(handle, normalize=normalize) if normalize else handle


def _load(
    spec: str, weights: str | Path | None, data: Dataset | None, is_one_input_required: bool
) -> ModelHandle:
    weights_path = Path(weights) if weights is not None else None
    lowered = spec.lower().split("?")[0]
    if weights_path is not None and lowered.endswith((".onnx", ".pt2", ".ep", ".tflite")):
        raise InputError(f"{spec}: --weights applies to zoo and module:factory models only.")
    if lowered.endswith(".onnx"):
        handle = _load_onnx(spec, Path(spec), is_one_input_required=is_one_input_required)
    elif lowered.endswith((".pt2", ".ep")):
        handle = _load_program(spec, Path(spec))
    elif lowered.endswith(".tflite"):
        handle = _load_tflite(spec, Path(spec))
    elif spec.startswith("zoo:"):
        return _load_zoo(spec, weights_path, data)
    elif spec.partition(":")[0] in ("torchvision", "timm"):
        return _load_hub(spec, weights_path, data)
    elif ":" in spec:
        handle = _load_factory(spec, weights_path)
    else:
        raise InputError(
            f"{spec!r} is not a model spec: give a .onnx, .tflite or .pt2 file, zoo:NAME, "
            "torchvision:NAME, timm:NAME, or package.module:factory."
        )
    if data is not None and handle.input_shape is None:
        handle = replace(handle, input_shape=data.input_shape)
    return handle


def _pop_normalize(spec: str) -> tuple[str, str | None]:
    """Take ``normalize=...`` out of a spec's query (any kind of spec may carry it).

    Raises:
        InputError: a value that is not ``auto``, ``none`` or ``MEAN,STD`` with STD above 0.
    """
    from urllib.parse import parse_qsl

    head, sep, query = spec.partition("?")
    if not sep:
        return spec, None
    pairs = parse_qsl(query, keep_blank_values=True)
    found = [value for key, value in pairs if key == "normalize"]
    if not found:
        return spec, None
    value = found[-1].strip().lower()
    if value not in ("auto", "none"):
        try:
            mean, std = (float(part) for part in value.split(","))
        except ValueError:
            mean, std = 0.0, 0.0
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise InputError(
                f"{spec}: normalize must be auto, none or MEAN,STD (for example 127.5,127.5), "
                f"got {found[-1]!r}."
            )
    rest = "&".join(f"{key}={val}" for key, val in pairs if key != "normalize")
    return head + (f"?{rest}" if rest else ""), value


def bind_data(handle: ModelHandle, dataset: Dataset) -> Dataset:
    """The data as this model is fed: the input contract, decided once where a model and its
    data meet (issue 14).

    A model is fed exactly what the data holds unless it says otherwise: ``?normalize=`` in its
    spec (``auto``: the train split's mean and std; ``none``; ``MEAN,STD``), else the
    normalization edgeopt stamped into the ONNX files it writes (``edgeopt.normalization``),
    else, for a PyTorch model, the train split's (edgeopt trains it on that and stamps it into
    every export), else the raw values: an ONNX or ``.pt2`` file from elsewhere expects what
    it was trained on, which edgeopt cannot know. A dataset already bound keeps its input.
    """
    import json

    from edgeopt.data.dataset import FITTED
    from edgeopt.data.dataset import Normalization

    if dataset.input_rule != FITTED:
        return dataset
    fitted, raw_dtype = dataset.normalization, dataset.normalization.raw_dtype
    request = handle.normalize
    if request == "auto":
        return dataset.with_input(fitted, f"{FITTED} (?normalize=auto)")
    if request == "none":
        return dataset.with_input(Normalization((0.0,), (1.0,), raw_dtype), "as the data gives it")
    if request:
        mean, std = (float(part) for part in request.split(","))
        rule = f"(x - {mean:g}) / {std:g} (?normalize={request})"
        return dataset.with_input(Normalization((mean,), (std,), raw_dtype), rule)
    stamped = handle.metadata.get("edgeopt.normalization")
    if stamped:
        try:
            raw = json.loads(stamped)
            own = Normalization(
                tuple(float(v) for v in raw["mean"]),
                tuple(float(v) for v in raw["std"]),
                str(raw.get("raw_dtype", raw_dtype)),
            )
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"{handle.spec}: its edgeopt.normalization metadata is not mean / std lists."
            ) from None
        if any(not math.isfinite(v) for v in own.mean + own.std) or min(own.std) <= 0:
            raise InputError(f"{handle.spec}: its edgeopt.normalization has a std of 0 or less.")
        return dataset.with_input(own, "normalized as the model's metadata says")
    if handle.module is not None:
        return dataset
    note = "as the data gives it (the file carries no normalization; ?normalize=auto fits one)"
    return dataset.with_input(Normalization((0.0,), (1.0,), raw_dtype), note)
