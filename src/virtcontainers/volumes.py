"""Block volumes: a disk image (raw or qcow2) hot-plugged into the pod's VM for a container.

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
from virtcontainers.plainconfig import reject_unknown

FORMATS = ("raw", "qcow2")
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "squashfs")
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
