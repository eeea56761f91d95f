"""A container's resource limits, applied by crun in the guest's cgroup v2.

The VM's own size is :class:`~virtcontainers.config.Resources`; these limits
cut a container's share of it.  A limit the VM could never honour (more memory
or CPUs than the VM has) is refused when the container is created, rather than
silently meaning "no limit": the VM does not grow to fit a container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from virtcontainers.errors import ConfigError
from virtcontainers.plainconfig import reject_unknown

T = TypeVar("T")
MIN_MEMORY_BYTES = 6 << 20
"""Below this a container's runtime and shell do not start (Docker's minimum too)."""
CPU_PERIOD_US = 100_000
MAX_PIDS = 1 << 22  # the kernel's pid_max ceiling
_SIZE = re.compile(r"(?P<number>[0-9]+)(?P<unit>[bkmg]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class LimitsDict(TypedDict):
    memory_bytes: int | None
    pids: int | None
    cpus: float | None


@dataclass(frozen=True)
class Limits:
    """``memory_bytes``: memory.max (and no swap); ``pids``: pids.max;
    ``cpus``: CPU time as a number of CPUs (cpu.max quota over a 100 ms
    period).  None: no limit."""

    memory_bytes: int | None = None
    pids: int | None = None
    cpus: float | None = None

    def __post_init__(self) -> None:
        if self.memory_bytes is not None:
            _whole("limits.memory_bytes", self.memory_bytes)
            if self.memory_bytes < MIN_MEMORY_BYTES:
                raise ConfigError(
                    "limits.memory_bytes",
                    f"{self.memory_bytes} bytes is below the minimum, {MIN_MEMORY_BYTES >> 20} MiB",
                )
        if self.pids is not None:
            _whole("limits.pids", self.pids)
            if not 1 <= self.pids <= MAX_PIDS:
                raise ConfigError("limits.pids", f"{self.pids} is outside 1..{MAX_PIDS}")
        if self.cpus is not None:
            if isinstance(self.cpus, bool) or not isinstance(self.cpus, int | float):
                raise ConfigError("limits.cpus", f"{self.cpus!r} is not a number")
            if not self.cpus * CPU_PERIOD_US >= 1000:
                raise ConfigError("limits.cpus", f"{self.cpus} is below 0.01 CPUs")

    @property
    def empty(self) -> bool:
        return self.memory_bytes is None and self.pids is None and self.cpus is None

    def check_fits(self, container_id: str, vcpus: int, memory_mib: int) -> None:
        """Raise ConfigError if the VM (``vcpus``, ``memory_mib``) cannot give this much."""
        if self.memory_bytes is not None and self.memory_bytes > memory_mib << 20:
            raise ConfigError(
                "limits.memory_bytes",
                f"container {container_id!r}: a limit of {self.memory_bytes >> 20} MiB is more "
                f"than its pod's VM has ({memory_mib} MiB): give the pod more memory",
            )
        if self.cpus is not None and self.cpus > vcpus:
            raise ConfigError(
                "limits.cpus",
                f"container {container_id!r}: {self.cpus} CPUs is more than its pod's VM has "
                f"({vcpus}): give the pod more vCPUs",
            )

    def apply_to(self, resources: dict[str, Any]) -> None:
        """Write the limits into an OCI ``linux.resources`` object, over what it had."""
        if self.memory_bytes is not None:
            memory = dict(resources.get("memory") or {})
            memory["limit"] = self.memory_bytes
            memory["swap"] = self.memory_bytes  # memory + swap: no swap at all
            resources["memory"] = memory
        if self.pids is not None:
            resources["pids"] = {"limit": self.pids}
        if self.cpus is not None:
            cpu = dict(resources.get("cpu") or {})
            cpu["quota"] = round(self.cpus * CPU_PERIOD_US)
            cpu["period"] = CPU_PERIOD_US
            resources["cpu"] = cpu

    def merged(self, update: Limits) -> Limits:
        """These limits with the ones ``update`` sets (its None fields keep ours)."""
        return Limits(
            memory_bytes=_first(update.memory_bytes, self.memory_bytes),
            pids=_first(update.pids, self.pids),
            cpus=_first(update.cpus, self.cpus),
        )

    def to_dict(self) -> LimitsDict:
        return {"memory_bytes": self.memory_bytes, "pids": self.pids, "cpus": self.cpus}

    @classmethod
    def from_dict(cls, data: object) -> Limits:
        return cls(**reject_unknown("limits", cls, data))


def parse_size(field: str, text: str) -> int:
    """Bytes from ``64M``, ``1g``, ``512MiB`` or ``1048576``; ConfigError naming ``field``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(field, f"{text!r} is not a size such as 64M, 1G or 1048576")
    return int(match["number"]) * _UNITS[match["unit"].lower()]


def _first(value: T | None, default: T | None) -> T | None:
    return value if value is not None else default


def _whole(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"{value!r} is not a whole number")
