"""The one record every measurement produces, and how each of its numbers was obtained."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from edgeopt.graph import Layer
    from edgeopt.measure.int8 import Int8Arithmetic
    from edgeopt.measure.runtime import Latency
    from edgeopt.target import Estimate
    from edgeopt.target import Target


@dataclass(frozen=True)
class Violation:
    """A budget the artifact breaks: which one, the value, the limit, and by how much."""

    constraint: str
    value: float
    limit: float

    @property
    def excess(self) -> float:
        return self.value - self.limit

    def __str__(self) -> str:
        over = f"over by {self.excess:,.4g}"
        return f"{self.constraint}: {self.value:,.4g} > {self.limit:,.4g} ({over})"


@dataclass(frozen=True)
class Metrics:
    """What the exported artifact costs and how well it does.

    Counted on the file: ``params``, ``macs``, ``size_bytes``, ``peak_ram_bytes`` (tensor
    liveness). Measured with ONNX Runtime on this machine: ``latency_ms`` (the file as shipped),
    ``accuracy`` (test split; an int8 file's exact integers, ``int8`` says on which path).
    Estimated from the target profile: ``estimate`` (latency and energy on the device).
    ``memory_schedule``: live activation bytes after each node, ``memory_steps`` those nodes.
    ``provenance`` says this in words for every key. ``batch``: the samples one run of the file
    takes (counts, memory and latency are of one run: a batch the file fixes is kept);
    ``notes``: what the profile did that the file did not say (an opset upgraded in memory,
    symbolic dimensions bound to a default, inputs it generated). ``uncounted_ops``:
    ``name (OpType)`` of the layers whose cost is unknown (``macs`` and the estimate are then
    lower bounds); None when made, it is read from ``layers``.
    """

    model: str
    params: int
    macs: int
    size_bytes: int
    peak_ram_bytes: int
    layers: tuple[Layer, ...]
    latency_ms: Latency | None = None
    accuracy: float | None = None
    estimate: Estimate | None = None
    target: str | None = None
    fits: dict[str, bool] | None = None
    memory_schedule: tuple[int, ...] = ()
    memory_steps: tuple[str, ...] = ()
    provenance: dict[str, str] = field(default_factory=dict)
    int8: Int8Arithmetic | None = None
    batch: int = 1
    notes: tuple[str, ...] = ()
    uncounted_ops: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.uncounted_ops is None:
            found = tuple(layer.label for layer in self.layers if not layer.is_counted)
            object.__setattr__(self, "uncounted_ops", found)

    def check(self, target: Target) -> list[Violation]:
        """Budgets of ``target`` this artifact breaks (flash: file size; RAM: peak activations)."""
        violations = []
        if self.size_bytes > target.flash_bytes:
            violations.append(Violation("flash_bytes", self.size_bytes, target.flash_bytes))
        if self.peak_ram_bytes > target.ram_bytes:
            violations.append(Violation("ram_bytes", self.peak_ram_bytes, target.ram_bytes))
        return violations

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with stable keys (the ``profile --json`` format)."""
        return {
            "model": self.model,
            "params": self.params,
            "macs": self.macs,
            "size_bytes": self.size_bytes,
            "peak_ram_bytes": self.peak_ram_bytes,
            "latency_ms": self.latency_ms.to_dict() if self.latency_ms else None,
            "accuracy": self.accuracy,
            "estimate": self.estimate.to_dict() if self.estimate else None,
            "target": self.target,
            "fits": self.fits,
            "layers": [layer.to_dict() for layer in self.layers],
            "memory_schedule": list(self.memory_schedule),
            "memory_steps": list(self.memory_steps),
            "provenance": dict(self.provenance),
            "int8": self.int8.to_dict() if self.int8 is not None else None,
            "batch": self.batch,
            "notes": list(self.notes),
            "uncounted_ops": list(self.uncounted_ops or ()),
        }
