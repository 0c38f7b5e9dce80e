"""Device profiles: memory, clock, an op-throughput model and power, loaded from YAML.

A profile predicts what we cannot run here (a microcontroller's latency and energy) from counts
we measure on the exported ONNX graph. The model is the one MLPerf Tiny results are usually
explained with: each layer costs ``macs * cycles_per_mac[kind][dtype]`` (convolution, depthwise,
fully connected) or ``elements * cycles_per_element[dtype]`` (pooling, element-wise), plus
``bytes_moved * cycles_per_byte`` of memory traffic and a fixed ``layer_overhead_cycles``;
latency is cycles over the clock, energy is latency times the active power. Every constant's
source is written next to it in the YAML file (``sources``).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from importlib import resources
from pathlib import Path
from typing import Any
from typing import Protocol

import yaml

from edgeopt.errors import InputError

MAC_KINDS = ("conv", "depthwise", "fc")
DTYPES = ("int8", "float32")


class LayerCost(Protocol):
    """What the estimator needs to know about one layer of the exported graph."""

    @property
    def kind(self) -> str: ...  # conv | depthwise | fc | elementwise | pool | data | fused

    @property
    def dtype(self) -> str: ...  # int8 | float32

    @property
    def macs(self) -> int: ...

    @property
    def output_elements(self) -> int: ...

    @property
    def bytes_moved(self) -> int: ...


@dataclass(frozen=True)
class Estimate:
    """Predicted latency and energy of one inference on a target (estimated, not measured)."""

    target: str
    latency_ms: float
    energy_uj: float
    cycles: float
    layer_latency_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "latency_ms": self.latency_ms,
            "energy_uj": self.energy_uj,
            "cycles": self.cycles,
            "layer_latency_ms": list(self.layer_latency_ms),
            "method": "estimated",
        }


@dataclass(frozen=True)
class Target:
    """An immutable device profile. Load one with :meth:`from_name` or :meth:`from_yaml`."""

    name: str
    description: str
    clock_hz: float
    flash_bytes: int
    ram_bytes: int
    active_power_mw: float
    cycles_per_mac: Mapping[str, Mapping[str, float]]
    cycles_per_element: Mapping[str, float]
    layer_overhead_cycles: float
    cycles_per_byte: float = 0.0
    dtypes: tuple[str, ...] = DTYPES
    runtime: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)
    is_measured: bool = False

    def __post_init__(self) -> None:
        where = f"target {self.name!r}"
        for key in ("clock_hz", "flash_bytes", "ram_bytes", "active_power_mw"):
            if not float(getattr(self, key)) > 0:
                raise InputError(f"{where}: {key} must be above 0.")
        for kind in MAC_KINDS:
            row = self.cycles_per_mac.get(kind)
            if row is None:
                raise InputError(f"{where}: cycles_per_mac has no entry for {kind!r}.")
            for dtype in DTYPES:
                if dtype not in row or not float(row[dtype]) > 0:
                    raise InputError(f"{where}: cycles_per_mac.{kind}.{dtype} must be above 0.")
        for dtype in DTYPES:
            if float(self.cycles_per_element.get(dtype, -1)) < 0:
                raise InputError(f"{where}: cycles_per_element.{dtype} is missing or negative.")
        for key in ("layer_overhead_cycles", "cycles_per_byte"):
            if float(getattr(self, key)) < 0:
                raise InputError(f"{where}: {key} must be 0 or more.")
        unknown = [dtype for dtype in self.dtypes if dtype not in DTYPES]
        if unknown:
            raise InputError(f"{where}: dtypes has {unknown[0]!r}; known: {', '.join(DTYPES)}.")

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, origin: str = "target") -> Target:
        """Build a profile from the YAML mapping; name the field when one is missing or bad."""
        if not isinstance(raw, Mapping):
            raise InputError(f"{origin}: a target profile must be a YAML mapping.")
        if raw.get("is_measured"):  # the host: fill clock, memory and throughput by measuring
            from edgeopt.measure.host import measure_host

            raw = measure_host(dict(raw))
        required = (
            "name",
            "clock_hz",
            "flash_bytes",
            "ram_bytes",
            "active_power_mw",
            "cycles_per_mac",
            "cycles_per_element",
            "layer_overhead_cycles",
        )
        for key in required:
            if key not in raw:
                raise InputError(f"{origin}: the target profile has no field {key!r}.")
        try:
            return cls(
                name=str(raw["name"]),
                description=str(raw.get("description", "")),
                clock_hz=float(raw["clock_hz"]),
                flash_bytes=int(raw["flash_bytes"]),
                ram_bytes=int(raw["ram_bytes"]),
                active_power_mw=float(raw["active_power_mw"]),
                cycles_per_mac={
                    str(kind): {str(d): float(v) for d, v in row.items()}
                    for kind, row in raw["cycles_per_mac"].items()
                },
                cycles_per_element={str(d): float(v) for d, v in raw["cycles_per_element"].items()},
                layer_overhead_cycles=float(raw["layer_overhead_cycles"]),
                cycles_per_byte=float(raw.get("cycles_per_byte", 0.0)),
                dtypes=_dtypes(raw.get("dtypes", DTYPES), origin),
                runtime=str(raw.get("runtime", "")),
                sources={str(k): str(v) for k, v in (raw.get("sources") or {}).items()},
                is_measured=bool(raw.get("is_measured", False)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(
                f"{origin}: a field of the target profile is malformed ({exc})."
            ) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Target:
        """Load a profile from a YAML file."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: target file does not exist.")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}).") from None
        return cls.from_dict(raw, origin=str(path))

    @classmethod
    def from_name(cls, name: str) -> Target:
        """Load a built-in profile by name (``cortex-m4``, ``host``, ...) or a YAML file path.

        Example:
            >>> Target.from_name("cortex-m4").clock_hz
            120000000.0
        """
        if name.endswith((".yaml", ".yml")) or "/" in name:
            return cls.from_yaml(name)
        if name not in list_targets():
            known = ", ".join(list_targets())
            raise InputError(f"unknown target {name!r}; known: {known}.")
        text = resources.files("edgeopt.targets").joinpath(f"{name}.yaml").read_text()
        return cls.from_dict(yaml.safe_load(text), origin=f"built-in target {name!r}")

    # -- the estimator -------------------------------------------------------------------------
    def layer_cycles(self, layer: LayerCost) -> float:
        """Cycles one layer costs on this device (see the module docstring for the model)."""
        if layer.kind == "fused":  # an activation folded into the layer before it: free
            return 0.0
        dtype = layer.dtype if layer.dtype in DTYPES else "float32"
        if layer.kind in MAC_KINDS:
            compute = layer.macs * self.cycles_per_mac[layer.kind][dtype]
        elif layer.kind == "data":  # reshapes and views: no arithmetic
            compute = 0.0
        else:
            compute = layer.output_elements * self.cycles_per_element[dtype]
        return compute + layer.bytes_moved * self.cycles_per_byte + self.layer_overhead_cycles

    def estimate(self, layers: Iterable[LayerCost]) -> Estimate:
        """Predict latency (ms) and energy (uJ) of one inference from the graph's layers."""
        per_layer = [self.layer_cycles(layer) for layer in layers]
        cycles = float(sum(per_layer))
        latency_ms = cycles / self.clock_hz * 1e3
        return Estimate(
            target=self.name,
            latency_ms=latency_ms,
            energy_uj=latency_ms * self.active_power_mw,  # ms * mW = uJ
            cycles=cycles,
            layer_latency_ms=tuple(c / self.clock_hz * 1e3 for c in per_layer),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "clock_hz": self.clock_hz,
            "flash_bytes": self.flash_bytes,
            "ram_bytes": self.ram_bytes,
            "active_power_mw": self.active_power_mw,
            "cycles_per_mac": {k: dict(v) for k, v in self.cycles_per_mac.items()},
            "cycles_per_element": dict(self.cycles_per_element),
            "cycles_per_byte": self.cycles_per_byte,
            "layer_overhead_cycles": self.layer_overhead_cycles,
            "dtypes": list(self.dtypes),
            "runtime": self.runtime,
            "sources": dict(self.sources),
            "is_measured": self.is_measured,
        }


def _dtypes(value: Any, origin: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InputError(f"{origin}: dtypes must be a list such as [int8, float32].")
    return tuple(str(dtype) for dtype in value)


def list_targets() -> list[str]:
    """Names of the built-in profiles (the YAML files shipped in ``edgeopt/targets``)."""
    folder = resources.files("edgeopt.targets")
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )
