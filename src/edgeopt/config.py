"""Frozen, validated, versioned configs: one per step, each survives to_dict / from_dict."""

from __future__ import annotations

from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import fields
from typing import Any
from typing import ClassVar
from typing import TypeVar

from edgeopt.errors import InputError

C = TypeVar("C", bound="Config")


@dataclass(frozen=True)
class Config:
    """Base of every step config: a YAML name, a version, and the dict round trip."""

    kind: ClassVar[str] = "config"
    version: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, **asdict(self)}

    def label(self) -> str:
        """A few characters for a recipe's one-line description (``ptq8``, ``prune(channel
        0.3)``); the kind unless a config says more."""
        return self.kind

    @classmethod
    def from_dict(cls: type[C], raw: dict[str, Any]) -> C:
        """Rebuild a config, refusing another kind, a newer version or unknown fields."""
        raw = dict(raw)
        kind = raw.pop("kind", cls.kind)
        version = raw.pop("version", cls.version)
        if kind != cls.kind:
            raise InputError(f"config kind {kind!r} is not {cls.kind!r}.")
        if isinstance(version, bool) or not isinstance(version, int):
            raise InputError(f"{cls.kind} config version {version!r} is not a whole number.")
        if version > cls.version:
            raise InputError(f"{cls.kind} config version {version} is newer than {cls.version}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"{cls.kind} config has unknown field {unknown[0]!r}.")
        return cls(**raw)


@dataclass(frozen=True)
class TrainConfig(Config):
    """Supervised training: Adam with cosine learning-rate decay, fixed seed.

    Adam (Kingma & Ba 2015) with a cosine schedule (Loshchilov & Hutter 2017, SGDR) trains the
    small networks of the zoo well without per-model tuning.
    """

    kind: ClassVar[str] = "train"
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"train: epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise InputError(f"train: batch_size must be at least 1, got {self.batch_size}.")
        if not self.learning_rate > 0:
            raise InputError(f"train: learning_rate must be above 0, got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise InputError(f"train: weight_decay must be 0 or more, got {self.weight_decay}.")
        if not 0 <= self.label_smoothing < 1:
            raise InputError("train: label_smoothing must be in [0, 1).")
