"""Energy counters read around a timed loop: Linux RAPL (powercap) on CPUs, NVML on NVIDIA GPUs.

Both are cumulative hardware counters, so the energy of a loop is the difference of two reads.
They measure the whole package or the whole GPU, not one process: other jobs running at the same
time are included, which is why a report says which counter was read.

* RAPL, through the Linux powercap framework
  (https://www.kernel.org/doc/html/latest/power/powercap/powercap.html): every top-level zone
  ``<root>/intel-rapl:N`` (AMD Zen CPUs are exposed under the same ``intel-rapl`` name by the
  ``intel_rapl`` driver; ``amd-rapl:N`` is accepted too) is one CPU package; ``energy_uj`` is its
  counter in microjoules and wraps to 0 after ``max_energy_range_uj``. Since Linux 5.10 the file
  is readable by root only (CVE-2020-8694), so a permission error is an expected outcome.
* NVML (https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html):
  ``nvmlDeviceGetTotalEnergyConsumption`` gives millijoules since the driver was loaded (Volta
  and newer). ``pynvml`` is imported only when a GPU provider is benched; it is never a
  dependency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Protocol

#: Where the Linux powercap framework lists its zones.
POWERCAP_ROOT = Path("/sys/class/powercap")
#: Top-level (package) zones only: ``intel-rapl:0`` yes, its sub-zone ``intel-rapl:0:1`` no.
_PACKAGE_ZONE = re.compile(r"^(intel|amd)-rapl:\d+$")


class EnergyMeter(Protocol):
    """A cumulative energy counter: ``read`` before and after, ``energy_uj`` of the two."""

    @property
    def method(self) -> str: ...

    def read(self) -> tuple[float, ...]: ...

    def energy_uj(self, before: tuple[float, ...], after: tuple[float, ...]) -> float: ...


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL package zone: its name, its counter file and the value the counter wraps at."""

    name: str
    energy_path: Path
    max_energy_range_uj: int


@dataclass(frozen=True)
class RaplMeter:
    """The sum of every package zone's counter, wrap-around handled."""

    domains: tuple[RaplDomain, ...]

    @property
    def method(self) -> str:
        return "measured (RAPL package domain)"

    def read(self) -> tuple[float, ...]:
        return tuple(float(d.energy_path.read_text().strip()) for d in self.domains)

    def energy_uj(self, before: tuple[float, ...], after: tuple[float, ...]) -> float:
        total = 0.0
        for domain, start, end in zip(self.domains, before, after, strict=True):
            # The counter restarts at 0 after max_energy_range_uj (powercap docs); one wrap at
            # most fits in a timed loop of seconds (the range is ~2^32 uJ, minutes at 100 W).
            delta = end - start
            total += delta if delta >= 0 else delta + domain.max_energy_range_uj + 1
        return total


def rapl_meter(root: Path = POWERCAP_ROOT) -> tuple[RaplMeter | None, str]:
    """Find the readable RAPL package zones under ``root``.

    Args:
        root: the powercap folder; a test points it at a folder laid out like sysfs.

    Returns:
        (the meter, "") when at least one package counter can be read, else (None, why not).

    Example:
        >>> meter, why = rapl_meter(Path("/no/such/powercap"))
        >>> meter is None, why
        (True, 'no RAPL zones under /no/such/powercap')
    """
    try:
        zones = sorted(p for p in root.iterdir() if _PACKAGE_ZONE.match(p.name))
    except OSError:
        zones = []
    if not zones:
        return None, f"no RAPL zones under {root}"
    domains = []
    for zone in zones:
        name = _read(zone / "name") or zone.name
        if not name.startswith("package"):
            continue  # psys and other platform zones overlap the packages
        energy = zone / "energy_uj"
        try:
            int(energy.read_text().strip())
            max_range = int((zone / "max_energy_range_uj").read_text().strip())
        except PermissionError:
            return None, f"{energy} is not readable (root only since Linux 5.10)"
        except (OSError, ValueError) as exc:
            return None, f"{energy} cannot be read ({exc.__class__.__name__})"
        domains.append(RaplDomain(name, energy, max_range))
    if not domains:
        return None, f"no RAPL package zone under {root}"
    return RaplMeter(tuple(domains)), ""


@dataclass(frozen=True)
class NvmlMeter:
    """NVML's total energy of one GPU, in millijoules since the driver was loaded."""

    handle: Any

    @property
    def method(self) -> str:
        return "measured (NVML)"

    def read(self) -> tuple[float, ...]:
        import pynvml

        return (float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)),)

    def energy_uj(self, before: tuple[float, ...], after: tuple[float, ...]) -> float:
        return (after[0] - before[0]) * 1e3


def nvml_meter(device_index: int = 0) -> tuple[NvmlMeter | None, str]:
    """Open NVML's energy counter of one GPU when ``pynvml`` is installed and the GPU has one.

    Returns:
        (the meter, "") or (None, why not).
    """
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:  # pynvml raises NVMLError subclasses per status code
        return None, f"NVML has no energy counter here ({exc})"
    return NvmlMeter(handle), ""


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
