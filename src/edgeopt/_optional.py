"""The optional extras, imported only where a feature uses them.

``import edgeopt`` loads none of them (tests/test_architecture.py checks the lean import). A
feature that needs one calls the function here and gets the module, or an :class:`InputError`
naming the extra to install: one sentence, exit 2, nothing written.

- ``tflite``: the TFLite flatbuffer schema (read and write, from ``ai-edge-litert``), the
  LiteRT interpreter, the TensorFlow Lite Micro interpreter (``tflite-micro``) and Arm's Vela
  compiler for the Ethos-U NPUs (``ethos-u-vela``).
- ``vision``: torchvision and timm, for their architectures as model specs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeopt.errors import InputError

__all__ = ["require"]

#: module -> (extra, what it is), for the one sentence a missing extra gets
_WHAT = {
    "ai_edge_litert.schema_py_generated": ("tflite", "the TFLite schema"),
    "ai_edge_litert.interpreter": ("tflite", "the LiteRT interpreter"),
    "tflite_micro.python.tflite_micro.runtime": ("tflite", "the TensorFlow Lite Micro interpreter"),
    "ethosu.vela.vela": ("tflite", "Arm's Vela compiler"),
    "torchvision": ("vision", "torchvision"),
    "timm": ("vision", "timm"),
}


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` for ``purpose``, or say which extra to install.

    Args:
        module: a module named in ``_WHAT``.
        purpose: what needs it, for the sentence (``reading .tflite files``).

    Raises:
        InputError: the extra is not installed (or its module does not load).

    Example:
        >>> require("json", purpose="a doctest").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken binary wheel's OSError / RuntimeError
        extra, what = _WHAT.get(module, (None, module))
        hint = f"pip install 'edgeopt[{extra}]'" if extra else f"install {module}"
        detail = " ".join(str(exc).split())[:120]
        raise InputError(
            f"{purpose} needs {what}, which is not installed or does not load ({detail}): {hint}."
        ) from None
