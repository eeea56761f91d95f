"""A container: :class:`ContainerConfig`, its rootfs, process, mounts and volumes."""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from virtcontainers.config.cmd import PROCESS_FIELDS, Cmd, CmdDict
from virtcontainers.errors import ConfigError
from virtcontainers.ids import validate_hostname, validate_id
from virtcontainers.limits import Limits, LimitsDict
from virtcontainers.plainconfig import check_type, reject_unknown
from virtcontainers.volumes import (
    MAX_VOLUMES,
    ROOTFS_FILESYSTEMS,
    BlockVolume,
    BlockVolumeDict,
    Mount,
    MountDict,
)

JOINABLE_NAMESPACES = frozenset({"ipc", "uts", "pid", "mount", "cgroup", "user", "time"})


class ContainerConfigDict(TypedDict):
    id: str
    rootfs: str
    cmd: CmdDict
    mounts: list[MountDict]
    hostname: str | None
    read_only_rootfs: bool
    annotations: dict[str, str]
    oci: dict[str, object] | None  # an OCI runtime-spec config, as given
    join_namespaces: dict[str, str]
    writable_layer: bool
    limits: LimitsDict
    block_volumes: list[BlockVolumeDict]
    rootfs_fstype: NotRequired[str | None]


@dataclass(frozen=True)
class ContainerConfig:
    """A container: a host rootfs directory and the process to run in it.

    ``oci`` is an optional OCI runtime-spec config used as the base of the
    container's spec in the guest (what a runtime such as vc-runtime
    translated), without a ``process``: ``cmd`` is the container's process;
    its ``root`` is replaced by the rootfs.  Without it the library makes a
    default spec.

    ``writable_layer``: the rootfs is a base that other containers share, so
    it is kept read-only and this container writes to a layer of its own
    (overlayfs on the host), which lives until the container is deleted.
    Without it the container writes to the rootfs directory itself, as runc's
    bundle rootfs is written.

    ``rootfs_fstype``: the rootfs is not a directory but a block device (a
    loop device, a device-mapper volume) holding a filesystem of this type
    (one of :data:`~virtcontainers.volumes.ROOTFS_FILESYSTEMS`).  The pod
    hot-plugs it and the guest mounts it as the container's root; nothing of
    it is shared over 9p.  While the container exists the pod holds the device
    open exclusively, so the host cannot mount it (see docs/block-rootfs.md).
    """

    id: str
    rootfs: Path
    cmd: Cmd
    mounts: tuple[Mount, ...] = ()
    hostname: str | None = None
    read_only_rootfs: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    oci: Mapping[str, Any] | None = None
    join_namespaces: Mapping[str, str] = field(default_factory=dict)
    """Namespace type -> id of a container in the same pod whose namespace this
    one joins (a CRI pod's containers share the sandbox's ipc and uts)."""
    writable_layer: bool = False
    limits: Limits = field(default_factory=Limits)
    """Memory, pids and CPU limits, applied in the guest (see limits.py)."""
    block_volumes: tuple[BlockVolume, ...] = ()
    """Disk images hot-plugged into the VM and mounted in the container (volumes.py)."""
    rootfs_fstype: str | None = None

    def __post_init__(self) -> None:
        validate_id("container", self.id)
        for kind, other in dict(self.join_namespaces).items():
            if kind not in JOINABLE_NAMESPACES:
                raise ConfigError("container.join_namespaces", f"{kind!r} cannot be joined")
            validate_id("container", other)
            if other == self.id:
                raise ConfigError("container.join_namespaces", "a container cannot join itself")
        object.__setattr__(self, "rootfs", Path(self.rootfs))
        if not self.rootfs.is_absolute():
            raise ConfigError("container.rootfs", f"{str(self.rootfs)!r} is not absolute")
        check_type("container.cmd", self.cmd, Cmd)
        object.__setattr__(self, "mounts", tuple(self.mounts))
        for mount in self.mounts:
            check_type("container.mounts", mount, Mount)
        validate_hostname("container.hostname", self.hostname)
        check_type("container.read_only_rootfs", self.read_only_rootfs, bool)
        check_type("container.writable_layer", self.writable_layer, bool)
        if self.writable_layer and any(c in str(self.rootfs) for c in ",:\\"):
            raise ConfigError(
                "container.rootfs",
                f"{self.rootfs}: a rootfs with a writable layer cannot hold ',', ':' or '\\' "
                "(overlayfs separators)",
            )
        for key, value in dict(self.annotations).items():
            check_type("container.annotations", key, str)
            check_type("container.annotations", value, str)
        if self.oci is not None:
            check_type("container.oci", self.oci, Mapping)
            if "process" in self.oci:
                raise ConfigError(
                    "container.oci", "holds a 'process': the container's process is its cmd"
                )
        check_type("container.limits", self.limits, Limits)
        object.__setattr__(self, "block_volumes", tuple(self.block_volumes))
        for volume in self.block_volumes:
            check_type("container.block_volumes", volume, BlockVolume)
        if len(self.block_volumes) > MAX_VOLUMES:
            raise ConfigError("container.block_volumes", f"at most {MAX_VOLUMES} per container")
        self._check_rootfs_fstype()

    def _check_rootfs_fstype(self) -> None:
        if self.rootfs_fstype is None:
            return
        if self.rootfs_fstype not in ROOTFS_FILESYSTEMS:
            raise ConfigError(
                "container.rootfs_fstype",
                f"{self.rootfs_fstype!r} is not one of {', '.join(ROOTFS_FILESYSTEMS)} "
                f"(container {self.id!r})",
            )
        if self.writable_layer:
            raise ConfigError(
                "container.writable_layer",
                f"container {self.id!r}: a block-device rootfs has no writable layer "
                "(it is the container's own disk)",
            )

    @property
    def block_rootfs(self) -> bool:
        """Whether the rootfs is a block device hot-plugged into the VM."""
        return self.rootfs_fstype is not None

    def check_host(self) -> None:
        if self.block_rootfs:
            if not stat.S_ISBLK(_mode(self.rootfs)):
                raise ConfigError(
                    "container.rootfs",
                    f"{self.rootfs} is not a block device (container {self.id!r}, "
                    f"rootfs_fstype {self.rootfs_fstype!r})",
                )
        elif not self.rootfs.is_dir():
            raise ConfigError(
                "container.rootfs", f"{self.rootfs} is not a directory (container {self.id!r})"
            )
        for mount in self.mounts:
            mount.check_host()
        for volume in self.block_volumes:
            volume.check_host()

    def to_dict(self) -> ContainerConfigDict:
        return {
            "id": self.id,
            "rootfs": str(self.rootfs),
            "cmd": self.cmd.to_dict(),
            "mounts": [m.to_dict() for m in self.mounts],
            "hostname": self.hostname,
            "read_only_rootfs": self.read_only_rootfs,
            "annotations": dict(self.annotations),
            "oci": dict(self.oci) if self.oci is not None else None,
            "join_namespaces": dict(self.join_namespaces),
            "writable_layer": self.writable_layer,
            "limits": self.limits.to_dict(),
            "block_volumes": [v.to_dict() for v in self.block_volumes],
            "rootfs_fstype": self.rootfs_fstype,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerConfig:
        reject_unknown("container", cls, data)
        values = dict(data)
        if "cmd" not in values or "id" not in values or "rootfs" not in values:
            raise ConfigError("container", "'id', 'rootfs' and 'cmd' are required")
        values["cmd"], values["oci"] = _cmd_and_oci(values["cmd"], values.get("oci"))
        values["mounts"] = tuple(Mount.from_dict(m) for m in values.get("mounts") or ())
        values["rootfs"] = Path(values["rootfs"])
        values["annotations"] = dict(values.get("annotations") or {})
        values["join_namespaces"] = dict(values.get("join_namespaces") or {})
        values["limits"] = Limits.from_dict(values.get("limits") or {})
        values["block_volumes"] = tuple(
            BlockVolume.from_dict(v) for v in values.get("block_volumes") or ()
        )
        return cls(**values)


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except OSError:
        return 0


def _cmd_and_oci(cmd: object, oci: object) -> tuple[Cmd, object]:
    """A stored container's Cmd and OCI spec.  Records stored before the Cmd
    carried its runtime settings (they have no ``runtime_settings``) kept
    them in the spec's process, read once here so that the pods of a host
    survive the upgrade; such a record with a spec had no default settings."""
    if not isinstance(cmd, Mapping):
        raise ConfigError("container.cmd", f"expected an object, got {type(cmd).__name__}")
    if "runtime_settings" in cmd or not isinstance(oci, Mapping):
        return Cmd.from_dict(cmd), oci
    rest = dict(oci)
    process = rest.pop("process", None) or {}
    if not isinstance(process, Mapping):
        raise ConfigError("container.oci", f"its process is not an object: {process!r}")
    settings = {key: value for key, value in process.items() if key not in PROCESS_FIELDS}
    return dataclasses.replace(Cmd.from_dict(cmd), runtime_settings=settings), rest
