"""The host cgroup an engine names for a pod, as a value: its path and CPU limit.

Paths come in two styles, as runc and crun take them:

- cgroupfs: an absolute path in every hierarchy (``/libpod_parent/libpod-ID``);
- systemd: ``SLICE:PREFIX:NAME`` (``machine.slice:libpod:ID``) is the scope
  ``PREFIX-NAME.scope`` under the slice, a slice named with dashes nesting in
  its parents (``kubepods-burstable.slice`` is in ``kubepods.slice``).

The path is checked here, on construction, like every config; making the
cgroup on the host is :mod:`virtcontainers.host.cgroup`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from virtcontainers.errors import ConfigError

_COMPONENT = re.compile(r"[A-Za-z0-9_.@:+=-]{1,255}")


class CgroupDict(TypedDict):
    path: str
    cpus: float | None


@dataclass(frozen=True)
class CgroupConfig:
    """A pod's host cgroup: ``path`` in either style, and the CPU time the engine
    granted (``cpus``; None: no CPU limit).  Its memory limit is the VM's
    memory plus :data:`virtcontainers.host.cgroup.VM_OVERHEAD_MIB`."""

    path: str
    cpus: float | None = None

    def __post_init__(self) -> None:
        relative_path(self.path)  # raises ConfigError for a path we cannot use
        if self.cpus is not None and not self.cpus > 0:
            raise ConfigError("cgroup.cpus", f"{self.cpus} is not a positive number of CPUs")

    def to_dict(self) -> CgroupDict:
        return {"path": self.path, "cpus": self.cpus}

    @classmethod
    def from_dict(cls, data: object) -> CgroupConfig:
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise ConfigError("cgroup", f"expected {{'path': ..., 'cpus': ...}}, got {data!r}")
        cpus = data.get("cpus")
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float)):
            raise ConfigError("cgroup.cpus", f"{cpus!r} is not a number")
        return cls(data["path"], None if cpus is None else float(cpus))


def relative_path(path: str) -> Path:
    """The cgroup's path below a hierarchy's root, from either style of ``path``."""
    if not path or len(path) > 4096:
        raise ConfigError("cgroup.path", f"{path!r} is not a cgroup path")
    if not path.startswith("/") and path.count(":") == 2:
        parts = _systemd_parts(path)
    else:
        parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", "..") or not _COMPONENT.fullmatch(part):
            raise ConfigError("cgroup.path", f"{path!r}: {part!r} is not a cgroup name")
    if not parts:
        raise ConfigError("cgroup.path", f"{path!r} names the root cgroup")
    return Path(*parts)


def _systemd_parts(path: str) -> list[str]:
    slice_name, prefix, name = path.split(":")
    parts = _expand_slice(slice_name or "system.slice", path)
    unit = f"{prefix}-{name}.scope" if prefix else name
    return [*parts, unit]


def _expand_slice(slice_name: str, path: str) -> list[str]:
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise ConfigError("cgroup.path", f"{path!r}: {slice_name!r} is not a systemd slice")
    stem = slice_name.removesuffix(".slice")
    if stem == "-":
        return []
    words = stem.split("-")
    if not all(words):
        raise ConfigError("cgroup.path", f"{path!r}: {slice_name!r} is not a systemd slice")
    return [f"{'-'.join(words[: n + 1])}.slice" for n in range(len(words))]
