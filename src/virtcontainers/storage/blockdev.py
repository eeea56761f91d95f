"""Block devices a container's rootfs can be: finding them, and keeping the host off them.

A filesystem mounted by two kernels at once (the host's and the guest's) is
corrupted by the first write.  The kernel itself arbitrates: opening a block
device with ``O_EXCL`` fails with EBUSY while any filesystem (in any mount
namespace) is mounted from it, and while such an open file exists, mounting
the device fails with EBUSY.  A pod holds that claim (:func:`claim`) for as
long as the guest may mount the device, so the host cannot mount it then,
and a device the host still has mounted is refused before the guest sees it.

:func:`block_mount_at` reads ``/proc/self/mountinfo`` to tell whether a
directory is the mount point of a block device (vc-runtime's bundle rootfs);
:func:`detach_for_guest` and :func:`restore` move such a mount aside for a
container's lifetime and back.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from virtcontainers.config import ContainerConfig, PodConfig
from virtcontainers.errors import ConfigError, VcError

MOUNTINFO = Path("/proc/self/mountinfo")
SYS_DEV_BLOCK = Path("/sys/dev/block")
_MOUNT_FLAGS = {
    "ro": 0x1,
    "nosuid": 0x2,
    "nodev": 0x4,
    "noexec": 0x8,
    "sync": 0x10,
    "dirsync": 0x80,
    "noatime": 0x400,
    "nodiratime": 0x800,
    "relatime": 0x200000,
    "strictatime": 0x1000000,
    "lazytime": 0x2000000,
}
"""Per-mount options as mountinfo shows them, and their MS_* flags."""
_SUPER_FLAGS = frozenset({"ro", "rw", "sync", "dirsync", "lazytime", "mand"})
"""Superblock options that are flags, not filesystem data."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except OSError:
        return False


def on_the_device(
    config: ContainerConfig, device: Path, fstype: str, read_only: bool = False
) -> ContainerConfig:
    """``config`` with ``device`` (holding ``fstype``) as its rootfs, read-only
    if it was already or ``read_only`` says so."""
    return dataclasses.replace(
        config,
        rootfs=device,
        rootfs_fstype=fstype,
        read_only_rootfs=config.read_only_rootfs or read_only,
    )


def with_a_disk_slot(pod: PodConfig) -> PodConfig:
    """``pod`` with a hot-plug slot at least, for a container's root disk
    (a pod made before its containers gets none of its own)."""
    slots = max(pod.resources.hotplug_slots, 1)
    return dataclasses.replace(
        pod, resources=dataclasses.replace(pod.resources, hotplug_slots=slots)
    )


def claim(device: Path, what: str) -> int:
    """Open ``device`` exclusively and return the file descriptor: the host
    cannot mount it until the fd is closed.

    Raises ConfigError (naming ``what``, the container it is for) when the
    device is mounted or claimed already, or cannot be opened.
    """
    try:
        return os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise ConfigError(
                "container.rootfs",
                f"{device} is in use on the host (mounted, or held by another container): "
                f"{what} cannot have it; unmount it first",
            ) from exc
        raise ConfigError("container.rootfs", f"cannot open {device} for {what}: {exc}") from exc


class BlockMountDict(TypedDict):
    device: str
    target: str
    fstype: str
    flags: int
    data: str


@dataclass(frozen=True)
class BlockMount:
    """A filesystem on a block device, mounted at ``target`` on the host:
    enough to mount it again as it was."""

    device: Path
    target: Path
    fstype: str
    flags: int
    data: str

    def to_dict(self) -> BlockMountDict:
        return {
            "device": str(self.device),
            "target": str(self.target),
            "fstype": self.fstype,
            "flags": self.flags,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, data: BlockMountDict) -> BlockMount:
        return cls(
            Path(data["device"]), Path(data["target"]), data["fstype"], data["flags"], data["data"]
        )


