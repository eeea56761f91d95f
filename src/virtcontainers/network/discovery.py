"""What the caller's network namespace holds: the interfaces a pod's VM takes over.

Only Ethernet interfaces are taken: a tc redirect moves whole frames, and a
tap carries Ethernet frames.  Loopback stays with the namespace, and so do
tunnel devices the kernel puts in every namespace (``tunl0``, ``sit0``, ...)
and our own taps.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from virtcontainers.errors import NetworkError
from virtcontainers.network import tap
from virtcontainers.network.netns import open_netns, run_in_netns
from virtcontainers.network.rtnl import (
    ARPHRD_ETHER,
    IFF_LOOPBACK,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTPROT_KERNEL,
    Address,
    Link,
    NetlinkError,
    Rtnl,
    RtRoute,
)

_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")


@dataclass(frozen=True)
class Route:
    """A route of the main table through one interface.

    ``destination`` is a CIDR, or None for a default route; ``gateway`` is None
    for a route to an on-link prefix; ``family`` is socket.AF_INET or AF_INET6.
    """

    destination: str | None
    gateway: str | None
    family: int


@dataclass(frozen=True)
class Interface:
    """One interface of the caller's namespace, as the guest must present it.

    ``addresses`` are CIDRs, IPv4 before IPv6 (IPv6 link-local ones left out:
    the guest makes its own); ``routes`` are those the caller added (the kernel's
    own prefix routes are left out: the guest's kernel makes them again from the
    addresses).
    """

    name: str
    mac: str
    mtu: int
    addresses: tuple[str, ...]
    routes: tuple[Route, ...]


def discover(netns_path: str) -> list[Interface]:
    """The interfaces of the namespace at ``netns_path`` that a pod would take over.

    Raises ConfigError("netns", ...) if the path is not a usable network
    namespace, NetworkError if the namespace cannot be read.
    """
    fd = open_netns(netns_path)
    try:
        return run_in_netns(fd, lambda: _discover_here(netns_path))
    finally:
        os.close(fd)


def _discover_here(netns_path: str) -> list[Interface]:
    try:
        with Rtnl() as rtnl:
            return [interface for _, interface in indexed_interfaces(rtnl)]
    except NetlinkError as exc:
        raise NetworkError(netns_path, f"cannot list its interfaces: {exc}") from exc


def indexed_interfaces(rtnl: Rtnl) -> list[tuple[int, Interface]]:
    """The interfaces :func:`discover` returns, with their link indexes.

    Raises NetlinkError.
    """
    links = [link for link in rtnl.links() if why_not_taken(link) is None]
    addresses = rtnl.addresses()
    routes = rtnl.routes()
    return [(link.index, _interface(link, addresses, routes)) for link in links]


def interface_of(rtnl: Rtnl, link: Link) -> Interface:
    """One link as :func:`discover` would return it.  Raises NetlinkError."""
    return _interface(link, rtnl.addresses(), rtnl.routes())


def why_not_taken(link: Link) -> str | None:
    """Why a pod cannot take this link over, or None if it can."""
    if link.flags & IFF_LOOPBACK:
        return "it is the loopback interface, which stays with the namespace"
    if link.link_type != ARPHRD_ETHER:
        return "it is not an Ethernet interface: a tc redirect carries only Ethernet frames"
    if link.kind == "tun" and tap.is_tap_name(link.name):
        return "it is a pod's own tap"
    return None


def _interface(link: Link, addresses: list[Address], routes: list[RtRoute]) -> Interface:
    return Interface(
        name=link.name,
        mac=link.mac,
        mtu=link.mtu,
        addresses=tuple(_addresses_of(link.index, addresses)),
        routes=tuple(_routes_through(link.index, routes)),
    )


def _addresses_of(index: int, addresses: list[Address]) -> list[str]:
    mine = [a for a in addresses if a.index == index]
    mine.sort(key=lambda a: a.family != socket.AF_INET)
    return [a.cidr for a in mine if not _is_link_local_v6(a)]


def _is_link_local_v6(address: Address) -> bool:
    if address.family != socket.AF_INET6:
        return False
    return ipaddress.ip_interface(address.cidr).ip in _LINK_LOCAL_V6


def _routes_through(index: int, routes: list[RtRoute]) -> list[Route]:
    found = []
    for route in routes:
        if not _carried_over(route):
            continue
        for oif, gateway in route.hops:
            if oif == index:
                found.append(Route(route.destination, gateway, route.family))
    found.sort(key=lambda r: r.family != socket.AF_INET)
    return found


def _carried_over(route: RtRoute) -> bool:
    return (
        route.table == RT_TABLE_MAIN
        and route.route_type == RTN_UNICAST
        and route.proto != RTPROT_KERNEL
        and route.family in (socket.AF_INET, socket.AF_INET6)
    )
