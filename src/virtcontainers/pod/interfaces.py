"""Interfaces added to and removed from a running pod (hot-plug).

The caller puts an interface in the pod's namespace; it is tapped and
redirected (:mod:`virtcontainers.pod.nics`), hot-plugged as a NIC, and
configured in the guest like those of boot.  Used by
:class:`virtcontainers.pod.pod.Pod`, which hands over its VM, its NICs and a
check of its state; one change at a time.
"""

from __future__ import annotations

import asyncio
import os
from typing import Protocol

from virtcontainers.errors import (
    ConfigError,
    NetworkError,
    NotFoundError,
    VcError,
)
from virtcontainers.pod.nics import NIC_APPEAR_TIMEOUT, Nic, PodNics, guest_settings
from virtcontainers.pod.vm import PodVM
from virtcontainers.states import PodState
from virtcontainers.status import InterfaceStatus


class StateCheck(Protocol):
    """Raises StateError unless the pod is in one of ``allowed`` for ``operation``."""

    def __call__(self, operation: str, *allowed: PodState) -> None: ...


class PodInterfaces:
    """The hot-plugged interfaces of one pod."""

    def __init__(
        self, vm: PodVM, netns: str | None, nics: PodNics, require_state: StateCheck
    ) -> None:
        self.vm = vm
        self.netns = netns
        self.nics = nics
        self.require_state = require_state
        self._lock = asyncio.Lock()

    async def add(self, name: str) -> InterfaceStatus:
        """Carry interface ``name`` of the pod's namespace into the running VM.

        The caller has put it in the namespace.  It is tapped and redirected,
        hot-plugged as a NIC, and configured in the guest like those of boot;
        any failure undoes all of that.  Raises ConfigError (no network
        namespace; an interface that cannot be carried), NotFoundError,
        ExistsError, NetworkError, HypervisorError (no free slot), AgentError.
        """
        async with self._lock:
            self.require_state("add an interface to", PodState.RUNNING)
            self._require_netns("add")
            nic, device = await self.nics.plug(name)
            try:
                try:
                    await self.vm.hypervisor.hotplug_device(device)
                finally:
                    assert device.tap_fd is not None
                    os.close(device.tap_fd)  # QEMU has its own copy, or failed
                try:
                    nics, routes = guest_settings([nic.interface])
                    await self.vm.agent.configure_network(nics, routes, NIC_APPEAR_TIMEOUT)
                except BaseException:
                    await self._unplug_quietly(nic)
                    raise
            except BaseException:
                await self._give_back_quietly(name)
                raise
            self.vm.log.info("interface %s added as %s", name, nic.device_id)
            return _interface_status(nic)

    async def remove(self, name: str) -> None:
        """Take interface ``name`` out of the running VM and give it back to the namespace.

        Returns once the guest has released the NIC (its addresses and routes
        go with it) and the tap and redirects are gone; the interface is then
        as the caller gave it.  Raises ConfigError (no network namespace),
        NotFoundError (not attached), HypervisorError (the guest did not
        release it: it stays attached), NetworkError.
        """
        async with self._lock:
            self.require_state("remove an interface from", PodState.RUNNING)
            self._require_netns("remove")
            nic = self.nics.nic(name)
            try:
                await self.vm.hypervisor.unplug_device(nic.device_id)
            except NotFoundError:
                # Out of the VM already: an earlier remove failed after the unplug.
                self.vm.log.info("%s of %s was unplugged already", nic.device_id, name)
            await self.nics.unplug(name)
            self.vm.log.info("interface %s removed (was %s)", name, nic.device_id)

    def list(self) -> list[InterfaceStatus]:
        """The interfaces the VM carries: those of boot, then those added."""
        self.require_state("list the interfaces of", PodState.RUNNING, PodState.PAUSED)
        return [_interface_status(nic) for nic in self.nics.nics]

    def _require_netns(self, action: str) -> None:
        if self.netns is None:
            raise ConfigError(
                "pod.netns",
                f"pod {self.vm.pod_id!r} has no network namespace, so no interfaces to {action}: "
                "create the pod with one (PodConfig.netns, virtc pod create --netns)",
            )

    async def _unplug_quietly(self, nic: Nic) -> None:
        # The failure being raised is the one to report: this one is only logged.
        try:
            await self.vm.hypervisor.unplug_device(nic.device_id)
        except VcError as exc:
            self.vm.log.warning("undoing the hot-plug of %s: %s", nic.interface.name, exc)

    async def _give_back_quietly(self, name: str) -> None:
        try:
            await self.nics.unplug(name)
        except (NetworkError, NotFoundError) as exc:
            self.vm.log.warning("undoing the attach of %s: %s", name, exc)


def _interface_status(nic: Nic) -> InterfaceStatus:
    interface = nic.interface
    return InterfaceStatus(
        interface.name, interface.mac, interface.mtu, interface.addresses, nic.hotplugged
    )
