"""Registries: one dict per kind, filled by a decorator, read with ``get_*`` and ``list_*``.

Kinds: zoo models (architectures built from a name and knobs) and dataset schemes (the prefix of a
data spec). Targets are YAML files, listed by :mod:`edgeopt.target`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import TypeVar

from edgeopt.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])

_ZOO: dict[str, Callable[..., Any]] = {}
_DATASETS: dict[str, Callable[..., Any]] = {}


def _register(table: dict[str, Callable[..., Any]], kind: str, name: str) -> Callable[[F], F]:
    def decorator(fn: F) -> F:
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = fn
        return fn

    return decorator


def _get(table: dict[str, Callable[..., Any]], kind: str, name: str) -> Callable[..., Any]:
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise InputError(f"unknown {kind} {name!r}; known: {known}.") from None


def register_model(name: str) -> Callable[[F], F]:
    """Register a zoo architecture under ``name`` (used as ``zoo:NAME``)."""
    return _register(_ZOO, "zoo model", name)


def _load_zoo() -> None:
    # The built-in architectures register themselves when their package is imported; it is
    # imported here, on first use, so that ``import edgeopt`` does not load PyTorch.
    import edgeopt.models.zoo  # noqa: F401


def get_model(name: str) -> Callable[..., Any]:
    """Return the zoo entry registered under ``name``."""
    _load_zoo()
    return _get(_ZOO, "zoo model", name)


def list_models() -> list[str]:
    """Names of every registered zoo architecture, sorted."""
    _load_zoo()
    return sorted(_ZOO)


def register_dataset(scheme: str) -> Callable[[F], F]:
    """Register a data-spec scheme (the part before ``:``, or a bare name such as ``digits``)."""
    return _register(_DATASETS, "data spec", scheme)


def get_dataset(scheme: str) -> Callable[..., Any]:
    """Return the loader registered for a data-spec scheme."""
    return _get(_DATASETS, "data spec", scheme)


def list_datasets() -> list[str]:
    """Every registered data-spec scheme, sorted."""
    return sorted(_DATASETS)
