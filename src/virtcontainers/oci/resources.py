"""``linux.resources`` for the guest's cgroup v2, translated the way runc does it.

The guest mounts a pure cgroup v2 hierarchy, and its crun refuses several
cgroup v1 settings ("cannot set kernel memory with cgroupv2") that runc
silently ignores on cgroup v2.  Engines still write them (``--kernel-memory``,
``--memory-swappiness``, ``--oom-kill-disable``, ``--blkio-weight-device``), so
they are dropped here with a warning, as runc drops them.  What cgroup v2 can
express goes to crun, which converts it: ``cpu.shares`` to ``cpu.weight``,
``blockIO.weight`` to ``io.weight``, ``memory.swap`` to ``memory.swap.max``.

Per-device block I/O settings name host block devices by major:minor.  Those
numbers name other devices in the guest, or none, and a container's files reach
it over the shared filesystem, not through a guest block device: meaningless in
a VM, so they are dropped with a warning.

A cpuset names the VM's vCPUs: :func:`cpus_needed` tells how many vCPUs the pod
needs for it.  The VM has a single memory node, 0; a memory set naming any
other is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from virtcontainers.errors import ConfigError, RuntimeSpecError
from virtcontainers.limits import CPU_PERIOD_US, Limits
from virtcontainers.oci._json import Loc, obj, string

MAX_CPU = 4095
"""Largest CPU number a cpuset may name (Linux's default NR_CPUS on x86-64 is 8192;
a VM here has at most 64 vCPUs, so anything above is refused anyway)."""

_V1_ONLY: dict[str, dict[str, str]] = {
    "memory": {
        "kernel": "cgroup v2 has no separate kernel memory limit",
        "kernelTCP": "cgroup v2 has no separate kernel TCP memory limit",
        "swappiness": "cgroup v2 has no per-cgroup swappiness",
        "disableOOMKiller": "cgroup v2 cannot disable the OOM killer",
        "useHierarchy": "cgroup v2 is always hierarchical",
    },
    "cpu": {
        "realtimeRuntime": "real-time group scheduling is cgroup v1 only",
        "realtimePeriod": "real-time group scheduling is cgroup v1 only",
    },
    "blockIO": {
        "leafWeight": "cgroup v2 has no leaf weight",
        "weightDevice": "",
        "throttleReadBpsDevice": "",
        "throttleWriteBpsDevice": "",
        "throttleReadIOPSDevice": "",
        "throttleWriteIOPSDevice": "",
    },
    "network": {
        "classID": "net_cls is cgroup v1 only",
        "priorities": "net_prio is cgroup v1 only",
    },
}
_HOST_DEVICES = (
    "it names host block devices by number, which are not the guest's; a container's "
    "files reach the VM over the shared filesystem, not a guest block device"
)


def _silent(section: str, key: str, value: object) -> bool:
    """Whether dropping ``value`` loses nothing: unset, or what cgroup v2 does anyway."""
    if value is None or value == [] or value is False:
        return True
    return (section, key) == ("memory", "useHierarchy") and value is True


def translate_resources(value: object, loc: Loc, warnings: list[str]) -> tuple[dict[str, Any], int]:
    """(resources as the guest's crun gets them, vCPUs the cpuset needs or 0)."""
    resources = copy.deepcopy(dict(obj(value, loc)))
    for section, keys in _V1_ONLY.items():
        if resources.get(section) is None:
            continue
        where = loc.key(section)
        part = dict(obj(resources[section], where))
        for key, reason in keys.items():
            if key not in part:
                continue
            dropped = part.pop(key)
            if not _silent(section, key, dropped):
                why = (
                    f"ignored: {_HOST_DEVICES}"
                    if not reason
                    else f"ignored, as runc ignores it on cgroup v2: {reason}"
                )
                warnings.append(where.key(key).note(why))
        if part:
            resources[section] = part
        else:
            del resources[section]
    needed = 0
    cpu = resources.get("cpu")
    if isinstance(cpu, Mapping):
        if cpu.get("cpus"):
            needed = max(parse_cpuset(cpu["cpus"], loc.key("cpu").key("cpus"))) + 1
        if cpu.get("mems"):
            _check_mems(cpu["mems"], loc.key("cpu").key("mems"))
    return resources, needed


def parse_cpuset(value: object, loc: Loc) -> set[int]:
    """The CPUs of a cpuset list such as ``0-3,6``."""
    text = string(value, loc)
    cpus: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise _bad_list(text, loc) from None
        if low < 0 or high < low:
            raise _bad_list(text, loc)
        if high > MAX_CPU:
            raise loc.error(f"{text!r} names CPU {high}; no VM has more than {MAX_CPU + 1}")
        cpus.update(range(low, high + 1))
    return cpus


def _bad_list(text: str, loc: Loc) -> RuntimeSpecError:
    return loc.error(f"{text!r} is not a list of numbers and ranges (such as '0-3,6')")


def _check_mems(value: object, loc: Loc) -> None:
    nodes = parse_cpuset(value, loc)
    others = sorted(nodes - {0})
    if others:
        raise loc.error(
            f"{value!r} names memory node {others[0]}, but the VM has a single memory node, 0"
        )


def update_limits(resources: Mapping[str, Any], where: str) -> Limits:
    """The memory, CPU and pids limits of an update's ``LinuxResources`` (runc's
    ``update --resources``, containerd's Update): the settings a running
    container's guest cgroup can take.  -1 or 0 means no limit, as engines
    write it.  RuntimeSpecError names ``where`` and what is wrong."""
    sections = []
    for key in ("memory", "cpu", "pids"):
        section = resources.get(key) or {}
        if not isinstance(section, Mapping):
            raise RuntimeSpecError(f"{where}: {key}: not a JSON object")
        sections.append(section)
    memory, cpu, pids = sections
    quota, period = _positive(cpu.get("quota")), _positive(cpu.get("period")) or CPU_PERIOD_US
    try:
        return Limits(
            memory_bytes=_positive(memory.get("limit")),
            pids=_positive(pids.get("limit")),
            cpus=quota / period if quota is not None else None,
        )
    except ConfigError as exc:
        raise RuntimeSpecError(f"{where}: {exc}") from None


def _positive(value: object) -> int | None:
    """A limit, or None for none."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
