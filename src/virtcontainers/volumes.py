"""What a container mounts beside its rootfs: disk images hot-plugged into the
pod's VM (:class:`BlockVolume`), and host paths bound in (:class:`Mount`, at the end).

Block volumes: a disk image (raw or qcow2) hot-plugged into the pod's VM for a container.

The image reaches the guest as a virtio-blk disk, never through the shared
directory: the guest's kernel reads the filesystem, and the host only serves
blocks.  For each volume of a container, in order, the pod:

1. plugs the image into the running VM (QMP ``blockdev-add`` + ``device_add``),
   with a serial that names the volume;
2. has the agent mount that disk at ``/run/vc/volumes/<volume id>`` in the guest;
3. binds it into the container at ``destination`` (see :mod:`virtcontainers.spec`).

Deleting the container undoes it in reverse.  A VM that stops takes its
disks with it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from virtcontainers.errors import ConfigError
from virtcontainers.plainconfig import Plain, check_str_tuple, check_type, reject_unknown

FORMATS = ("raw", "qcow2")
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "squashfs")
ROOTFS_FILESYSTEMS = ("ext4", "ext3", "ext2")
"""What a block-device rootfs may hold: the guest image's kernel carries the
ext4 driver (which serves ext2 and ext3 too), not xfs or btrfs."""
GUEST_VOLUMES = "/run/vc/volumes"
MAX_VOLUMES = 8


class BlockVolumeDict(TypedDict):
    source: str
    destination: str
    format: str
    fstype: str
    read_only: bool


@dataclass(frozen=True)
class BlockVolume:
    """A disk image on the host, mounted in the container at ``destination``.

    ``format`` is the image's (``raw`` or ``qcow2``); ``fstype`` the filesystem
    in it, which the guest's kernel mounts.
    """

    source: Path
    destination: str
    format: str = "raw"
    fstype: str = "ext4"
    read_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        if not self.source.is_absolute():
            raise ConfigError("block_volume.source", f"{self.source} is not absolute")
        if not isinstance(self.destination, str) or not os.path.isabs(self.destination):
            raise ConfigError("block_volume.destination", f"{self.destination!r} is not absolute")
        if self.format not in FORMATS:
            raise ConfigError("block_volume.format", f"{self.format!r} is not raw or qcow2")
        if self.fstype not in FILESYSTEMS:
            raise ConfigError(
                "block_volume.fstype", f"{self.fstype!r} is not one of {', '.join(FILESYSTEMS)}"
            )
        if not isinstance(self.read_only, bool):
            raise ConfigError("block_volume.read_only", f"{self.read_only!r} is not a boolean")

    def check_host(self) -> None:
        if not self.source.is_file():
            raise ConfigError("block_volume.source", f"{self.source} is not a file")

    def to_dict(self) -> BlockVolumeDict:
        return {
            "source": str(self.source),
            "destination": self.destination,
            "format": self.format,
            "fstype": self.fstype,
            "read_only": self.read_only,
        }

    @classmethod
    def from_dict(cls, data: object) -> BlockVolume:
        fields = reject_unknown("block_volume", cls, data)
        if not {"source", "destination"} <= set(fields):
            raise ConfigError("block_volume", f"expected source and destination in {data!r}")
        return cls(**fields)


def volume_id(container_id: str, index: int) -> str:
    """The id of a container's ``index``-th volume: its device id, disk serial
    (at most 20 characters) and guest directory name."""
    digest = hashlib.sha256(container_id.encode()).hexdigest()[:12]
    return f"vol{digest}{index}"


def guest_path(container_id: str, index: int) -> str:
    return f"{GUEST_VOLUMES}/{volume_id(container_id, index)}"


def rootfs_disk_id(container_id: str) -> str:
    """The id of a container's block-device rootfs: its device id, disk serial
    and guest directory name, as :func:`volume_id` gives a volume's."""
    digest = hashlib.sha256(container_id.encode()).hexdigest()[:12]
    return f"root{digest}"


def guest_rootfs_disk(container_id: str) -> str:
    """Where the guest mounts a container's block-device rootfs (its crun root)."""
    return f"{GUEST_VOLUMES}/{rootfs_disk_id(container_id)}"


# --- bind mounts: host paths made visible in a container ---------------------------

_ACCESS_FLAGS = (
    "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "atime", "nodiratime",
    "diratime", "relatime", "norelatime", "strictatime", "nostrictatime",
)  # fmt: skip
RECURSIVE_MOUNT_FLAGS = frozenset("r" + flag for flag in _ACCESS_FLAGS)
"""``rnosuid`` and the like: the flag on every submount of a bind too."""
PROPAGATION_OPTIONS = frozenset(
    {"private", "rprivate", "slave", "rslave", "unbindable", "runbindable"}
)
MOUNT_OPTIONS = frozenset(
    {*_ACCESS_FLAGS, *RECURSIVE_MOUNT_FLAGS, *PROPAGATION_OPTIONS, "bind", "rbind", "defaults"}
    | {"sync", "async", "dirsync", "mand", "nomand", "lazytime", "nolazytime"}
)
"""What :attr:`Mount.options` may hold (the OCI names).  ``shared`` and
``rshared`` are not among them: mounts made in a container cannot reach the
host across the VM boundary."""


class MountDict(TypedDict):
    source: str
    destination: str
    read_only: bool
    options: list[str]


@dataclass(frozen=True)
class Mount(Plain):
    """A host directory or file made visible inside a container.

    ``options`` are the bind's options besides ro/rw, by their OCI names (see
    :data:`MOUNT_OPTIONS`): the container's mount gets them in the guest;
    ``bind`` shares the source without its submounts (the default is
    ``rbind``), and ``slave``/``rslave`` let mounts made later under the source
    on the host reach the container.
    """

    KIND = "mount"

    source: str
    destination: str
    read_only: bool = False
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_type("mount.source", self.source, str)
        check_type("mount.destination", self.destination, str)
        check_type("mount.read_only", self.read_only, bool)
        object.__setattr__(self, "options", check_str_tuple("mount.options", self.options))
        for option in self.options:
            if option in ("shared", "rshared"):
                raise ConfigError(
                    "mount.options",
                    f"{option!r}: mounts made in a container cannot propagate to the host "
                    "across the VM boundary",
                )
            if option not in MOUNT_OPTIONS:
                raise ConfigError(
                    "mount.options",
                    f"{option!r} is not a bind mount option "
                    f"(known: {', '.join(sorted(MOUNT_OPTIONS))})",
                )
        if not os.path.isabs(self.destination):
            raise ConfigError("mount.destination", f"{self.destination!r} is not absolute")
        if not os.path.isabs(self.source):
            raise ConfigError("mount.source", f"{self.source!r} is not absolute")

    def to_dict(self) -> MountDict:
        return {
            "source": self.source,
            "destination": self.destination,
            "read_only": self.read_only,
            "options": list(self.options),
        }

    @property
    def recursive(self) -> bool:
        """Whether the source's submounts come along (``rbind``, the default)."""
        return "bind" not in self.options or "rbind" in self.options

    @property
    def propagation(self) -> str:
        """How mounts made later under the source on the host reach the container:
        ``private`` (they do not), ``slave`` or ``rslave`` (they do; on the host
        ``slave`` acts as ``rslave``, the share's mounts being set all at once)."""
        chosen = "private"
        for option in self.options:
            if option in ("private", "rprivate", "slave", "rslave"):
                chosen = "private" if option.endswith("private") else option
        return chosen

    def check_host(self) -> None:
        if not os.path.exists(self.source):
            raise ConfigError("mount.source", f"{self.source} does not exist")
