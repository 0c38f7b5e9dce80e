"""The ``npu:`` block of a target profile: an Arm Ethos-U NPU whose latency comes from Vela.

An Ethos-U profile does not price layers with edgeopt's cycle model. Vela, Arm's compiler for
the Ethos-U NPUs, compiles the model's int8 ``.tflite`` for the profile's accelerator, system
configuration and memory mode and reports cycles, SRAM and off-chip memory
(:mod:`edgeopt.measure.vela`). The operators Vela cannot place on the NPU run on the host core
(the Cortex-M beside the NPU); they are priced with the cycle model of the built-in profile
named by ``host_target``, whose cycle constants (and their sources) the NPU profile inherits.

The names Vela takes are checked here against fixed lists, so a profile from a stranger never
reaches Vela's command line with anything else: accelerators from Vela's
``--accelerator-config`` choices, system configurations and memory modes from the sections of
Vela's own ``Arm/vela.ini`` (ethos-u-vela 5.2.0,
https://gitlab.arm.com/artificial-intelligence/ethos-u/ethos-u-vela, OPTIONS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt.errors import InputError

#: Ethos-U55 and Ethos-U65 configurations Vela 5.2.0 accepts (``vela --help``); the suffix is
#: the number of 8x8 MACs per cycle (Arm: Ethos-U55 32-256, Ethos-U65 256 or 512).
ACCELERATORS = (
    "ethos-u55-32",
    "ethos-u55-64",
    "ethos-u55-128",
    "ethos-u55-256",
    "ethos-u65-256",
    "ethos-u65-512",
)
#: System configurations of Vela's ``Arm/vela.ini`` and their ``core_clock`` (Hz): the clock
#: Vela turns cycles into time with, so a profile's ``clock_hz`` must be it.
SYSTEM_CONFIGS = {
    "Ethos_U55_Deep_Embedded": 200e6,
    "Ethos_U55_High_End_Embedded": 500e6,
    "Ethos_U65_Embedded": 500e6,
    "Ethos_U65_Mid_End": 500e6,
    "Ethos_U65_High_End": 1e9,
    "Ethos_U65_Client_Server": 1e9,
}
#: Memory modes of ``Arm/vela.ini``; the dedicated-SRAM ones are for the Ethos-U65 only (Vela
#: refuses them for the U55, whose second AXI port is read-only).
MEMORY_MODES = (
    "Sram_Only",
    "Shared_Sram",
    "Dedicated_Sram",
    "Dedicated_Sram_256KB",
    "Dedicated_Sram_384KB",
    "Dedicated_Sram_512KB",
)
#: The one Vela configuration file a profile may use: Vela's own, never a path from a profile.
CONFIG_FILE = "Arm/vela.ini"
#: Host-core fields an NPU profile takes from its host profile (with their sources).
HOST_FIELDS = ("cycles_per_mac", "cycles_per_element", "layer_overhead_cycles", "cycles_per_byte")
_KEYS = ("accelerator", "system_config", "memory_mode", "host_target")


@dataclass(frozen=True)
class NpuConfig:
    """What Vela is told to compile for, and the profile that prices CPU-fallback operators."""

    accelerator: str
    system_config: str
    memory_mode: str
    host_target: str

    def check(self, where: str) -> None:
        """Refuse a name Vela does not know, or a combination it refuses, in one sentence."""
        family = self.accelerator[:9]  # ethos-u55 | ethos-u65
        if self.accelerator not in ACCELERATORS:
            raise InputError(
                f"{where}: npu.accelerator {self.accelerator[:40]!r} is not an Ethos-U55/U65 "
                f"configuration Vela knows; known: {', '.join(ACCELERATORS)}."
            )
        if self.system_config not in SYSTEM_CONFIGS:
            raise InputError(
                f"{where}: npu.system_config {self.system_config[:40]!r} is not a system "
                f"configuration of Vela's {CONFIG_FILE}; known: {', '.join(SYSTEM_CONFIGS)}."
            )
        if not self.system_config.lower().startswith(family.replace("-", "_")):
            raise InputError(
                f"{where}: npu.system_config {self.system_config!r} is not one for the "
                f"{family} accelerator {self.accelerator!r}."
            )
        if self.memory_mode not in MEMORY_MODES:
            raise InputError(
                f"{where}: npu.memory_mode {self.memory_mode[:40]!r} is not a memory mode of "
                f"Vela's {CONFIG_FILE}; known: {', '.join(MEMORY_MODES)}."
            )
        if self.memory_mode.startswith("Dedicated") and family != "ethos-u65":
            raise InputError(
                f"{where}: npu.memory_mode {self.memory_mode!r} is for the Ethos-U65 only; an "
                "Ethos-U55 takes Sram_Only or Shared_Sram."
            )

    @property
    def clock_hz(self) -> float:
        """The NPU clock of the system configuration (``core_clock`` in ``Arm/vela.ini``)."""
        return SYSTEM_CONFIGS[self.system_config]

    def vela_arguments(self) -> list[str]:
        """Vela's command-line options for this configuration (an argument list, no shell)."""
        return [
            "--accelerator-config",
            self.accelerator,
            "--config",
            CONFIG_FILE,
            "--system-config",
            self.system_config,
            "--memory-mode",
            self.memory_mode,
        ]

    def to_dict(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in _KEYS}


