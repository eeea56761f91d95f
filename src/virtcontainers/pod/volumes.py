"""A container's block volumes and block-device rootfs, plugged into its pod's running VM.

Each volume (:class:`~virtcontainers.volumes.BlockVolume`) becomes a
virtio-blk disk in a free PCIe slot, with a serial that names it, and the
agent mounts it at ``/run/vc/volumes/<volume id>``; the container's spec binds
that directory (:mod:`virtcontainers.spec`).  Used by
:class:`virtcontainers.pod.pod.Pod` under the container's lock: attached before
the container is created in the guest, detached after it is removed.

A block-device rootfs (``ContainerConfig.rootfs_fstype``) is plugged and
mounted the same way, at ``/run/vc/volumes/<rootfs disk id>``, which becomes
crun's root.  From before it is plugged until after it is unplugged the pod
holds the device open with ``O_EXCL`` (:func:`~virtcontainers.storage.blockdev.claim`):
the host cannot mount the filesystem while the guest may have it mounted.

Every disk's id and serial follow from its container's config, so a daemon
that reattaches to the VM knows them again from the pod's record
(:meth:`PodVolumes.restore`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable

from virtcontainers.config import ContainerConfig
from virtcontainers.errors import ConfigError, HypervisorError, NotFoundError, VcError
from virtcontainers.hypervisor.base import VMState
from virtcontainers.hypervisor.devices import BlockDevice
from virtcontainers.pod.vm import PodVM
from virtcontainers.storage import blockdev
from virtcontainers.volumes import BlockVolume, rootfs_disk_id, volume_id


class PodVolumes:
    """The block volumes and block-device roots of one pod's containers."""

    def __init__(self, vm: PodVM) -> None:
        self.vm = vm
        self.claims: dict[str, int] = {}
        """Container id -> the O_EXCL fd of its block-device rootfs."""
        self.stranded: list[int] = []
        """Claims of rootfs disks that would not unplug, held until the VM is gone."""

    async def attach(self, config: ContainerConfig) -> None:
        """Plug and mount the container's block rootfs and every volume, or none of them.

        Raises ConfigError (the pod has no hot-plug slots; the rootfs device
        is mounted on the host), HypervisorError (no free slot left; QEMU
        refused the image) or AgentError (the guest could not mount it),
        after undoing what was done.
        """
        if (config.block_volumes or config.block_rootfs) and not (
            self.vm.hypervisor.capabilities().hotplug_block
        ):
            raise ConfigError(
                "container.block_volumes",
                f"pod {self.vm.pod_id!r} has no hot-plug slots for the block devices of container "
                f"{config.id!r}: create the pod with resources.hotplug_slots "
                "(virtc pod create --hotplug-slots N)",
            )
        if config.block_rootfs:
            await self._attach_rootfs(config)
        done: list[int] = []
        try:
            for index, volume in enumerate(config.block_volumes):
                await self._attach_one(config.id, index, volume)
                done.append(index)
        except BaseException:
            await self._detach(config.id, done)
            await self._detach_rootfs(config.id)
            raise

    async def detach(self, config: ContainerConfig) -> None:
        """Unmount and unplug the container's volumes and block rootfs; what is
        gone already is skipped, and a VM that is not running took its disks
        with it."""
        if config.block_volumes and self.vm.hypervisor.state is VMState.RUNNING:
            await self._detach(config.id, list(range(len(config.block_volumes))))
        await self._detach_rootfs(config.id)

    def restore(self, configs: Iterable[ContainerConfig]) -> list[BlockDevice]:
        """The disks that the containers' volumes and block roots were plugged
        as, for a daemon that reattaches; each block rootfs is claimed again
        (the claim died with the previous daemon).  Raises ConfigError if a
        rootfs device is mounted on the host meanwhile.
        """
        devices: list[BlockDevice] = []
        for config in configs:
            if config.block_rootfs:
                what = f"container {config.id!r} of pod {self.vm.pod_id!r}"
                self.claims[config.id] = blockdev.claim(config.rootfs, what)
                devices.append(_rootfs_device(config))
            devices += [
                _volume_device(config.id, index, volume)
                for index, volume in enumerate(config.block_volumes)
            ]
        return devices

    def release_claims(self) -> None:
        """Let the host have the rootfs devices again: the VM is gone."""
        for container_id in list(self.claims):
            os.close(self.claims.pop(container_id))
        while self.stranded:
            os.close(self.stranded.pop())

    async def _attach_rootfs(self, config: ContainerConfig) -> None:
        assert config.rootfs_fstype is not None
        ident = rootfs_disk_id(config.id)
        what = f"container {config.id!r} of pod {self.vm.pod_id!r}"
        self.claims[config.id] = blockdev.claim(config.rootfs, what)
        device = _rootfs_device(config)
        try:
            await self.vm.hypervisor.hotplug_device(device)
        except BaseException as exc:
            os.close(self.claims.pop(config.id))
            if isinstance(exc, HypervisorError):
                raise HypervisorError(
                    f"pod {self.vm.pod_id!r}: cannot plug the rootfs {config.rootfs} of "
                    f"container {config.id!r}: {exc}"
                ) from exc
            raise
        try:
            await self.vm.agent.mount_block(
                ident, ident, config.rootfs_fstype, config.read_only_rootfs
            )
        except BaseException:
            await self._detach_rootfs(config.id)
            raise
        self.vm.log.info("container %s: rootfs %s on disk %s", config.id, config.rootfs, ident)

    async def _detach_rootfs(self, container_id: str) -> None:
        claim = self.claims.get(container_id)
        if claim is None:
            return
        if self.vm.hypervisor.state is VMState.RUNNING:
            ident = rootfs_disk_id(container_id)
            await self._unmount(ident)
            if not await self._unplug(ident):
                # Still in the VM, maybe mounted: the host stays off it until the VM is gone.
                self.stranded.append(self.claims.pop(container_id))
                return
        os.close(self.claims.pop(container_id))

    async def _attach_one(self, container_id: str, index: int, volume: BlockVolume) -> None:
        device = _volume_device(container_id, index, volume)
        ident = device.id
        try:
            await self.vm.hypervisor.hotplug_device(device)
        except HypervisorError as exc:
            raise HypervisorError(
                f"pod {self.vm.pod_id!r}: cannot plug block volume {volume.source} of container "
                f"{container_id!r}: {exc}"
            ) from exc
        try:
            await self.vm.agent.mount_block(ident, ident, volume.fstype, volume.read_only)
        except BaseException:
            await self._unplug(ident)
            raise
        self.vm.log.info("container %s: %s mounted from disk %s", container_id, volume, ident)

    async def _detach(self, container_id: str, indexes: list[int]) -> None:
        idents = [volume_id(container_id, index) for index in indexes]
        for ident in idents:
            await self._unmount(ident)
        # Each unplug waits out the guest's 5 s grace: wait for them together.
        await asyncio.gather(*(self._unplug(ident) for ident in idents))

    async def _unmount(self, ident: str) -> None:
        try:
            await self.vm.agent.unmount_block(ident)
        except VcError as exc:
            # Unplugging a mounted disk still frees the host's side; the
            # guest's kernel then fails the mount's I/O.
            self.vm.log.warning("disk %s: unmount in the guest failed: %s", ident, exc)

    async def _unplug(self, ident: str) -> bool:
        """Whether the disk is out of the VM (gone already counts)."""
        try:
            await self.vm.hypervisor.unplug_device(ident)
        except NotFoundError:
            pass
        except HypervisorError as exc:
            self.vm.log.warning("disk %s: unplug failed: %s", ident, exc)
            return False
        return True


def _rootfs_device(config: ContainerConfig) -> BlockDevice:
    ident = rootfs_disk_id(config.id)
    return BlockDevice(ident, config.rootfs, config.read_only_rootfs, serial=ident)


def _volume_device(container_id: str, index: int, volume: BlockVolume) -> BlockDevice:
    ident = volume_id(container_id, index)
    return BlockDevice(ident, volume.source, volume.read_only, format=volume.format, serial=ident)
