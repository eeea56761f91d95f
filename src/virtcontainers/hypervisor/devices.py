"""The devices a VM is given: disks, shared directories, serial ports, NICs.

Each validates itself when made, so a driver renders only devices that are
safe to put on a QEMU command line or into a QMP command.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtcontainers.config import MAX_SOCKET_PATH
from virtcontainers.errors import ConfigError
from virtcontainers.ids import ID_PATTERN
from virtcontainers.volumes import FORMATS as DISK_FORMATS

_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
# virtio-blk carries at most 20 bytes of serial.
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")


class SharedFsKind(enum.Enum):
    """How a :class:`SharedFsDevice` reaches the guest."""

    VIRTIO_9P = "virtio-9p"  # in QEMU itself (-fsdev local)
    VIRTIO_FS = "virtio-fs"  # vhost-user: a virtiofsd process serves the directory


def check_id(field: str, value: str) -> None:
    """Raise :class:`ConfigError` unless *value* is a safe QEMU/qdev id."""
    if not ID_PATTERN.match(value):
        raise ConfigError(field, f"{value!r} must match {ID_PATTERN.pattern}")


def check_socket_path(field: str, path: Path) -> None:
    """Raise :class:`ConfigError` if *path* cannot be bound as a unix socket."""
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ConfigError(field, f"{path} is longer than {MAX_SOCKET_PATH} bytes (AF_UNIX limit)")


@dataclass(frozen=True)
class Device:
    """A device attached to the VM; ``id`` is unique within the VM."""

    id: str

    def __post_init__(self) -> None:
        check_id("device id", self.id)

    def check_host(self) -> None:
        """Raise ConfigError unless the host has what this device is made of."""


@dataclass(frozen=True)
class BlockDevice(Device):
    """A disk image, raw or qcow2.  The first block device is the guest's /dev/vda.

    ``serial`` is what the guest's kernel shows for the disk
    (``/sys/block/vdX/serial``), so that it can find a hot-plugged disk by
    name rather than by the order of its arrival.  A qcow2 image is opened
    without its backing file, so an image cannot make QEMU read another file.
    """

    path: Path
    read_only: bool = True
    format: str = "raw"
    serial: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in DISK_FORMATS:
            raise ConfigError(
                f"device {self.id}", f"format {self.format!r} is not one of {DISK_FORMATS}"
            )
        if self.serial is not None and not _SERIAL_RE.match(self.serial):
            raise ConfigError(
                f"device {self.id}", f"serial {self.serial!r}: 1 to 20 of A-Z a-z 0-9 _ . -"
            )

    def check_host(self) -> None:
        if not self.path.exists():
            raise ConfigError(f"device {self.id}", f"{self.path} does not exist")


@dataclass(frozen=True)
class SharedFsDevice(Device):
    """A host directory shared with the guest, mounted there by *mount_tag*.

    *kind* picks the transport: virtio-9p (QEMU serves the directory) or
    virtio-fs (a virtiofsd child serves it; the VM's RAM is then shared memory).
    """

    host_path: Path
    mount_tag: str
    kind: SharedFsKind = SharedFsKind.VIRTIO_9P

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mount_tag or len(self.mount_tag) > 31 or "," in self.mount_tag:
            raise ConfigError("mount_tag", f"{self.mount_tag!r}: 1 to 31 characters, no comma")

    def check_host(self) -> None:
        if not self.host_path.is_dir():
            raise ConfigError(f"device {self.id}", f"{self.host_path} is not a directory")


@dataclass(frozen=True)
class SerialPortDevice(Device):
    """A virtserialport named *name*; QEMU listens on the unix socket *socket_path*."""

    socket_path: Path
    name: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("serial port name", self.name)
        check_socket_path("serial port socket_path", self.socket_path)


@dataclass(frozen=True)
class NetDevice(Device):
    """A virtio-net NIC backed by an existing tap interface.

    With ``tap_fd`` QEMU is handed the tap's queue, opened by the caller (in
    the tap's network namespace, which QEMU need not see, and without the
    capability to open taps itself); else QEMU opens ``tap_name``.
    """

    tap_name: str
    mac: str
    tap_fd: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tap_name or len(self.tap_name) > 15 or "," in self.tap_name:
            raise ConfigError("tap_name", f"{self.tap_name!r}: 1 to 15 characters, no comma")
        if not _MAC_RE.match(self.mac):
            raise ConfigError("mac", f"{self.mac!r} is not a MAC address like 52:54:00:12:34:56")


@dataclass(frozen=True)
class GenerationIdDevice(Device):
    """A VM generation id (QEMU's ``vmgenid``, ACPI ``QEMUVGID``): a new 128-bit
    id at every launch, so a VM restored from a saved state is told (an ACPI
    notification) that it is a new copy, and the guest kernel reseeds its
    random pool at once (Linux's vmgenid driver)."""


def moved_path(path: Path, moves: Mapping[Path, Path]) -> Path:
    """*path* after the directories in *moves* (old to new) were renamed."""
    for old, new in moves.items():
        if path.is_relative_to(old):
            return new / path.relative_to(old)
    return path


def moved_device(device: Device, moves: Mapping[Path, Path]) -> Device:
    """*device* with every path it names followed through *moves*."""
    changes: dict[str, Any] = {
        field.name: moved_path(value, moves)
        for field in dataclasses.fields(device)
        if isinstance(value := getattr(device, field.name), Path)
    }
    return dataclasses.replace(device, **changes)
