"""A pod's network, from the pod's side: NICs for its VM, settings for its guest.

The host half (taps and tc redirects in the caller's namespace) is
:mod:`virtcontainers.network`; the guest half is the agent's
``configure_network``.  This module joins them for :class:`~virtcontainers.pod.pod.Pod`:
attach before the VM starts, hand the tap fds to the hypervisor, then tell
the guest what each NIC is; later, take one more interface over
(:meth:`PodNics.plug`) or give one back (:meth:`PodNics.unplug`).
What is attached is written to the pod's ``network.json`` after every change,
so whoever cleans the pod up (its daemon, or a caller that finds the daemon
dead) releases exactly that, through :func:`~virtcontainers.host.cleanup.release_network`.
Which NIC carries which interface is kept in the pod's record
(:meth:`PodNics.records`), so that a daemon that reattaches to the VM serves
the same network again (:meth:`PodNics.restore`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from virtcontainers.agent.messages import NetInterface, NetRoute
from virtcontainers.errors import ConfigError, NetworkError, NotFoundError
from virtcontainers.hypervisor.devices import NetDevice
from virtcontainers.records import NicRecord
from virtcontainers.store import PodPaths, write_json_atomic

if TYPE_CHECKING:
    from virtcontainers.network.discovery import Interface, Route
    from virtcontainers.network.podnetwork import Endpoint, PodNetwork

_log = logging.getLogger(__name__)

NIC_APPEAR_TIMEOUT = 60.0
"""How long the guest may take to show a hot-plugged NIC (a clone's, or one added)."""


@dataclass(frozen=True)
class Nic:
    """An interface of the pod's namespace and the VM's NIC that carries it."""

    interface: Interface
    device_id: str
    hotplugged: bool


class PodNics:
    """The interfaces of one pod's network namespace, carried into its VM."""

    def __init__(self, paths: PodPaths) -> None:
        self._paths = paths
        self._network: PodNetwork | None = None
        self._nics: dict[str, Nic] = {}
        self._tap_fds: list[int] = []
        # Device ids are never reused in one VM's life: a NIC whose unplug
        # failed keeps its id, and a new one never collides with it.
        self._next_device = 0

    async def attach(self, netns: str, pod_id: str) -> list[NetDevice]:
        """Tap each interface of ``netns``; return the VM's NICs for them.

        Raises ConfigError("netns", ...) for a path that is not a network
        namespace of its own, NetworkError when the taps cannot be made.
        """
        # pyroute2 costs ≈0.3 s to import: only pods that have a network pay for it.
        from virtcontainers.network.podnetwork import PodNetwork

        network = PodNetwork()
        endpoints: list[Endpoint] = await asyncio.to_thread(network.attach, netns, pod_id)
        self._tap_fds = [e.tap_fd for e in endpoints]
        try:
            write_json_atomic(self._paths.network, network.description)
        except BaseException:
            self.close_fds()
            await asyncio.to_thread(network.detach)
            raise
        self._network = network
        devices = []
        for endpoint in endpoints:
            nic = self._new_nic(endpoint.interface, hotplugged=False)
            devices.append(_device(nic, endpoint))
        return devices

    async def restore(self, pod_id: str, nics: list[NicRecord], next_nic: int) -> list[NetDevice]:
        """Take over the network that a dead daemon attached: ``network.json``
        says what it made, ``nics`` (the pod's record) which NIC carries which
        interface.  Returns the VM's NICs (without tap fds: QEMU holds the
        taps).  Raises ConfigError or NetworkError when they disagree with each
        other or with the namespace.
        """
        from virtcontainers.network.podnetwork import PodNetwork

        try:
            description = json.loads(self._paths.network.read_text())
        except (OSError, ValueError) as exc:
            raise NetworkError(str(self._paths.network), f"cannot read it: {exc}", pod_id) from exc
        if not isinstance(description, dict):
            raise ConfigError("network description", f"{self._paths.network} is not an object")
        network = await asyncio.to_thread(PodNetwork.restore, description, pod_id)
        interfaces = {interface.name: interface for interface in network.interfaces}
        if sorted(interfaces) != sorted(nic.interface for nic in nics):
            raise ConfigError(
                "nics",
                f"pod {pod_id!r}: its record names NICs for {sorted(n.interface for n in nics)}, "
                f"its network description {sorted(interfaces)}",
            )
        self._network = network
        self._next_device = next_nic
        taps = network.taps
        devices = []
        for record in nics:
            nic = Nic(interfaces[record.interface], record.device_id, record.hotplugged)
            self._nics[record.interface] = nic
            devices.append(NetDevice(nic.device_id, taps[record.interface], nic.interface.mac))
        return devices

    def records(self) -> tuple[list[NicRecord], int]:
        """What the pod's record keeps of the NICs, and the next device number."""
        nics = [NicRecord(n.interface.name, n.device_id, n.hotplugged) for n in self._nics.values()]
        return nics, self._next_device

    def close_fds(self) -> None:
        """Close the daemon's copies of the tap fds: QEMU holds its own once started."""
        while self._tap_fds:
            os.close(self._tap_fds.pop())

    def guest_settings(self) -> tuple[list[NetInterface], list[NetRoute]]:
        """What the agent's ``configure_network`` needs: NICs by MAC, and routes."""
        return guest_settings([nic.interface for nic in self._nics.values()])

    @property
    def nics(self) -> list[Nic]:
        """The VM's NICs: those of boot first, then the hot-plugged ones, in order."""
        return list(self._nics.values())

    def nic(self, name: str) -> Nic:
        """The NIC that carries interface ``name``; NotFoundError if none does."""
        try:
            return self._nics[name]
        except KeyError:
            attached = ", ".join(self._nics) or "none"
            raise NotFoundError(
                "interface", name, f"it is not attached to the pod (attached: {attached})"
            ) from None

    async def plug(self, name: str) -> tuple[Nic, NetDevice]:
        """Take interface ``name`` of the pod's namespace over: a tap and redirects.

        Returns the NIC and the device to hot-plug; the device's ``tap_fd`` is
        the caller's to close once the VM has its own copy.  What was made is
        in ``network.json`` before this returns.  Raises NotFoundError (no such
        interface in the namespace), ExistsError (attached already),
        ConfigError (it cannot be carried, or has the MAC of an attached one),
        NetworkError.
        """
        network = self._require_network(f"add interface {name}")
        endpoint: Endpoint = await asyncio.to_thread(network.attach_interface, name)
        try:
            self._check_mac(endpoint.interface)
            write_json_atomic(self._paths.network, network.description)
        except BaseException:
            os.close(endpoint.tap_fd)
            await self._detach_quietly(network, name)
            raise
        nic = self._new_nic(endpoint.interface, hotplugged=True)
        return nic, _device(nic, endpoint)

    async def unplug(self, name: str) -> None:
        """Give interface ``name`` back to the namespace, as the caller gave it.

        ``network.json`` is rewritten afterwards: until then it still names
        what is being removed, so a clean-up after a crash removes it too.
        Raises NotFoundError if it is not attached, NetworkError if the tap or
        the ingress qdisc cannot be removed (it then stays attached).
        """
        network = self._require_network(f"remove interface {name}")
        self.nic(name)
        await asyncio.to_thread(network.detach_interface, name)
        del self._nics[name]
        write_json_atomic(self._paths.network, network.description)

    def _new_nic(self, interface: Interface, hotplugged: bool) -> Nic:
        nic = Nic(interface, f"net{self._next_device}", hotplugged)
        self._next_device += 1
        self._nics[interface.name] = nic
        return nic

    def _require_network(self, action: str) -> PodNetwork:
        if self._network is None:
            raise ConfigError(
                "pod.netns",
                f"cannot {action}: the pod has no network namespace (create it with netns)",
            )
        return self._network

    def _check_mac(self, interface: Interface) -> None:
        for nic in self._nics.values():
            if nic.interface.mac == interface.mac:
                raise ConfigError(
                    "interface",
                    f"{interface.name} has MAC {interface.mac}, as {nic.interface.name} has: "
                    "the guest finds its NICs by MAC, so each needs its own",
                )

    async def _detach_quietly(self, network: PodNetwork, name: str) -> None:
        # The failure being raised is the one to report: this one is only logged.
        try:
            await asyncio.to_thread(network.detach_interface, name)
        except (NetworkError, NotFoundError) as exc:
            _log.warning("undoing the attach of %s: %s", name, exc)


def _device(nic: Nic, endpoint: Endpoint) -> NetDevice:
    return NetDevice(nic.device_id, endpoint.tap_name, endpoint.interface.mac, endpoint.tap_fd)


def guest_settings(interfaces: list[Interface]) -> tuple[list[NetInterface], list[NetRoute]]:
    nics = [NetInterface(mac=i.mac, mtu=i.mtu, addresses=list(i.addresses)) for i in interfaces]
    routes = []
    for interface in interfaces:
        for route in interface.routes:
            if _mixed_families(route):
                # The guest's ip (busybox) cannot add "via inet6" to an IPv4 route.
                _log.warning(
                    "route %s via %s on %s left out: an IPv4 route through an IPv6 "
                    "gateway is not supported in the guest",
                    route.destination or "default",
                    route.gateway,
                    interface.name,
                )
                continue
            routes.append(_guest_route(route, interface.mac))
    return nics, routes


def _mixed_families(route: Route) -> bool:
    if route.gateway is None:
        return False
    gateway_family = socket.AF_INET6 if ":" in route.gateway else socket.AF_INET
    return gateway_family != route.family


def _guest_route(route: Route, mac: str) -> NetRoute:
    destination = route.destination
    if destination is None:
        # "default" needs a gateway in the guest; a default route on the link is
        # written as the whole address space instead.
        whole = "0.0.0.0/0" if route.family == socket.AF_INET else "::/0"
        destination = "default" if route.gateway else whole
    return NetRoute(destination=destination, gateway=route.gateway, mac=mac)
