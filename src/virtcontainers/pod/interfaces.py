"""Interfaces added to and removed from a running pod (hot-plug).

The caller puts an interface in the pod's namespace; it is tapped and
redirected (:mod:`virtcontainers.pod.nics`), hot-plugged as a NIC, and
configured in the guest like those of boot.  Used by
:class:`virtcontainers.pod.pod.Pod`, one change at a time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from virtcontainers.errors import (
    ConfigError,
    NetworkError,
    NotFoundError,
    VcError,
)
from virtcontainers.pod.nics import Nic, guest_settings
from virtcontainers.states import PodState
from virtcontainers.status import InterfaceStatus

if TYPE_CHECKING:
    from virtcontainers.pod.pod import Pod

# How long the guest may take to show a hot-plugged NIC.
NIC_APPEAR_TIMEOUT = 60.0


class PodInterfaces:
    """The hot-plugged interfaces of one pod."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod

    async def add(self, name: str) -> InterfaceStatus:
        """Carry interface ``name`` of the pod's namespace into the running VM.

        The caller has put it in the namespace.  It is tapped and redirected,
        hot-plugged as a NIC, and configured in the guest like those of boot;
        any failure undoes all of that.  Raises ConfigError (no network
        namespace; an interface that cannot be carried), NotFoundError,
        ExistsError, NetworkError, HypervisorError (no free slot), AgentError.
        """
        async with self.pod._network_lock:
            self.pod._require_running("add an interface to")
            self._require_netns("add")
            nic, device = await self.pod.network.plug(name)
            try:
                try:
                    await self.pod.hypervisor.hotplug_device(device)
                finally:
                    assert device.tap_fd is not None
                    os.close(device.tap_fd)  # QEMU has its own copy, or failed
                try:
                    nics, routes = guest_settings([nic.interface])
                    await self.pod.agent.configure_network(nics, routes, NIC_APPEAR_TIMEOUT)
                except BaseException:
                    await self._unplug_quietly(nic)
                    raise
            except BaseException:
                await self._give_back_quietly(name)
                raise
            self.pod.log.info("interface %s added as %s", name, nic.device_id)
            return _interface_status(nic)

    async def remove(self, name: str) -> None:
        """Take interface ``name`` out of the running VM and give it back to the namespace.

        Returns once the guest has released the NIC (its addresses and routes
        go with it) and the tap and redirects are gone; the interface is then
        as the caller gave it.  Raises ConfigError (no network namespace),
        NotFoundError (not attached), HypervisorError (the guest did not
        release it: it stays attached), NetworkError.
        """
        async with self.pod._network_lock:
            self.pod._require_running("remove an interface from")
            self._require_netns("remove")
            nic = self.pod.network.nic(name)
            try:
                await self.pod.hypervisor.unplug_device(nic.device_id)
            except NotFoundError:
                # Out of the VM already: an earlier remove failed after the unplug.
                self.pod.log.info("%s of %s was unplugged already", nic.device_id, name)
            await self.pod.network.unplug(name)
            self.pod.log.info("interface %s removed (was %s)", name, nic.device_id)

    def list(self) -> list[InterfaceStatus]:
        """The interfaces the VM carries: those of boot, then those added."""
        self.pod._require("list the interfaces of", PodState.RUNNING, PodState.PAUSED)
        return [_interface_status(nic) for nic in self.pod.network.nics]

    def _require_netns(self, action: str) -> None:
        if self.pod.config.netns is None:
            raise ConfigError(
                "pod.netns",
                f"pod {self.pod.id!r} has no network namespace, so no interfaces to {action}: "
                "create the pod with one (PodConfig.netns, virtc pod create --netns)",
            )

    async def _unplug_quietly(self, nic: Nic) -> None:
        # The failure being raised is the one to report: this one is only logged.
        try:
            await self.pod.hypervisor.unplug_device(nic.device_id)
        except VcError as exc:
            self.pod.log.warning("undoing the hot-plug of %s: %s", nic.interface.name, exc)

    async def _give_back_quietly(self, name: str) -> None:
        try:
            await self.pod.network.unplug(name)
        except (NetworkError, NotFoundError) as exc:
            self.pod.log.warning("undoing the attach of %s: %s", name, exc)


def _interface_status(nic: Nic) -> InterfaceStatus:
    interface = nic.interface
    return InterfaceStatus(
        interface.name, interface.mac, interface.mtu, interface.addresses, nic.hotplugged
    )
