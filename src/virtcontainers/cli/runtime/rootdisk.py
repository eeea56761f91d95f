"""A bundle rootfs that is the mount point of a block device, run from that device.

The caller (a runc user, a script with a loop device over an ext4 image)
mounted the filesystem at the bundle's rootfs.  The guest must mount it
instead, and never at the same time as the host.  vc-runtime moves the
caller's mount aside for the container's lifetime: ``create`` unmounts it on
the host (not lazily: a filesystem the host still uses is refused, with the
reason) and hands the device to the pod; ``delete`` mounts it back where it
was, with the options it had, once the pod has let go of the device and
``e2fsck -n`` finds the filesystem the guest wrote consistent.  The mount is
remembered in the container's record before it is moved, so a create that
is killed is put right by ``delete --force`` or the next create of that id.

Only a container with a pod of its own does this (it gets a hot-plug slot
for the disk); in a sandbox's pod the rootfs is shared over 9p as before.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from virtcontainers.cli.runtime.state import RuntimeCommandError
from virtcontainers.errors import ConfigError, VcError
from virtcontainers.storage import blockdev
from virtcontainers.storage.blockdev import BlockMount
from virtcontainers.volumes import ROOTFS_FILESYSTEMS


def block_rootfs_at(rootfs: Path, mountinfo: str | None = None) -> BlockMount | None:
    """The block device mounted at the bundle's rootfs, if the guest can mount its
    filesystem (``mountinfo``: that file's text, read when not given)."""
    mount = blockdev.block_mount_at(rootfs, mountinfo)
    if mount is None or mount.fstype not in ROOTFS_FILESYSTEMS:
        return None
    return mount


def move_aside(mount: BlockMount) -> None:
    try:
        blockdev.detach_for_guest(mount)
    except ConfigError as exc:
        raise RuntimeCommandError(str(exc)) from exc


def put_back(mount: BlockMount) -> None:
    """Mount the caller's filesystem again where it was, after checking what the guest wrote.

    Raises RuntimeCommandError when the filesystem fails the check or will not mount.
    """
    if blockdev.block_mount_at(mount.target) is not None:
        return  # never moved (a create killed before), or put back already
    check = subprocess.run(
        ["e2fsck", "-f", "-n", str(mount.device)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeCommandError(
            f"the filesystem on {mount.device}, written by the container, fails `e2fsck -n` "
            f"(exit {check.returncode}); not mounted back at {mount.target}: repair it with "
            f"e2fsck {mount.device} before mounting it"
        )
    try:
        blockdev.restore(mount)
    except VcError as exc:
        raise RuntimeCommandError(str(exc)) from exc
