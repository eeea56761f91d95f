"""Network namespaces for tests: made by the test, removed after it, whatever happens.

Safety (see ../shared/DESIGN.md and docs/network.md): every namespace is named
``vct-<pid>-<random>`` and made here; veths join a "pod" namespace and a "peer"
namespace only, so traffic stays between addresses inside namespaces that the
test made.  Nothing is done in the host's own namespace.  Setup uses ``ip``
(test setup only); checks read the kernel's state with pyroute2 directly.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute

from virtcontainers.network.netns import run_in_netns
from virtcontainers.network.podnetwork import Endpoint, PodNetwork

T = TypeVar("T")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")


@dataclass
class NetPair:
    """A pod namespace whose interfaces are veths to a peer namespace."""

    name: str
    path: str
    peer: str
    peer_path: str


class Lab:
    """Makes namespaces, veths and pod networks; removes them all in teardown."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.networks: list[PodNetwork] = []
        self.fds: list[int] = []

    def netns(self) -> tuple[str, str]:
        name = f"vct-{os.getpid()}-{secrets.token_hex(4)}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        return name, f"/run/netns/{name}"

    def pod(self) -> NetPair:
        """eth0 in a pod namespace: IPv4, IPv6 and a link-local address, MTU 1400, routes."""
        name, path = self.netns()
        peer, peer_path = self.netns()
        pod = NetPair(name, path, peer, peer_path)
        self.veth(pod, "eth0", "192.0.2.2/24", "192.0.2.1/24", "2001:db8::2/64", "2001:db8::1/64")
        ip("-n", name, "addr", "add", "fe80::2/64", "dev", "eth0", "nodad")
        ip("-n", name, "route", "add", "default", "via", "192.0.2.1")
        ip("-n", name, "route", "add", "198.51.100.0/24", "dev", "eth0")
        ip("-n", name, "-6", "route", "add", "default", "via", "2001:db8::1")
        ip(
            "-n",
            name,
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            "inet6",
            "2001:db8::1",
            "dev",
            "eth0",
        )
        return pod

    def veth(self, pod: NetPair, ifname: str, *addresses: str) -> None:
        """A veth ``ifname`` in both namespaces; addresses alternate pod side, peer side."""
        # Both ends are made in their namespaces: the name never exists in the host's.
        ip("link", "add", ifname, "netns", pod.name, "type", "veth",
           "peer", "name", ifname, "netns", pod.peer)  # fmt: skip
        for ns, own in ((pod.name, addresses[0::2]), (pod.peer, addresses[1::2])):
            # No IPv6 address of the kernel's own making: the state stays as the test made it.
            ip("-n", ns, "link", "set", ifname, "addrgenmode", "none", "mtu", "1400")
            for address in own:
                ip("-n", ns, "addr", "add", address, "dev", ifname, "nodad")
            ip("-n", ns, "link", "set", ifname, "up")

    def attach(self, pod: NetPair, pod_id: str = "") -> list[Endpoint]:
        network = PodNetwork()
        self.networks.append(network)
        endpoints = network.attach(pod.path, pod_id or pod.name)
        self.fds.extend(endpoint.tap_fd for endpoint in endpoints)
        return endpoints

    def close(self) -> None:
        for network in self.networks:
            network.detach()
        for fd in self.fds:
            os.close(fd)
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


# -- reading the kernel's state (pyroute2, without the code under test) -------


def netlink(path: str) -> IPRoute:
    """A netlink socket in the namespace at ``path``, for a single-threaded caller.

    pyroute2's ``netns=`` forks a child to make it: in a process with other
    threads (a pod's, when a test runs one in-process) that child can hang on
    a lock it inherited, so :func:`snapshot` and :func:`tun_links` do not use it.
    """
    return IPRoute(netns=path, flags=0)  # flags=0: never create a namespace


def inside(path: str, work: Callable[[Any], T]) -> T:
    """``work(ipr)`` with a netlink socket of the namespace at ``path``, without a fork.

    pyroute2 binds a socket to the thread that uses it, so the socket is made
    and used only in a thread that has entered the namespace.
    """

    def read() -> T:
        with IPRoute() as ipr:
            return work(ipr)

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, read)
    finally:
        os.close(fd)


def link_of(ipr: Any, name: str) -> Any:
    [index] = ipr.link_lookup(ifname=name)
    return ipr.get_links(index)[0]


def snapshot(path: str, name: str) -> dict[str, object]:
    """Everything of an interface a pod could change: link, addresses, routes, qdiscs."""
    return inside(path, lambda ipr: _snapshot(ipr, name))


def _snapshot(ipr: Any, name: str) -> dict[str, object]:
    link = link_of(ipr, name)
    index = link["index"]
    return {
        "link": (
            index,
            link["flags"],
            link.get_attr("IFLA_ADDRESS"),
            link.get_attr("IFLA_MTU"),
        ),
        "addresses": sorted(
            (a["family"], a.get_attr("IFA_ADDRESS"), a["prefixlen"], a.get_attr("IFA_FLAGS"))
            for a in ipr.get_addr(index=index)
        ),
        "routes": sorted(
            (
                r["family"],
                r["table"],
                str(r.get_attr("RTA_DST")),
                r["dst_len"],
                str(r.get_attr("RTA_GATEWAY")),
            )
            for r in ipr.get_routes()
            if r.get_attr("RTA_OIF") == index
        ),
        "qdiscs": sorted((q.get_attr("TCA_KIND"), q["parent"]) for q in ipr.get_qdiscs(index)),
    }


def tun_links(path: str) -> list[str]:
    return inside(
        path,
        lambda ipr: [
            link.get_attr("IFLA_IFNAME")
            for link in ipr.get_links()
            if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "tun"
        ],
    )
