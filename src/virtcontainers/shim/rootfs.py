"""The container's root filesystem as containerd gives it: mounts for the shim to make.

containerd's snapshotter answers a task's rootfs as mounts (an overlay, a
bind), which a shim mounts on ``<bundle>/rootfs`` before the runtime reads
the bundle, and unmounts when the task is deleted.

One filesystem on a block device (the devmapper snapshotter's ext4 on
``/dev/mapper/...``, or a loop device) is not mounted on the host at all: it
is a :class:`BlockRoot`, which the pod hot-plugs and the guest mounts
(docs/block-rootfs.md).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import RuntimeSpecError
from virtcontainers.storage.blockdev import is_block_device
from virtcontainers.volumes import ROOTFS_FILESYSTEMS

ROOTFS = "rootfs"
MAX_STACKED = 16
"""More mounts than this on one rootfs are not containerd's: left for the operator."""


@dataclass(frozen=True)
class Mount:
    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockRoot:
    """A rootfs that is one filesystem on a block device, for the VM to mount."""

    device: Path
    fstype: str
    read_only: bool


def block_root(mounts: Sequence[Mount]) -> BlockRoot | None:
    """The block device the rootfs is, when containerd hands one mount of a
    filesystem the guest can mount from a block device; else None (mounted on
    the host and shared, as any other rootfs)."""
    if len(mounts) != 1:
        return None
    [mount] = mounts
    if mount.type not in ROOTFS_FILESYSTEMS or not is_block_device(Path(mount.source)):
        return None
    return BlockRoot(Path(mount.source), mount.type, "ro" in mount.options)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def mount_rootfs(bundle: Path, mounts: Sequence[Mount]) -> None:
    """Mount ``mounts`` in order on the bundle's rootfs; RuntimeSpecError with
    mount's own message when one fails (those made already are undone)."""
    target = bundle / ROOTFS
    target.mkdir(exist_ok=True)
    for made, mount in enumerate(mounts):
        argv = ["mount", "-t", mount.type, mount.source, str(target)]
        if mount.options:
            argv[1:1] = ["-o", ",".join(mount.options)]
        result = _run(argv)
        if result.returncode != 0:
            for _ in range(made):
                _run(["umount", str(target)])
            raise RuntimeSpecError(
                f"rootfs: cannot mount {mount.type} {mount.source} on {target}: "
                f"{result.stderr.strip()}"
            )


def unmount_rootfs(bundle: Path) -> None:
    """Unmount whatever is mounted on the bundle's rootfs (nothing: no error)."""
    target = bundle / ROOTFS
    for _ in range(MAX_STACKED):
        if not _is_mountpoint(target):
            return
        if _run(["umount", str(target)]).returncode != 0:
            # Something in the host still holds it: detach it from the tree now.
            _run(["umount", "--lazy", str(target)])


def _is_mountpoint(path: Path) -> bool:
    return _run(["mountpoint", "-q", str(path)]).returncode == 0
