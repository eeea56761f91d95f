"""A container's block volumes, plugged into its pod's running VM.

Each volume (:class:`~virtcontainers.volumes.BlockVolume`) becomes a
virtio-blk disk in a free PCIe slot, with a serial that names it, and the
agent mounts it at ``/run/vc/volumes/<volume id>``; the container's spec binds
that directory (:mod:`virtcontainers.spec`).  Used by
:class:`virtcontainers.pod.pod.Pod` under the container's lock: attached before
the container is created in the guest, detached after it is removed.
"""

from __future__ import annotations

import asyncio
import contextlib

from virtcontainers.config import ContainerConfig
from virtcontainers.errors import ConfigError, HypervisorError, NotFoundError, VcError
from virtcontainers.hypervisor.base import VMState
from virtcontainers.hypervisor.devices import BlockDevice
from virtcontainers.pod.vm import PodVM
from virtcontainers.volumes import BlockVolume, volume_id


class PodVolumes:
    """The block volumes of one pod's containers."""

    def __init__(self, vm: PodVM) -> None:
        self.vm = vm

    async def attach(self, config: ContainerConfig) -> None:
        """Plug and mount every volume of the container, or none of them.

        Raises ConfigError (the pod has no hot-plug slots), HypervisorError
        (no free slot left; QEMU refused the image) or AgentError (the guest
        could not mount it), after undoing what was done.
        """
        if config.block_volumes and not self.vm.hypervisor.capabilities().hotplug_block:
            raise ConfigError(
                "container.block_volumes",
                f"pod {self.vm.pod_id!r} has no hot-plug slots for the block volumes of container "
                f"{config.id!r}: create the pod with resources.hotplug_slots "
                "(virtc pod create --hotplug-slots N)",
            )
        done: list[int] = []
        try:
            for index, volume in enumerate(config.block_volumes):
                await self._attach_one(config.id, index, volume)
                done.append(index)
        except BaseException:
            await self._detach(config.id, done)
            raise

    async def detach(self, config: ContainerConfig) -> None:
        """Unmount and unplug the container's volumes; what is gone already is
        skipped, and a VM that is not running took its disks with it."""
        if config.block_volumes and self.vm.hypervisor.state is VMState.RUNNING:
            await self._detach(config.id, list(range(len(config.block_volumes))))

    async def _attach_one(self, container_id: str, index: int, volume: BlockVolume) -> None:
        ident = volume_id(container_id, index)
        device = BlockDevice(
            ident, volume.source, volume.read_only, format=volume.format, serial=ident
        )
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
            try:
                await self.vm.agent.unmount_block(ident)
            except VcError as exc:
                # Unplugging a mounted disk still frees the host's side; the
                # guest's kernel then fails the mount's I/O.
                self.vm.log.warning("volume %s: unmount in the guest failed: %s", ident, exc)
        # Each unplug waits out the guest's 5 s grace: wait for them together.
        await asyncio.gather(*(self._unplug(ident) for ident in idents))

    async def _unplug(self, ident: str) -> None:
        with contextlib.suppress(NotFoundError):
            try:
                await self.vm.hypervisor.unplug_device(ident)
            except HypervisorError as exc:
                self.vm.log.warning("volume %s: unplug failed: %s", ident, exc)