def block_mount_at(directory: Path, mountinfo: str | None = None) -> BlockMount | None:
    """The block device mounted at ``directory`` (the mount on top, if several
    are stacked), or None when ``directory`` is no mount point, its
    filesystem is not on a block device (overlay, tmpfs, 9p, ...), or it shows
    only a subdirectory of that filesystem (a bind): the guest would mount
    the whole device, and see more than the directory shows."""
    target = os.path.realpath(directory)
    text = MOUNTINFO.read_text() if mountinfo is None else mountinfo
    found = None
    for line in text.splitlines():
        entry = _parse_mountinfo_line(line)
        if entry is not None and entry[0] == target:
            found = entry
    if found is None:
        return None
    _, root, dev, options, fstype, source, super_options = found
    device = _device_node(dev, source) if root == "/" else None
    if device is None:
        return None
    flags = _flags(options) | _flags(super_options)
    data = ",".join(o for o in super_options.split(",") if o not in _SUPER_FLAGS)
    return BlockMount(device, Path(target), fstype, flags, data)


def _parse_mountinfo_line(line: str) -> tuple[str, str, str, str, str, str, str] | None:
    """(mount point, root, major:minor, mount options, fs type, source, super options)."""
    fields = line.split()
    if "-" not in fields:
        return None
    sep = fields.index("-")
    if sep < 6 or len(fields) < sep + 4:
        return None
    point = _unescape(fields[4])
    root = _unescape(fields[3])
    source = _unescape(fields[sep + 2])
    return point, root, fields[2], fields[5], fields[sep + 1], source, fields[sep + 3]


def _unescape(text: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space) decoded."""
    return text.encode().decode("unicode_escape").encode("latin-1").decode()


def _device_node(dev: str, source: str) -> Path | None:
    """The /dev node of block device ``major:minor``, if it is one: the mount's
    source when that is the node (``/dev/loop3``, ``/dev/mapper/x``), else the
    kernel's name for it."""
    if not (SYS_DEV_BLOCK / dev).exists():
        return None
    major, minor = (int(n) for n in dev.split(":"))
    candidates = [Path(source)] if source.startswith("/dev/") else []
    candidates.append(Path("/dev") / _kernel_name(dev))
    for candidate in candidates:
        try:
            rdev = candidate.stat().st_rdev
        except OSError:
            continue
        if is_block_device(candidate) and (os.major(rdev), os.minor(rdev)) == (major, minor):
            return candidate
    return None


def _kernel_name(dev: str) -> str:
    for line in (SYS_DEV_BLOCK / dev / "uevent").read_text().splitlines():
        if line.startswith("DEVNAME="):
            return line.removeprefix("DEVNAME=")
    return os.path.basename(os.path.realpath(SYS_DEV_BLOCK / dev))


def _flags(options: str) -> int:
    flags = 0
    for option in options.split(","):
        flags |= _MOUNT_FLAGS.get(option, 0)
    return flags


def detach_for_guest(mount: BlockMount) -> None:
    """Unmount ``mount`` (not lazily: a busy mount stays, and the caller is told).

    Raises ConfigError when the filesystem is in use on the host.
    """
    if _libc.umount2(os.fsencode(mount.target), 0) != 0:
        code = ctypes.get_errno()
        raise ConfigError(
            "container.rootfs",
            f"cannot move the mount of {mount.device} at {mount.target} aside for the VM: "
            f"{os.strerror(code)} (a process on the host uses it?)",
        )


def restore(mount: BlockMount) -> None:
    """Mount the filesystem again where it was, with the options it had."""
    current = block_mount_at(mount.target)
    if current is not None and current.device == mount.device:
        return  # restored already (a delete retried)
    result = _libc.mount(
        os.fsencode(mount.device),
        os.fsencode(mount.target),
        mount.fstype.encode(),
        mount.flags,
        mount.data.encode() or None,
    )
    if result != 0:
        code = ctypes.get_errno()
        raise VcError(
            f"cannot mount {mount.device} back at {mount.target}: {os.strerror(code)}; "
            f"mount it by hand: mount -t {mount.fstype} {mount.device} {mount.target}"
        )
