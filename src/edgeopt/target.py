"""Device profiles: memory, clock, an op-throughput model and power, loaded from YAML.

A profile predicts what we cannot run here (a microcontroller's latency and energy) from counts
we measure on the exported ONNX graph. The model is the one MLPerf Tiny results are usually
explained with: each layer costs ``macs * cycles_per_mac[kind][dtype]`` (convolution, depthwise,
fully connected) plus ``ops * cycles_per_element[dtype]`` (its element operations, counted by
``edgeopt.opcost``; a layer without an ``ops`` count: its output elements), plus
``bytes_moved * cycles_per_byte`` of memory traffic and a fixed ``layer_overhead_cycles``; a
profile fitted to a library's kernels (:mod:`edgeopt.measure.kernelfit`) may add costs per output
element (``cycles_per_output``) and per window channel (``cycles_per_channel``: ``macs /
kernel_elements``) of a MAC layer, and a ``pointwise`` row for 1x1 (``is_pointwise``) convolutions;
latency is cycles over the clock, energy is latency times the active power. Every constant's
source is written next to it in the YAML file (``sources``). A layer whose cost is unknown
(``is_counted`` False) makes the estimate a lower bound, and the estimate says so.

A profile may also price an audio front end (``frontend``: framing, window, real FFT, power
spectrum, mel filters, log, DCT), the work a keyword-spotting device does before the network
runs. Its cost is counted from the data's ``frontend_ops`` and added to the estimate, which then
reports the model and the front end apart as well as their sum.

An Ethos-U NPU profile (an ``npu:`` block, :mod:`edgeopt.npu`) has no cycle model of its own: Vela
compiles the model for it (:func:`edgeopt.measure.vela.estimate_npu`), and ``estimate`` refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from importlib import resources
from math import log2
from pathlib import Path
from typing import Any
from typing import Protocol

import yaml

from edgeopt._io import read_yaml
from edgeopt.errors import InputError
from edgeopt.npu import NpuConfig

MAC_KINDS = ("conv", "depthwise", "fc")
POINTWISE = "pointwise"  # the optional row of 1x1 convolutions
DTYPES = ("int8", "float32")
_KERNEL_ROWS = ("cycles_per_output", "cycles_per_channel")  # optional, by kind and dtype
#: Front-end constants: cycles per ``n log2 n`` of a real FFT of ``n`` points, per float
#: multiply-accumulate (window, power spectrum, mel filters, DCT), per natural log, per frame.
FRONTEND_KEYS = ("fft_cycles_per_n_log2n", "cycles_per_mac", "cycles_per_log", "cycles_per_frame")
#: The counts a front end records per clip (``Dataset.frontend["frontend_ops"]``).
FRONTEND_OPS = (
    "frames",
    "fft_size",
    "ffts",
    "window_macs",
    "power_macs",
    "mel_macs",
    "logs",
    "dct_macs",
)


class LayerCost(Protocol):
    """What the estimator needs to know about one layer of the exported graph (``ops``,
    ``is_counted`` and ``label`` of :class:`edgeopt.graph.Layer` are read where present)."""

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
    """Predicted latency and energy of one inference on a target (estimated, not measured).

    ``latency_ms``, ``energy_uj`` and ``cycles`` are the totals: the model, plus the audio front
    end when one was priced (``frontend_latency_ms`` is then a number, else None).
    """

    target: str
    latency_ms: float
    energy_uj: float
    cycles: float
    layer_latency_ms: tuple[float, ...] = ()
    frontend_latency_ms: float | None = None
    frontend_energy_uj: float | None = None
    frontend_cycles: Mapping[str, float] = field(default_factory=dict)
    uncounted_ops: tuple[str, ...] = ()  # layers of unknown cost: the totals are lower bounds
    source: str = ""  # who made it where not the cycle model ("Vela 5.2.0 estimate")
    detail: Mapping[str, Any] = field(default_factory=dict)  # Vela's memory and CPU operators

    @property
    def method(self) -> str:
        """How the numbers were obtained, in words, ``lower bound`` where layers were left out."""
        if self.source:
            return self.source
        n = len(self.uncounted_ops)
        return f"estimated (a lower bound: {n} operator(s) of unknown cost)" if n else "estimated"

    @property
    def model_latency_ms(self) -> float:
        return self.latency_ms - (self.frontend_latency_ms or 0.0)

    @property
    def model_energy_uj(self) -> float:
        return self.energy_uj - (self.frontend_energy_uj or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "latency_ms": self.latency_ms,
            "energy_uj": self.energy_uj,
            "cycles": self.cycles,
            "layer_latency_ms": list(self.layer_latency_ms),
            "model_latency_ms": self.model_latency_ms,
            "model_energy_uj": self.model_energy_uj,
            "frontend_latency_ms": self.frontend_latency_ms,
            "frontend_energy_uj": self.frontend_energy_uj,
            "frontend_cycles": dict(self.frontend_cycles),
            "method": self.method,
            "uncounted_ops": list(self.uncounted_ops),
            **({"detail": dict(self.detail)} if self.detail else {}),
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
    frontend: Mapping[str, float] = field(default_factory=dict)
    cycles_per_output: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    cycles_per_channel: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    npu: NpuConfig | None = None  # an Ethos-U NPU: Vela gives latency and memory
    #: Measured out-of-sample error: fractions ``latency`` and ``energy``, count ``results``.
    validated_error: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:  # noqa: C901  (one validation per field of a device profile, each naming the field)
        where = f"target {self.name!r}"
        for key in ("clock_hz", "flash_bytes", "ram_bytes", "active_power_mw"):
            if not 0 < float(getattr(self, key)) < math.inf:
                raise InputError(f"{where}: {key} must be a finite number above 0.")
        for kind in (*MAC_KINDS, *({POINTWISE} & set(self.cycles_per_mac))):
            row = self.cycles_per_mac.get(kind)
            if row is None:
                raise InputError(f"{where}: cycles_per_mac has no entry for {kind!r}.")
            for dtype in DTYPES:
                if dtype not in row or not float(row[dtype]) > 0:
                    raise InputError(f"{where}: cycles_per_mac.{kind}.{dtype} must be above 0.")
        for name in _KERNEL_ROWS:
            for kind, row in getattr(self, name).items():
                if kind not in (*MAC_KINDS, POINTWISE) or not all(
                    dtype in DTYPES and float(value) >= 0 for dtype, value in row.items()
                ):
                    raise InputError(f"{where}: {name}.{kind} must map dtypes to 0 or more.")
        for dtype in DTYPES:
            if float(self.cycles_per_element.get(dtype, -1)) < 0:
                raise InputError(f"{where}: cycles_per_element.{dtype} is missing or negative.")
        for key in ("layer_overhead_cycles", "cycles_per_byte"):
            if float(getattr(self, key)) < 0:
                raise InputError(f"{where}: {key} must be 0 or more.")
        unknown = [dtype for dtype in self.dtypes if dtype not in DTYPES]
        if unknown:
            raise InputError(f"{where}: dtypes has {unknown[0]!r}; known: {', '.join(DTYPES)}.")
        if self.frontend:
            for key in FRONTEND_KEYS:
                if not float(self.frontend.get(key, -1)) >= 0:
                    raise InputError(f"{where}: frontend.{key} is missing or negative.")
            extra = sorted(set(self.frontend) - set(FRONTEND_KEYS))
            if extra:
                raise InputError(f"{where}: frontend has unknown field {extra[0]!r}.")

        if self.validated_error:
            for key in ("latency", "energy", "results"):
                value = self.validated_error.get(key)
                if isinstance(value, bool) or not 0 < float(value or 0) < math.inf:
                    raise InputError(f"{where}: validated_error.{key} must be a number above 0.")

    @property
    def error_label(self) -> str:
        """The validated error in words: "±30% latency, ±40% energy, validated on 8 results"."""
        error = self.validated_error
        if not error:
            return "not validated against published measurements"
        return (
            f"±{error['latency']:.0%} latency, ±{error['energy']:.0%} energy, "
            f"validated on {int(error['results'])} published results"
        )

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, origin: str = "target") -> Target:
        """Build a profile from the YAML mapping; name the field when one is missing or bad."""
        if not isinstance(raw, Mapping):
            raise InputError(f"{origin}: a target profile must be a YAML mapping.")
        if raw.get("is_measured"):  # the host: fill clock, memory and throughput by measuring
            from edgeopt.measure.host import measure_host

            raw = measure_host(dict(raw))
        if raw.get("npu") is not None:  # Ethos-U: checked; CPU fallback priced by its host core
            from edgeopt.npu import with_host_costs

            raw = with_host_costs(raw, origin, load=cls.from_name, names=list_targets())
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

        def number(key: str, convert: Any, default: Any = None) -> Any:
            value = raw.get(key, default)
            try:
                if isinstance(value, bool) or not math.isfinite(float(value)):
                    raise ValueError
                return convert(value)
            except (TypeError, ValueError, OverflowError):
                raise InputError(
                    f"{origin}: field {key!r} of the target profile must be a finite number, "
                    f"got {str(value)[:40]!r}."
                ) from None

        try:
            return cls(
                name=str(raw["name"]),
                description=str(raw.get("description", "")),
                clock_hz=number("clock_hz", float),
                flash_bytes=number("flash_bytes", int),
                ram_bytes=number("ram_bytes", int),
                active_power_mw=number("active_power_mw", float),
                cycles_per_mac=_rows(raw["cycles_per_mac"]),
                cycles_per_element={str(d): float(v) for d, v in raw["cycles_per_element"].items()},
                layer_overhead_cycles=number("layer_overhead_cycles", float),
                cycles_per_byte=number("cycles_per_byte", float, 0.0),
                dtypes=_dtypes(raw.get("dtypes", DTYPES), origin),
                runtime=str(raw.get("runtime", "")),
                sources={str(k): str(v) for k, v in (raw.get("sources") or {}).items()},
                is_measured=bool(raw.get("is_measured", False)),
                frontend={str(k): float(v) for k, v in (raw.get("frontend") or {}).items()},
                cycles_per_output=_rows(raw.get("cycles_per_output")),
                cycles_per_channel=_rows(raw.get("cycles_per_channel")),
                npu=raw.get("npu"),
                validated_error=_validated_error(raw.get("validated_error"), origin),
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(
                f"{origin}: a field of the target profile is malformed ({exc})."
            ) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Target:
        """Load a profile from a YAML file."""
        path = Path(path)
        return cls.from_dict(read_yaml(path, "target"), origin=str(path))

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
        ops = getattr(layer, "ops", None)  # a recurrent cell's gates; Softmax's 5 per element
        per_element = self.cycles_per_element[dtype]
        if layer.kind in MAC_KINDS:
            pointwise = getattr(layer, "is_pointwise", False) and POINTWISE in self.cycles_per_mac
            kind = POINTWISE if pointwise else layer.kind
            compute = layer.macs * self.cycles_per_mac[kind][dtype] + (ops or 0) * per_element
            windows = layer.macs / getattr(layer, "kernel_elements", 1)  # outputs x in channels
            compute += layer.output_elements * self.cycles_per_output.get(kind, {}).get(dtype, 0)
            compute += windows * self.cycles_per_channel.get(kind, {}).get(dtype, 0)
        elif layer.kind == "data":  # reshapes and views: no arithmetic
            compute = 0.0
        else:
            compute = (layer.output_elements if ops is None else ops) * per_element
        return compute + layer.bytes_moved * self.cycles_per_byte + self.layer_overhead_cycles

    def frontend_step_cycles(self, ops: Mapping[str, Any]) -> dict[str, float]:
        """Cycles of each audio front-end step for one clip, from its operation counts.

        A real FFT of ``n`` points costs ``fft_cycles_per_n_log2n * n * log2(n)``; window,
        power spectrum, mel filters and DCT cost ``cycles_per_mac`` per multiply-accumulate;
        each log ``cycles_per_log``; each frame ``cycles_per_frame`` (calls, copies).

        Args:
            ops: ``Dataset.frontend["frontend_ops"]`` of an ``audio:`` dataset.

        Returns:
            Cycles per step: framing, window, fft, power, mel, log, dct.

        Raises:
            InputError: the profile prices no front end, or a count is missing.

        Example:
            >>> ops = {"frames": 49, "fft_size": 512, "ffts": 49, "window_macs": 15680,
            ...        "power_macs": 25186, "mel_macs": 20000, "logs": 1960, "dct_macs": 19600}
            >>> steps = Target.from_name("cortex-m4").frontend_step_cycles(ops)
            >>> steps["fft"] > steps["mel"]
            True
        """
        if not self.frontend:
            raise InputError(
                f"target {self.name!r} has no frontend costs, so an audio front end cannot be "
                "estimated on it."
            )
        missing = [key for key in FRONTEND_OPS if key not in ops]
        if missing:
            raise InputError(f"frontend_ops has no count {missing[0]!r}.")
        cost = self.frontend
        n = float(ops["fft_size"])
        mac = cost["cycles_per_mac"]
        return {
            "framing": float(ops["frames"]) * cost["cycles_per_frame"],
            "window": float(ops["window_macs"]) * mac,
            "fft": float(ops["ffts"]) * cost["fft_cycles_per_n_log2n"] * n * log2(n),
            "power": float(ops["power_macs"]) * mac,
            "mel": float(ops["mel_macs"]) * mac,
            "log": float(ops["logs"]) * cost["cycles_per_log"],
            "dct": float(ops["dct_macs"]) * mac,
        }

    def estimate(
        self, layers: Iterable[LayerCost], *, frontend_ops: Mapping[str, Any] | None = None
    ) -> Estimate:
        """Predict latency (ms) and energy (uJ) of one inference from the graph's layers.

        With ``frontend_ops`` (an audio dataset's front-end counts) the front end's cycles are
        added to the total and reported apart (``frontend_latency_ms``, ``frontend_cycles``).
        """
        if self.npu is not None:
            raise InputError(f"target {self.name!r} is an Ethos-U NPU: Vela prices a model file.")
        layers = list(layers)
        per_layer = [self.layer_cycles(layer) for layer in layers]
        model_cycles = float(sum(per_layer))
        steps = self.frontend_step_cycles(frontend_ops) if frontend_ops is not None else {}
        frontend_cycles = float(sum(steps.values()))
        cycles = model_cycles + frontend_cycles
        latency_ms = cycles / self.clock_hz * 1e3
        frontend_ms = frontend_cycles / self.clock_hz * 1e3 if frontend_ops is not None else None
        return Estimate(
            target=self.name,
            latency_ms=latency_ms,
            energy_uj=latency_ms * self.active_power_mw,  # ms * mW = uJ
            cycles=cycles,
            layer_latency_ms=tuple(c / self.clock_hz * 1e3 for c in per_layer),
            frontend_latency_ms=frontend_ms,
            frontend_energy_uj=None if frontend_ms is None else frontend_ms * self.active_power_mw,
            frontend_cycles=steps,
            uncounted_ops=tuple(
                str(layer.label) for layer in layers if not getattr(layer, "is_counted", True)
            ),
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
            **({"frontend": dict(self.frontend)} if self.frontend else {}),
            **{name: _rows(getattr(self, name)) for name in _KERNEL_ROWS if getattr(self, name)},
            **({"npu": self.npu.to_dict()} if self.npu else {}),
            **({"validated_error": dict(self.validated_error)} if self.validated_error else {}),
        }


def _rows(value: Any) -> dict[str, dict[str, float]]:  # kind -> dtype -> number
    return {str(k): {str(d): float(v) for d, v in row.items()} for k, row in (value or {}).items()}


def _dtypes(value: Any, origin: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InputError(f"{origin}: dtypes must be a list such as [int8, float32].")
    return tuple(str(dtype) for dtype in value)


def _validated_error(value: Any, origin: str) -> dict[str, float]:
    """The ``validated_error`` mapping with numbers, or one sentence naming the field."""
    if value is None:
        return {}
    try:
        if not isinstance(value, Mapping) or set(value) != {"latency", "energy", "results"}:
            raise ValueError
        if any(isinstance(number, bool) for number in value.values()):
            raise ValueError
        return {str(key): float(number) for key, number in value.items()}
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            f"{origin}: validated_error must map latency, energy (fractions) and results "
            "(a count) to numbers."
        ) from None


def list_targets() -> list[str]:
    """Names of the built-in profiles (the YAML files shipped in ``edgeopt/targets``)."""
    folder = resources.files("edgeopt.targets")
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )
