"""A pod's VM size: :class:`Resources`, and what the host has to give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict

from virtcontainers.errors import ConfigError
from virtcontainers.plainconfig import Plain, check_type

MIN_MEMORY_MIB = 128
MAX_VCPUS = 64
MAX_HOTPLUG_SLOTS = 16  # empty PCIe root ports of one VM
DEFAULT_LOG_MIB = 4
DEFAULT_LAYERS_MIB = 1024


def host_memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError("MemTotal missing from /proc/meminfo")


class ResourcesDict(TypedDict):
    vcpus: int
    memory_mib: int
    hotplug_slots: NotRequired[int]
    log_mib: NotRequired[int]
    layers_mib: NotRequired[int]


@dataclass(frozen=True)
class Resources(Plain):
    """VM size.  vCPUs and memory are the guest's, not a cgroup limit."""

    KIND = "resources"

    vcpus: int = 1
    memory_mib: int = 512
    hotplug_slots: int = 0
    """Empty PCIe slots kept in the VM for devices plugged while it runs
    (block volumes, interfaces).  Slots cost boot time, so there are none
    unless asked for here or needed by the pod's config (see
    :meth:`PodConfig.hotplug_slots`)."""
    log_mib: int = DEFAULT_LOG_MIB
    """The size at which a container's log (``<pod>/logs/<id>.log``, written when
    it has no fds attached) is rotated: one rotated file is kept, so a container's
    logs take at most about twice this."""
    layers_mib: int = DEFAULT_LAYERS_MIB
    """The size of the tmpfs at ``<pod>/layers`` that holds all the pod's
    containers' writable layers: a container that fills it gets ENOSPC."""

    def __post_init__(self) -> None:
        check_type("resources.vcpus", self.vcpus, int)
        check_type("resources.memory_mib", self.memory_mib, int)
        check_type("resources.hotplug_slots", self.hotplug_slots, int)
        check_type("resources.log_mib", self.log_mib, int)
        check_type("resources.layers_mib", self.layers_mib, int)
        for name in ("log_mib", "layers_mib"):
            if getattr(self, name) < 1:
                raise ConfigError(f"resources.{name}", f"{getattr(self, name)} MiB is below 1 MiB")
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise ConfigError("resources.vcpus", f"{self.vcpus} is outside 1..{MAX_VCPUS}")
        if not 0 <= self.hotplug_slots <= MAX_HOTPLUG_SLOTS:
            raise ConfigError(
                "resources.hotplug_slots", f"{self.hotplug_slots} is outside 0..{MAX_HOTPLUG_SLOTS}"
            )
        if self.memory_mib < MIN_MEMORY_MIB:
            raise ConfigError(
                "resources.memory_mib",
                f"{self.memory_mib} MiB is below {MIN_MEMORY_MIB} MiB (the guest needs that much)",
            )

    def to_dict(self) -> ResourcesDict:
        return {
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "hotplug_slots": self.hotplug_slots,
            "log_mib": self.log_mib,
            "layers_mib": self.layers_mib,
        }

    def check_host(self) -> None:
        host = host_memory_mib()
        if self.memory_mib > host:
            raise ConfigError(
                "resources.memory_mib", f"{self.memory_mib} MiB is more than the host's {host} MiB"
            )
