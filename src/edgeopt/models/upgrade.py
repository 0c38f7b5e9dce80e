"""Bring an ONNX model stamped with an old opset up to one ONNX Runtime loads, in memory.

ONNX Runtime "only *guarantees* support for models stamped with opset version 7 or above for
opset domain 'ai.onnx'" (its load-time warning; ``onnxruntime/core/graph/model.cc``), and its
current releases have dropped the kernels of several opset-6 operators (``AveragePool(1)``,
``BatchNormalization(6)``, ``Add(6)`` with its ``broadcast`` attribute, ...), so such a file
fails to load with ``NOT_IMPLEMENTED``. ONNX's version converter rewrites a model from one opset
of the default domain to another, adapting every operator whose signature changed
(https://onnx.ai/onnx/api/version_converter.html, ``docs/VersionConverter.md`` in the onnx
repository). One function does this so that profiling and the quantization of foreign files
upgrade the same way and say so in the same words.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.errors import InputError

if TYPE_CHECKING:
    import onnx

__all__ = ["MIN_RUNTIME_OPSET", "default_opset", "upgrade_onnx"]

#: The oldest opset of the default (``ai.onnx``) domain ONNX Runtime guarantees to load.
MIN_RUNTIME_OPSET = 7


def default_opset(model: onnx.ModelProto) -> int | None:
    """The model's opset of the default ``ai.onnx`` domain (None where it imports none)."""
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return None


def upgrade_onnx(
    model: onnx.ModelProto,
    source: str | Path,
    *,
    min_opset: int = MIN_RUNTIME_OPSET,
    target_opset: int | None = None,
    why: str | None = None,
) -> tuple[onnx.ModelProto, str | None]:
    """Upgrade ``model`` to ``target_opset`` when its default-domain opset is below ``min_opset``.

    The model passed in is not modified, and nothing is written: the caller runs the returned
    copy (a session from its bytes, or a file in a scratch folder), so the user's file stays as
    it is.

    Args:
        model: the loaded and checked model.
        source: where it came from, for the messages (the file's path).
        min_opset: the oldest opset kept as it is; the default is the oldest ONNX Runtime
            guarantees (:data:`MIN_RUNTIME_OPSET`).
        target_opset: the opset to convert to (default ``min_opset``: the smallest change;
            quantization may ask for 13, where per-channel QuantizeLinear begins).
        why: why ``min_opset`` is needed, for the note and the message (default: ONNX Runtime
            guarantees to load opset ``min_opset`` and later).

    Returns:
        The model (the same object where no upgrade was needed, else the converted copy) and a
        note for the profile saying what was done, or None where nothing was.

    Raises:
        InputError: the converter cannot upgrade the model (one sentence naming the file, its
            opset and what to do).

    Example:
        >>> from onnx import TensorProto, helper
        >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
        >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
        >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        >>> old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
        >>> new, note = upgrade_onnx(old, "old.onnx")
        >>> default_opset(old), default_opset(new), note.split(" with ")[0]
        (6, 7, 'upgraded in memory from opset 6 to 7')
    """
    import onnx
    from onnx import version_converter

    version = default_opset(model)
    if version is None or version >= min_opset:
        return model, None
    target = target_opset if target_opset is not None else min_opset
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted, full_check=False)
    except Exception as exc:  # the converter raises RuntimeError, ValidationError, ...
        text = " ".join(str(exc).split())
        detail = text[:160] if text else type(exc).__name__
        older = why or f"older than the {min_opset} ONNX Runtime guarantees to load"
        raise InputError(
            f"{source}: the model is stamped with opset {version} of the ONNX standard, {older}, "
            f"and onnx's version converter cannot upgrade it to opset {target} ({detail}); "
            f"re-export it at opset {target} or later (torch.onnx.export(..., opset_version=...))."
        ) from None
    because = why or f"ONNX Runtime guarantees opset {min_opset} and later"
    note = (
        f"upgraded in memory from opset {version} to {target} with onnx.version_converter "
        f"({because}); the file is unchanged"
    )
    return converted, note
