"""Block volumes: a disk the host hot-plugged, mounted where a container can bind it.

The host plugs a virtio-blk disk whose serial names the volume, then asks
``mount_block``: the agent waits (bounded) for the kernel to show a disk with
that serial, and mounts it at ``/run/vc/volumes/<volume_id>``.  The volume id,
not a path, comes from the host, so nothing outside that directory is
mounted over.  ``unmount_block`` undoes it before the host unplugs the disk.
"""

from __future__ import annotations

import os

from ..args import AgentError, arg_id, check_keys, invalid
from ..osutil import find_sysfs_entry
from ..runtime import RuntimeCall

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core import Agent
    from ..model import Reply

VOLUMES = "/run/vc/volumes"
SYS_BLOCK = "/sys/block"
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "squashfs")
WAIT_SECONDS = 20.0
POLL_SECONDS = 0.05
MAX_SERIAL = 20  # what virtio-blk carries


def mount_block(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(
        args,
        {"volume_id", "serial", "fstype", "read_only"},
        {"volume_id", "serial", "fstype", "read_only"},
    )
    volume_id = arg_id(args, "volume_id")
    serial, fstype, read_only = args["serial"], args["fstype"], args["read_only"]
    if not isinstance(serial, str) or not serial or len(serial) > MAX_SERIAL:
        raise invalid(f"serial must be 1 to {MAX_SERIAL} characters")
    if fstype not in FILESYSTEMS:
        raise invalid(f"fstype must be one of {', '.join(FILESYSTEMS)}")
    if not isinstance(read_only, bool):
        raise invalid("read_only must be true or false")
    target = os.path.join(VOLUMES, volume_id)
    if os.path.ismount(target):
        raise AgentError("exists", f"volume {volume_id!r} is mounted already")
    os.makedirs(target, mode=0o755, exist_ok=True)
    options = ["-o", "ro"] if read_only else []

    def mount() -> bool:
        disk = find_disk(serial)
        if disk is None:
            return False
        argv = ["mount", "-t", str(fstype), *options, f"/dev/{disk}", target]
        RuntimeCall(agent, argv, lambda call: _answer(reply, call, argv))
        return True

    def gave_up() -> None:
        reply.error("not_found", f"no disk with serial {serial!r} appeared")

    agent.loop.poll(mount, WAIT_SECONDS, POLL_SECONDS, gave_up)


def unmount_block(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"volume_id"}, {"volume_id"})
    target = os.path.join(VOLUMES, arg_id(args, "volume_id"))
    if not os.path.ismount(target):
        reply.ok({})  # gone already: unmounting is idempotent
        return
    argv = ["umount", target]

    def done(call: RuntimeCall) -> None:
        if call.ok:
            os.rmdir(target)
        _answer(reply, call, argv)

    RuntimeCall(agent, argv, done)


def find_disk(serial: str) -> str | None:
    """The name (``vdb``) of the virtio disk with this serial, if the kernel shows one."""
    return find_sysfs_entry(SYS_BLOCK, "serial", serial)


def _answer(reply: Reply, call: RuntimeCall, argv: list[str]) -> None:
    if call.ok:
        reply.ok({})
    else:
        reply.error("mount", f"{' '.join(argv)}: {call.error_text()}")
