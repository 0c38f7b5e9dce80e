"""Parse the ``scheme:body?key=value&...`` specs used for models and data."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from edgeopt.errors import InputError


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``zoo:lenet5?width=0.5`` -> scheme ``zoo``, body ``lenet5``, params."""

    text: str
    scheme: str
    body: str
    params: dict[str, str]

    def pop_float(self, key: str, default: float) -> float:
        """Read a float parameter, naming the spec and key when it is not a number."""
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise InputError(f"{self.text}: {key}={raw!r} is not a number.") from None

    def pop_int(self, key: str, default: int) -> int:
        """Read an integer parameter, naming the spec and key when it is not an integer."""
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise InputError(f"{self.text}: {key}={raw!r} is not an integer.") from None

    def pop_shape(self, key: str, default: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """Read a shape written ``1x28x28``."""
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            shape = tuple(int(part) for part in raw.lower().split("x"))
        except ValueError:
            raise InputError(f"{self.text}: {key}={raw!r} is not a shape like 1x28x28.") from None
        if any(dim <= 0 for dim in shape):
            raise InputError(f"{self.text}: {key}={raw!r} has a dimension at or below 0.")
        return shape

    def check_keys(self, allowed: set[str]) -> None:
        """Refuse parameters the scheme does not know, so a typo is not silently ignored."""
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise InputError(f"{self.text}: unknown parameter {unknown[0]!r}; known: {known}.")


def parse_spec(text: str) -> Spec:
    """Split ``scheme:body?query`` into its parts; a bare word has an empty body."""
    head, _, query = text.partition("?")
    scheme, sep, body = head.partition(":")
    if not sep:
        scheme, body = head, ""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InputError(f"{text}: the part after '?' is not key=value&key=value.") from None
    return Spec(text=text, scheme=scheme.strip(), body=body, params=dict(pairs))
