"""A typed, narrow face of pyroute2's rtnetlink: just what the pod network uses.

pyroute2 has no type information; everything it returns is read here, once,
into small typed values.  An :class:`Rtnl` talks to the namespace of the thread
that makes it, so make it inside :func:`~virtcontainers.network.netns.run_in_netns`.
It also makes its own asyncio loop, which is why it must not be made on a
thread that runs one (the pod daemon's).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

ARPHRD_ETHER = 1
IFF_LOOPBACK = 0x8
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_KERNEL = 2
ETH_P_ALL = 0x0003
INGRESS_HANDLE = 0xFFFF0000  # "ffff:", the ingress qdisc's own handle
REDIRECT_CLASSID = 0x10001  # u32 needs one; a stolen packet never reaches a class
IN6_ADDR_GEN_MODE_NONE = 1

__all__ = ["Address", "Link", "NetlinkError", "RtRoute", "Rtnl", "is_missing"]


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    flags: int
    link_type: int  # ARPHRD_*
    kind: str  # "veth", "tun", ... ("" when the kernel names none)


@dataclass(frozen=True)
class Address:
    index: int
    family: int
    cidr: str  # "192.0.2.2/24"


@dataclass(frozen=True)
class RtRoute:
    family: int
    table: int
    route_type: int
    proto: int
    destination: str | None  # CIDR; None for a default route
    hops: tuple[tuple[int, str | None], ...]  # (oif, gateway): one, or several if multipath


class Rtnl:
    """One rtnetlink socket in the current thread's network namespace."""

    def __init__(self) -> None:
        self._ipr: Any = IPRoute()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ipr.close()

    # -- reading ---------------------------------------------------------

    def links(self) -> list[Link]:
        return [_link(msg) for msg in self._ipr.get_links()]

    def link(self, index: int) -> Link | None:
        try:
            return _link(self._ipr.get_links(index)[0])
        except NetlinkError as exc:
            if is_missing(exc):
                return None
            raise

    def link_by_name(self, name: str) -> Link | None:
        indexes = self._ipr.link_lookup(ifname=name)
        return self.link(int(indexes[0])) if indexes else None

    def addresses(self) -> list[Address]:
        return [_address(msg) for msg in self._ipr.get_addr()]

    def routes(self) -> list[RtRoute]:
        return [_route(msg) for msg in self._ipr.get_routes()]

    # -- changing --------------------------------------------------------

    def set_up(self, index: int, mtu: int) -> None:
        """MTU, no IPv6 link-local, then up: a tap the namespace's own stack leaves alone."""
        self._ipr.link("set", index=index, IFLA_AF_SPEC=_no_addr_gen())
        self._ipr.link("set", index=index, mtu=mtu, state="up")

    def delete_link(self, index: int) -> None:
        self._ipr.link("del", index=index)

    def add_ingress(self, index: int) -> None:
        self._ipr.tc("add", "ingress", index, INGRESS_HANDLE)

    def delete_ingress(self, index: int) -> None:
        """Remove the ingress qdisc (and with it its filters); absent is fine."""
        try:
            self._ipr.tc("del", "ingress", index, INGRESS_HANDLE)
        except NetlinkError as exc:
            # Older kernels answer EINVAL, not ENOENT, for a qdisc that is not there.
            if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise

    def redirect(self, from_index: int, to_index: int) -> None:
        """Every frame arriving on ``from_index`` leaves through ``to_index``.

        ``u32 match u32 0 0`` matches anything; ``mirred egress redirect``
        steals the frame from the receiving stack and transmits it on the target.
        """
        self._ipr.tc(
            "add-filter",
            "u32",
            from_index,
            parent=INGRESS_HANDLE,
            prio=1,
            protocol=ETH_P_ALL,
            target=REDIRECT_CLASSID,
            keys=["0x0/0x0+0"],
            action={
                "kind": "mirred",
                "direction": "egress",
                "action": "redirect",
                "ifindex": to_index,
            },
        )


def is_missing(exc: NetlinkError) -> bool:
    """True if a netlink error only says the object is already gone."""
    return int(exc.code) in (errno.ENODEV, errno.ENOENT)


def _no_addr_gen() -> dict[str, Any]:
    gen_mode = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]}
    return {"attrs": [("AF_INET6", gen_mode)]}


def _link(msg: Any) -> Link:
    return Link(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        flags=int(msg["flags"]),
        link_type=int(msg["ifi_type"]),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
    )


def _address(msg: Any) -> Address:
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a
    # point-to-point IPv4 link.  IPv6 sends only IFA_ADDRESS.
    local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return Address(
        index=int(msg["index"]),
        family=int(msg["family"]),
        cidr=f"{local}/{int(msg['prefixlen'])}",
    )


def _route(msg: Any) -> RtRoute:
    dst = msg.get_attr("RTA_DST")
    return RtRoute(
        family=int(msg["family"]),
        table=int(msg.get_attr("RTA_TABLE") or msg["table"]),
        route_type=int(msg["type"]),
        proto=int(msg["proto"]),
        destination=f"{dst}/{int(msg['dst_len'])}" if dst is not None else None,
        hops=tuple(_hops(msg)),
    )


def _hops(msg: Any) -> Iterator[tuple[int, str | None]]:
    multipath = msg.get_attr("RTA_MULTIPATH")
    if not multipath:
        oif = msg.get_attr("RTA_OIF")
        if oif is not None:
            yield int(oif), _gateway(msg)
        return
    for hop in multipath:
        yield int(hop["oif"]), _gateway(hop)


def _gateway(msg: Any) -> str | None:
    gateway = msg.get_attr("RTA_GATEWAY")
    if gateway is None:
        via = msg.get_attr("RTA_VIA")  # an IPv4 route through an IPv6 next hop
        gateway = via.get("addr") if via else None
    return str(gateway) if gateway is not None else None
