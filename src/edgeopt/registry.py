"""Registries: one dict per kind, filled by a decorator, read with ``get_*`` and ``list_*``.

Kinds: stages (a compression technique: its config class, keyed by the config's ``kind``, which
is also its YAML name, and the function that applies it), zoo models (architectures built from a
name and knobs) and dataset schemes (the prefix of a data spec). Targets are YAML files, listed
by :mod:`edgeopt.target`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
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


@dataclass(frozen=True)
class Stage:
    """A compression technique: the config that describes it and the function that applies it.

    ``apply(ctx, config)`` takes a :class:`edgeopt.stages.StageContext` (the model, data and a
    scratch folder) and returns the stage's output (for quantization a
    :class:`edgeopt.stages.QuantizeOutput`, for pruning and distillation their result, whose
    ``model`` is the new handle). ``choices`` are the names the search may draw for it
    (``ptq8``), each with the function that builds its config from the search's settings
    (:class:`edgeopt.stages.Choice`). ``is_torch_only``: it needs a PyTorch model; ``noun`` is
    what a refusal calls the technique ("pruning needs a PyTorch model"), the kind by default.
    """

    config: type[Any]
    apply: Callable[..., Any]
    choices: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    is_torch_only: bool = False
    noun: str = ""

    def require_torch(self, handle: Any) -> None:
        """Refuse an ONNX-only model for a stage that trains in PyTorch, in one sentence."""
        if self.is_torch_only:
            handle.require_torch(self.noun or self.kind)

    @property
    def kind(self) -> str:
        """The config's kind: the registry key and the YAML name (``quantize.ptq``)."""
        return str(self.config.kind)

    @property
    def step(self) -> str:
        """The recipe step it fills: the kind before the dot (``quantize``)."""
        return self.kind.split(".")[0]


_STAGES: dict[str, Stage] = {}


def register_stage(
    config: type[Any],
    *,
    choices: Mapping[str, Callable[..., Any]] | None = None,
    is_torch_only: bool = False,
    noun: str = "",
) -> Callable[[F], F]:
    """Bind ``config`` (a :class:`edgeopt.config.Config` subclass) to the function decorated:
    verbs, recipes and the search space find the technique through it."""

    def decorator(fn: F) -> F:
        if config.kind in _STAGES:
            raise ValueError(f"stage {config.kind!r} is registered twice")
        _STAGES[config.kind] = Stage(config, fn, dict(choices or {}), is_torch_only, noun)
        return fn

    return decorator


def _load_stages() -> None:
    # The built-in stages register themselves when their modules are imported (PyTorch and
    # ONNX come with them), so this happens on first use, not at ``import edgeopt``.
    import edgeopt.stages.builtin  # noqa: F401


def get_stage(kind: str) -> Stage:
    """The stage registered for a config kind (``prune``, ``quantize.ptq``, ...).

    Raises:
        InputError: no stage has that kind (the known ones are listed).
    """
    _load_stages()
    try:
        return _STAGES[kind]
    except KeyError:
        known = ", ".join(sorted(_STAGES))
        raise InputError(f"unknown stage {kind!r}; known: {known}.") from None


def list_stages() -> list[str]:
    """Every registered stage kind, sorted."""
    _load_stages()
    return sorted(_STAGES)
