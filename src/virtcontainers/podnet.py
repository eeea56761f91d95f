"""A pod's network, from the pod's side: NICs for its VM, settings for its guest.

The host half (taps and tc redirects in the caller's namespace) is
:mod:`virtcontainers.network`; the guest half is the agent's
``configure_network``.  This module joins them for :class:`~virtcontainers.pod.Pod`:
attach before the VM starts, hand the tap fds to the hypervisor, then tell
the guest what each NIC is.  What the attach made is written to the pod's
``network.json`` first, so whoever cleans the pod up (its daemon, or a caller
that finds the daemon dead) releases it through
:func:`~virtcontainers.cleanup.release_network`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import TYPE_CHECKING

from virtcontainers.agent.messages import NetInterface, NetRoute
from virtcontainers.hypervisor.base import NetDevice
from virtcontainers.store import PodPaths, write_json_atomic

if TYPE_CHECKING:
    from virtcontainers.network.discovery import Interface, Route
    from virtcontainers.network.podnetwork import Endpoint

_log = logging.getLogger(__name__)


class PodNetworkLink:
    """The interfaces of one pod's network namespace, carried into its VM."""

    def __init__(self, paths: PodPaths) -> None:
        self._paths = paths
        self._interfaces: list[Interface] = []
        self._tap_fds: list[int] = []

    async def attach(self, netns: str, pod_id: str) -> list[NetDevice]:
        """Tap each interface of ``netns``; return the VM's NICs for them.

        Raises ConfigError("netns", ...) for a path that is not a network
        namespace of its own, NetworkError when the taps cannot be made.
        """
        # pyroute2 costs ≈0.3 s to import: only pods that have a network pay for it.
        from virtcontainers.network.podnetwork import PodNetwork

        network = PodNetwork()
        endpoints: list[Endpoint] = await asyncio.to_thread(network.attach, netns, pod_id)
        self._interfaces = [e.interface for e in endpoints]
        self._tap_fds = [e.tap_fd for e in endpoints]
        try:
            write_json_atomic(self._paths.network, network.description)
        except BaseException:
            self.close_fds()
            await asyncio.to_thread(network.detach)
            raise
        return [
            NetDevice(f"net{n}", endpoint.tap_name, endpoint.interface.mac, endpoint.tap_fd)
            for n, endpoint in enumerate(endpoints)
        ]

    def close_fds(self) -> None:
        """Close the daemon's copies of the tap fds: QEMU holds its own once started."""
        while self._tap_fds:
            os.close(self._tap_fds.pop())

    def guest_settings(self) -> tuple[list[NetInterface], list[NetRoute]]:
        """What the agent's ``configure_network`` needs: NICs by MAC, and routes."""
        return guest_settings(self._interfaces)


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
