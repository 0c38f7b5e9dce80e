"""torchvision and timm architectures as model specs (issue 14, item 1b).

``torchvision:mobilenet_v3_small?classes=10&in_chans=1&input=1x32x32`` and
``timm:mobilenetv3_small_050?classes=10&in_chans=1`` build the library's own architecture with
fresh weights: edgeopt never downloads at run time (no ``weights=`` / ``pretrained``), so a
trained model comes back from a state dict with ``--weights``, as a zoo model does.

Knobs: ``classes`` (also spelled ``num_classes``; default: the data's, else the library's),
``input`` (CxHxW; default: the data's, else 3x224x224), ``in_chans`` (default: the input's
channels), ``seed`` (the initial weights), and any other numeric or true/false keyword the
builder takes (``width_mult=0.35`` for MobileNetV2, ``drop_rate=0`` for timm). Values are
numbers or booleans only: a spec comes from a stranger and never names a Python object.

torchvision takes no ``in_chans``; for a one-channel input its first 3-channel convolution is
rebuilt with the input's channels (the usual way to run an ImageNet architecture on
grayscale). Both libraries are the optional ``vision`` extra (``pip install 'edgeopt[vision]'``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from edgeopt.errors import InputError
from edgeopt.spec import parse_spec

if TYPE_CHECKING:
    from types import ModuleType

    from torch import nn

    from edgeopt.data import Dataset

__all__ = ["HUBS", "Built", "build_hub"]

#: the spec schemes this module builds
HUBS = ("torchvision", "timm")

_OWN_KEYS = {"classes", "num_classes", "input", "in_chans", "seed"}
_DOWNLOADS = {
    "weights",
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
}
_MAX_CLASSES = 100_000

# Kept alive for the process: the definitions below are dropped when this object is collected.
_OPS_LIBRARY: Any = None


def _import_torchvision() -> ModuleType:
    """torchvision, imported even where its compiled operators do not load.

    torchvision's model definitions are pure Python; its compiled ``_C`` holds detection
    operators (NMS, RoIAlign, deformable convolution) that no classifier here uses. When ``_C``
    does not load (a wheel built for CUDA beside the CPU build of torch, as PyPI's 0.28.0 is),
    torchvision 0.28 still fails at import: ``_meta_registrations.py`` registers fake kernels
    for ``torchvision::nms`` and ``qnms`` without the ``_has_ops()`` guard its other
    registrations have (pytorch/vision#9337; the guard is pytorch/vision PR #9649). The two
    schemas are defined here, with no kernel, so the import completes; calling NMS would
    still fail with PyTorch's own "no kernel" error. Where ``_C`` loads this is never reached.
    """
    global _OPS_LIBRARY
    from edgeopt._optional import require

    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise InputError(
                f"torchvision:... needs torchvision, which does not load ({exc}): "
                "pip install 'edgeopt[vision]'."
            ) from None
        import torch

        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        if _OPS_LIBRARY is None:
            library = torch.library.Library("torchvision", "DEF")
            library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _OPS_LIBRARY = library
        return require("torchvision", purpose="a torchvision: model spec")
    except ImportError:
        return require("torchvision", purpose="a torchvision: model spec")
    return torchvision


def _keyword(spec: str, key: str, raw: str) -> int | float | bool:
    """A builder keyword from the spec: a number or a boolean, nothing else."""
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(lowered)
    except ValueError:
        pass
    try:
        value = float(lowered)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(
            f"{spec}: {key}={raw!r} must be a number or true/false (specs pass no other values "
            "to the builder)."
        )
    return value


def _adapt_first_conv(module: nn.Module, in_chans: int, spec: str) -> None:
    """Rebuild the first 3-channel convolution for ``in_chans`` input channels (in place)."""
    from torch import nn

    for parent in module.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != 3 or child.groups != 1:
                    break
                conv = nn.Conv2d(
                    in_chans,
                    child.out_channels,
                    child.kernel_size,  # type: ignore[arg-type]
                    stride=child.stride,  # type: ignore[arg-type]
                    padding=child.padding,  # type: ignore[arg-type]
                    dilation=child.dilation,  # type: ignore[arg-type]
                    bias=child.bias is not None,
                )
                setattr(parent, child_name, conv)
                return
    raise InputError(
        f"{spec}: in_chans={in_chans} needs a first convolution over 3 channels to rebuild, "
        "and this architecture's first layer is not one."
    )


def _build(scheme: str, name: str, spec: str, kwargs: dict[str, Any], in_chans: int) -> nn.Module:
    if scheme == "torchvision":
        torchvision = _import_torchvision()
        known = set(torchvision.models.list_models(module=torchvision.models))
        if name not in known:
            raise InputError(
                f"{spec}: torchvision has no classification model {name!r} "
                "(torchvision.models.list_models() names them, e.g. mobilenet_v3_small)."
            )
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        if in_chans != 3:
            _adapt_first_conv(model, in_chans, spec)
        return model
    from edgeopt._optional import require

    _import_torchvision()  # timm imports torchvision: the same import, made to load first
    timm = require("timm", purpose="a timm: model spec")
    if name not in set(timm.list_models()):
        raise InputError(
            f"{spec}: timm has no model {name!r} (timm.list_models('*mobilenet*') lists some)."
        )
    return timm.create_model(name, pretrained=False, in_chans=in_chans, **kwargs)


@dataclass(frozen=True)
class Built:
    """An architecture built from a spec: its module (fresh weights, eval mode), the input it
    takes (CxHxW) and its class count (None where its output is not one score per class)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int | None


def build_hub(spec: str, data: Dataset | None) -> Built:
    """Build ``torchvision:NAME?...`` or ``timm:NAME?...`` (see the module docstring); the
    caller loads ``--weights`` into it.

    Args:
        spec: the model spec.
        data: where given, the class count and input shape default to the data's.

    Raises:
        InputError: an unknown name, a download asked for, a knob that is not a number, a
            builder that refuses its keywords, an input the architecture cannot take, or a
            missing ``vision`` extra.
    """
    import torch

    parsed = parse_spec(spec)
    scheme, name = parsed.scheme, parsed.body.strip()
    asked = _DOWNLOADS & set(parsed.params)
    if asked:
        raise InputError(
            f"{spec}: edgeopt downloads nothing at run time ({sorted(asked)[0]}=); give the "
            "trained weights as a state dict with --weights FILE."
        )
    if not name:
        raise InputError(f"{spec}: name the architecture, for example {scheme}:mobilenet_v2.")
    params = dict(parsed.params)
    default_shape = data.input_shape if data is not None else None
    input_shape = parsed.pop_shape("input", default_shape)
    in_chans = parsed.pop_int("in_chans", input_shape[0] if input_shape else 3)
    if input_shape is None:
        input_shape = (in_chans, 224, 224)
    if len(input_shape) != 3 or input_shape[0] != in_chans:
        raise InputError(
            f"{spec}: the input {'x'.join(map(str, input_shape))} is not CxHxW with "
            f"C = in_chans = {in_chans}."
        )
    kwargs: dict[str, Any] = {
        key: _keyword(spec, key, value) for key, value in params.items() if key not in _OWN_KEYS
    }
    classes_key = "num_classes" if "num_classes" in params else "classes"
    classes = parsed.pop_int(classes_key, data.num_classes if data is not None else -1)
    if classes != -1:
        if not 1 <= classes <= _MAX_CLASSES:
            raise InputError(f"{spec}: {classes_key}={classes} is not between 1 and 100000.")
        kwargs["num_classes"] = classes
    torch.manual_seed(parsed.pop_int("seed", 0))
    try:
        module = _build(scheme, name, spec, kwargs, in_chans)
    except InputError:
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise InputError(f"{spec}: {scheme} refused these keywords ({detail}).") from None
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros((1, *input_shape)))
    except Exception as exc:  # noqa: BLE001  (an input the architecture cannot take)
        detail = " ".join(str(exc).split())[:160]
        raise InputError(
            f"{spec}: {name} cannot take a {'x'.join(map(str, input_shape))} input ({detail}); "
            "give ?input=CxHxW or data with larger samples."
        ) from None
    num_classes = int(out.shape[-1]) if out.ndim == 2 else None
    return Built(name, module, tuple(input_shape), num_classes)
