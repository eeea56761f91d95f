"""The host cgroup an engine names for a pod: its QEMU, helpers and daemon go in it.

Engines look for a container's usage at the ``cgroupsPath`` they gave the
runtime (``podman stats``, the kubelet's cAdvisor), and expect the limits they
granted to hold there.  For a VM that means the pod's host processes: the pod
daemon joins the cgroup before it starts QEMU, so QEMU, virtiofsd and the
daemon itself are all in it, and the VM as a whole is limited and accounted.

Paths come in two styles, as runc and crun take them:

- cgroupfs: an absolute path in every hierarchy (``/libpod_parent/libpod-ID``);
- systemd: ``SLICE:PREFIX:NAME`` (``machine.slice:libpod:ID``) is the scope
  ``PREFIX-NAME.scope`` under the slice, a slice named with dashes nesting in
  its parents (``kubepods-burstable.slice`` is in ``kubepods.slice``).  The
  directories are made directly, as systemd would name them: no systemd
  manager is asked (none runs on hosts like this one).

Hosts are cgroup v2 only, v1, or hybrid (v1 controllers beside a v2 tree for
process tracking, as here); every hierarchy that holds a controller used here,
and the unified one, gets the directory.  See docs/resources.md.  What the
engine names (the path and the CPU limit) is a value of its own,
:class:`~virtcontainers.cgroupconfig.CgroupConfig`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.cgroupconfig import CgroupConfig, relative_path
from virtcontainers.errors import VcError

MOUNTINFO = "/proc/self/mountinfo"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio", "name=systemd")
"""What usage and limits need; cpuset and devices would need seeding, and the
VM's own devices and CPUs are not the engine's to restrict through them."""
V2_CONTROLLERS = ("cpu", "memory", "pids", "io")
CPU_PERIOD_US = 100_000
VM_OVERHEAD_MIB = 256
"""Host memory a VM needs beyond its guest RAM: QEMU, virtiofsd, the daemon."""
_REMOVE_TRIES = 50


@dataclass(frozen=True)
class Hierarchy:
    mount: Path
    root: str  # the part of the hierarchy this mount shows ("/" normally)
    version: int  # 1 or 2
    controllers: frozenset[str]

    def directory(self, relative: Path) -> Path:
        # A mount that shows a sub-tree (a cgroup namespace) shows paths below it.
        return self.mount / relative


def hierarchies(mountinfo: str = MOUNTINFO) -> list[Hierarchy]:
    """The cgroup hierarchies mounted here that a pod's cgroup goes in."""
    found = []
    for line in Path(mountinfo).read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if fstype == "cgroup2":
            found.append(Hierarchy(Path(fields[4]), fields[3], 2, frozenset()))
        elif fstype == "cgroup":
            controllers = frozenset(o for o in options if o in V1_CONTROLLERS)
            if controllers:
                found.append(Hierarchy(Path(fields[4]), fields[3], 1, controllers))
    return found


class HostCgroup:
    """One pod's cgroup, in every hierarchy of this host."""

    def __init__(self, config: CgroupConfig, mountinfo: str = MOUNTINFO) -> None:
        self.config = config
        self.relative = relative_path(config.path)
        self._hierarchies = hierarchies(mountinfo)
        self.directories = [h.directory(self.relative) for h in self._hierarchies]

    def create(self, memory_mib: int) -> None:
        """Make the cgroup (parents too, as runc does) and set its limits."""
        for hierarchy in self._hierarchies:
            directory = hierarchy.directory(self.relative)
            try:
                directory.mkdir(parents=True, exist_ok=True)
                if hierarchy.version == 2:
                    _delegate_controllers(hierarchy.mount, self.relative)
                self._limit(hierarchy, directory, memory_mib)
            except OSError as exc:
                raise VcError(f"host cgroup {directory}: {exc.strerror or exc}") from exc

    def _limit(self, hierarchy: Hierarchy, directory: Path, memory_mib: int) -> None:
        memory = (memory_mib + VM_OVERHEAD_MIB) << 20
        quota = round(self.config.cpus * CPU_PERIOD_US) if self.config.cpus else None
        if hierarchy.version == 2:
            enabled = _read(directory / "cgroup.controllers").split()
            if "memory" in enabled:
                _write(directory / "memory.max", str(memory))
            if "cpu" in enabled and quota is not None:
                _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        if "memory" in hierarchy.controllers:
            _write(directory / "memory.limit_in_bytes", str(memory))
        if "cpu" in hierarchy.controllers and quota is not None:
            _write(directory / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(directory / "cpu.cfs_quota_us", str(quota))

    def enter(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup, everywhere."""
        for directory in self.directories:
            try:
                _write(directory / "cgroup.procs", str(pid))
            except OSError as exc:
                raise VcError(
                    f"host cgroup {directory}: cannot move process {pid} in: {exc.strerror}"
                ) from exc

    def remove(self) -> None:
        """Remove the cgroup's own directory (not its parents, which others may use).

        A process of ours still in it (the daemon deleting its own pod) is moved
        to the parent first; other processes are waited for briefly, as the VM's
        last exit lands.  Raises VcError naming what stays.
        """
        left = []
        for directory in self.directories:
            with contextlib.suppress(FileNotFoundError, OSError):
                if str(os.getpid()) in _read(directory / "cgroup.procs").split():
                    _write(directory.parent / "cgroup.procs", str(os.getpid()))
            if not _rmdir_when_empty(directory):
                left.append(str(directory))
        if left:
            raise VcError(f"host cgroup still has processes: {', '.join(left)}")

    def usage(self) -> tuple[int, int]:
        """(CPU time in ns, memory in bytes) used by the pod's host processes."""
        cpu = memory = 0
        for hierarchy, directory in zip(self._hierarchies, self.directories, strict=True):
            with contextlib.suppress(OSError, ValueError):
                if hierarchy.version == 2:
                    stat = dict(line.split() for line in _read(directory / "cpu.stat").splitlines())
                    cpu = cpu or int(stat["usage_usec"]) * 1000
                    memory = memory or int(_read(directory / "memory.current"))
                elif "cpuacct" in hierarchy.controllers:
                    cpu = int(_read(directory / "cpuacct.usage"))
                elif "memory" in hierarchy.controllers:
                    memory = int(_read(directory / "memory.usage_in_bytes"))
        return cpu, memory


def leave_to_root() -> None:
    """Move this process to each hierarchy's root cgroup: a background VM
    (a template being made, a pool's waiting clone) that a pod's start began
    must neither count against that pod's limits nor keep the engine from
    removing its cgroup."""
    for hierarchy in hierarchies():
        with contextlib.suppress(OSError):
            (hierarchy.mount / "cgroup.procs").write_text(str(os.getpid()))


def _delegate_controllers(mount: Path, relative: Path) -> None:
    """On cgroup v2, a child has the memory and cpu files only if every ancestor
    hands those controllers down.  Ones the host does not offer are skipped."""
    directory = mount
    for part in relative.parts:
        offered = _read(directory / "cgroup.controllers").split()
        wanted = [f"+{c}" for c in V2_CONTROLLERS if c in offered]
        if wanted:
            with contextlib.suppress(OSError):  # busy with processes: limits stay unset
                _write(directory / "cgroup.subtree_control", " ".join(wanted))
        directory = directory / part


def _rmdir_when_empty(directory: Path) -> bool:
    for _ in range(_REMOVE_TRIES):
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return False
        time.sleep(0.1)
    return False


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    # cgroup files take one write of the whole value; no truncation, no temp file.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