def with_host_costs(
    raw: Mapping[str, Any], origin: str, *, load: Callable[[str], Any], names: list[str]
) -> dict[str, Any]:
    """The profile mapping of an NPU target, its ``npu`` block checked and made an
    :class:`NpuConfig`, and the host core's cycle constants (with their sources) filled in.

    ``load`` is :meth:`edgeopt.target.Target.from_name` and ``names`` the built-in profiles
    (passed in: the target module imports this one).

    Raises:
        InputError: the block is not a mapping, has an unknown or missing field, names a host
            profile that is not a built-in CPU profile, or a ``clock_hz`` other than the
            system configuration's clock.
    """
    block = raw["npu"]
    if not isinstance(block, Mapping):
        raise InputError(f"{origin}: npu must be a mapping with fields {', '.join(_KEYS)}.")
    extra = sorted(str(key) for key in block if key not in _KEYS)
    if extra:
        raise InputError(f"{origin}: npu has unknown field {extra[0][:40]!r}.")
    missing = [key for key in _KEYS if not isinstance(block.get(key), str)]
    if missing:
        raise InputError(f"{origin}: npu.{missing[0]} is missing or not a name.")
    config = NpuConfig(**{key: str(block[key]) for key in _KEYS})
    config.check(origin)
    hosts = [name for name in names if name != "host"]
    if config.host_target not in hosts:
        raise InputError(
            f"{origin}: npu.host_target {config.host_target[:40]!r} is not a built-in CPU "
            f"profile; known: {', '.join(n for n in hosts if not n.startswith('ethos'))}."
        )
    clock = raw.get("clock_hz")
    if isinstance(clock, int | float) and float(clock) != config.clock_hz:
        raise InputError(
            f"{origin}: clock_hz must be the {config.system_config} clock Vela times with, "
            f"{config.clock_hz:.0f}, not {float(clock):.0f}."
        )
    host = load(config.host_target)
    if host.npu is not None:
        raise InputError(f"{origin}: npu.host_target {host.name!r} is an NPU, not a CPU profile.")
    filled = dict(raw)
    host_fields = host.to_dict()
    if not isinstance(raw.get("sources") or {}, Mapping):
        raise InputError(f"{origin}: sources must be a mapping of field names to their sources.")
    sources = dict(raw.get("sources") or {})
    for key in HOST_FIELDS:
        filled[key] = host_fields[key]
    for key, text in host.sources.items():
        if key.split(".")[0] in HOST_FIELDS:
            sources[key] = f"the host core's {host.name} profile (CPU-fallback operators): {text}"
    filled["sources"] = sources
    filled["npu"] = config
    return filled
