"""The host side of pod networking, on real namespaces, veths, taps and tc filters.

Safety: every test makes its own namespaces (``vct-<pid>-<random>``) and a
veth pair between a "pod" namespace and a "peer" namespace, and sends frames
only between those two; the fixture deletes both namespaces afterwards, also
when the test fails.  Nothing is done in the host's own namespace.  Setup uses
``ip`` (test setup only); checks read the kernel's state with pyroute2 directly,
not through the code under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.netlab import Lab, NetPair, ip, link_of, netlink, snapshot, tun_links
from virtcontainers.errors import ConfigError, ExistsError, NetworkError, NotFoundError
from virtcontainers.network.discovery import Interface, Route, discover
from virtcontainers.network.netns import NetnsId, check_netns, netns_id
from virtcontainers.network.podnetwork import Endpoint, PodNetwork, release
from virtcontainers.network.record import NetworkRecord
from virtcontainers.network.tap import (
    IFF_NO_PI,
    IFF_TAP,
    IFF_VNET_HDR,
    VNET_HDR_LEN,
    is_tap_name,
    tap_name,
    tap_of,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/net/tun").exists(),
    reason="needs root (network namespaces) and /dev/net/tun",
)

INGRESS = 0xFFFF0000
MIRRED_EGRESS_REDIRECT = 1
TUN_MAJOR, TUN_MINOR = 10, 200


def redirects(ipr: Any, index: int) -> list[tuple[int, int]]:
    """(mirred eaction, target ifindex) of every filter action on a link's ingress."""
    found = []
    for msg in ipr.get_filters(index=index, parent=INGRESS):
        acts = msg.get_nested("TCA_OPTIONS", "TCA_U32_ACT")
        for _, act in acts["attrs"] if acts else ():
            parms = act.get_nested("TCA_ACT_OPTIONS", "TCA_MIRRED_PARMS")
            found.append((parms["eaction"], parms["ifindex"]))
    return found


def open_tun_fds() -> int:
    return sum(
        1
        for fd in os.listdir("/proc/self/fd")
        if _readlink(f"/proc/self/fd/{fd}") == "/dev/net/tun"
    )


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


# -- discovery ----------------------------------------------------------------


def test_discover_returns_the_interface_as_the_caller_made_it(lab: Lab) -> None:
    pod = lab.pod()
    with netlink(pod.path) as ipr:
        mac = link_of(ipr, "eth0").get_attr("IFLA_ADDRESS")

    assert discover(pod.path) == [
        Interface(
            name="eth0",
            mac=mac,
            mtu=1400,
            addresses=("192.0.2.2/24", "2001:db8::2/64"),
            routes=(
                Route(None, "192.0.2.1", socket.AF_INET),
                Route("198.18.1.0/24", "2001:db8::1", socket.AF_INET),
                Route("198.51.100.0/24", None, socket.AF_INET),
                Route(None, "2001:db8::1", socket.AF_INET6),
            ),
        )
    ]


def test_discover_lists_each_interface_with_its_share_of_a_multipath_route(lab: Lab) -> None:
    pod = lab.pod()
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    hops = ("nexthop", "via", "192.0.2.1", "dev", "eth0", "nexthop", "via", "203.0.113.1", "dev")
    ip("-n", pod.name, "route", "add", "198.18.0.0/24", *hops, "eth1")

    eth0, eth1 = discover(pod.path)

    assert Route("198.18.0.0/24", "192.0.2.1", socket.AF_INET) in eth0.routes
    assert (eth1.name, eth1.addresses) == ("eth1", ("203.0.113.2/24",))
    assert eth1.routes == (Route("198.18.0.0/24", "203.0.113.1", socket.AF_INET),)


def test_a_namespace_with_only_loopback_has_nothing_to_attach(lab: Lab) -> None:
    _, path = lab.netns()
    assert discover(path) == []
    network = PodNetwork()
    assert network.attach(path, "lonely") == []
    assert network.description is not None
    network.detach()
    assert network.description is None


# -- attach, detach, release --------------------------------------------------


def test_attach_makes_a_tap_and_redirects_both_ways(lab: Lab) -> None:
    pod = lab.pod()
    [endpoint] = lab.attach(pod, "pod-1")

    assert endpoint.interface == discover(pod.path)[0]  # our own tap is not discovered
    assert endpoint.tap_name == tap_name("pod-1", 0)
    assert len(endpoint.tap_name) <= 15
    with netlink(pod.path) as ipr:
        veth, tap = link_of(ipr, "eth0"), link_of(ipr, endpoint.tap_name)
        assert tap.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "tun"
        assert tap.get_attr("IFLA_MTU") == 1400
        assert tap["flags"] & 1  # IFF_UP
        for link in (veth, tap):
            assert ("ingress", 0xFFFFFFF1) in [
                (q.get_attr("TCA_KIND"), q["parent"]) for q in ipr.get_qdiscs(link["index"])
            ]
        assert redirects(ipr, veth["index"]) == [(MIRRED_EGRESS_REDIRECT, tap["index"])]
        assert redirects(ipr, tap["index"]) == [(MIRRED_EGRESS_REDIRECT, veth["index"])]


def test_attach_works_from_an_event_loop_and_never_moves_the_calling_thread(lab: Lab) -> None:
    """The pod daemon attaches from its asyncio loop; its own thread stays in its namespace."""
    pod = lab.pod()
    own = os.readlink("/proc/thread-self/ns/net")

    async def attach() -> list[Endpoint]:
        return lab.attach(pod)

    [endpoint] = asyncio.run(attach())

    assert os.readlink("/proc/thread-self/ns/net") == own
    assert tun_links(pod.path) == [endpoint.tap_name]


def test_the_tap_fd_is_a_queue_of_that_tap(lab: Lab) -> None:
    [endpoint] = lab.attach(lab.pod())

    st = os.fstat(endpoint.tap_fd)
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (TUN_MAJOR, TUN_MINOR)
    name, flags = tap_of(endpoint.tap_fd)
    assert name == endpoint.tap_name
    assert flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) == IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    assert not os.get_inheritable(endpoint.tap_fd)


def test_detach_leaves_the_callers_interface_exactly_as_it_was(lab: Lab) -> None:
    pod = lab.pod()
    before = snapshot(pod.path, "eth0")
    network = PodNetwork()
    [endpoint] = network.attach(pod.path, "pod-1")
    lab.fds.append(endpoint.tap_fd)
    assert snapshot(pod.path, "eth0") != before  # the ingress qdisc

    network.detach()
    network.detach()  # idempotent

    assert snapshot(pod.path, "eth0") == before
    assert tun_links(pod.path) == []
    assert network.description is None


def test_release_from_the_description_alone_cleans_up(lab: Lab) -> None:
    pod = lab.pod()
    before = snapshot(pod.path, "eth0")
    [endpoint] = lab.attach(pod)
    description = json.loads(json.dumps(lab.networks[0].description))
    assert description["netns"] == pod.path
    assert description["taps"] == [endpoint.tap_name]
    assert [i["name"] for i in description["ingress"]] == ["eth0"]

    release(description)  # as another process would, knowing only the description
    release(description)

    assert snapshot(pod.path, "eth0") == before
    assert tun_links(pod.path) == []


def test_detach_and_release_are_quiet_when_the_namespace_is_gone(lab: Lab) -> None:
    pod = lab.pod()
    network = PodNetwork()
    [endpoint] = network.attach(pod.path, "pod-1")
    os.close(endpoint.tap_fd)
    description = network.description
    assert description is not None
    ip("netns", "del", pod.name)

    network.detach()
    release(description)


def test_release_leaves_alone_a_new_namespace_at_the_same_path(lab: Lab) -> None:
    pod = lab.pod()
    [endpoint] = lab.attach(pod)
    description = lab.networks[0].description
    assert description is not None
    lab.networks.clear()
    lab.fds.remove(endpoint.tap_fd)
    os.close(endpoint.tap_fd)
    ip("netns", "del", pod.name)
    wait_until_gone(pod.peer, "eth0")  # the kernel tears the old pair down asynchronously
    ip("netns", "add", pod.name)  # someone else's namespace, same name, its own tc setup
    lab.veth(pod, "eth0", "192.0.2.2/24", "192.0.2.1/24")
    with netlink(pod.path) as ipr:
        ipr.tc("add", "ingress", link_of(ipr, "eth0")["index"], INGRESS)
    before = snapshot(pod.path, "eth0")

    release(description)

    assert snapshot(pod.path, "eth0") == before


def wait_until_gone(netns: str, ifname: str, timeout: float = 10.0) -> None:
    """Poll until `ifname` has left `netns`: a deleted namespace's veths, and so
    their peers elsewhere, are destroyed by the kernel after `ip netns del` returns."""
    deadline = time.monotonic() + timeout
    show = ["ip", "-n", netns, "link", "show", ifname]
    while subprocess.run(show, check=False, capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, f"{ifname} still in {netns} after {timeout} s"
        time.sleep(0.05)


def test_a_failed_attach_undoes_what_it_did(lab: Lab) -> None:
    pod = lab.pod()
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    with netlink(pod.path) as ipr:
        ipr.tc("add", "ingress", link_of(ipr, "eth1")["index"], INGRESS)  # the caller's own
    before = {name: snapshot(pod.path, name) for name in ("eth0", "eth1")}
    tun_fds = open_tun_fds()
    network = PodNetwork()

    with pytest.raises(NetworkError, match="eth1 already has an ingress qdisc"):
        network.attach(pod.path, "pod-1")

    assert {name: snapshot(pod.path, name) for name in ("eth0", "eth1")} == before
    assert tun_links(pod.path) == []
    assert open_tun_fds() == tun_fds
    assert network.description is None


def test_a_pod_attached_twice_fails_and_the_first_stays_intact(lab: Lab) -> None:
    pod = lab.pod()
    [endpoint] = lab.attach(pod, "pod-1")
    attached = snapshot(pod.path, "eth0")

    with pytest.raises(NetworkError, match="exists already"):
        PodNetwork().attach(pod.path, "pod-1")

    assert snapshot(pod.path, "eth0") == attached
    assert tun_links(pod.path) == [endpoint.tap_name]


def test_two_interfaces_get_two_taps(lab: Lab) -> None:
    pod = lab.pod()
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")

    endpoints = lab.attach(pod, "pod-1")

    assert [e.interface.name for e in endpoints] == ["eth0", "eth1"]
    assert [e.tap_name for e in endpoints] == [tap_name("pod-1", 0), tap_name("pod-1", 1)]
    assert sorted(tun_links(pod.path)) == sorted(e.tap_name for e in endpoints)


# -- one interface at a time, on an attached pod -------------------------------


def test_an_interface_added_later_is_attached_and_detached_alone(lab: Lab) -> None:
    pod = lab.pod()
    [eth0] = lab.attach(pod, "pod-1")
    network = lab.networks[0]
    eth0_attached = snapshot(pod.path, "eth0")
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    before = snapshot(pod.path, "eth1")

    eth1 = network.attach_interface("eth1")
    lab.fds.append(eth1.tap_fd)

    assert eth1.interface == discover(pod.path)[1]
    assert eth1.tap_name == tap_name("pod-1", 1)
    assert tap_of(eth1.tap_fd)[0] == eth1.tap_name
    assert [i.name for i in network.interfaces] == ["eth0", "eth1"]
    with netlink(pod.path) as ipr:
        veth, tap = link_of(ipr, "eth1"), link_of(ipr, eth1.tap_name)
        assert redirects(ipr, veth["index"]) == [(MIRRED_EGRESS_REDIRECT, tap["index"])]
        assert redirects(ipr, tap["index"]) == [(MIRRED_EGRESS_REDIRECT, veth["index"])]
    description = network.description
    assert description is not None
    assert description["taps"] == [eth0.tap_name, eth1.tap_name]
    assert [i["name"] for i in description["ingress"]] == ["eth0", "eth1"]  # type: ignore[attr-defined]

    network.detach_interface("eth1")

    assert snapshot(pod.path, "eth1") == before
    assert snapshot(pod.path, "eth0") == eth0_attached
    assert tun_links(pod.path) == [eth0.tap_name]
    assert [i.name for i in network.interfaces] == ["eth0"]
    description = network.description
    assert description is not None
    assert description["taps"] == [eth0.tap_name]
    assert [i["name"] for i in description["ingress"]] == ["eth0"]  # type: ignore[attr-defined]


def test_the_description_after_a_hot_plug_releases_it_too(lab: Lab) -> None:
    """What another process releases after the daemon died includes the added interface."""
    pod = lab.pod()
    before = snapshot(pod.path, "eth0")
    lab.attach(pod, "pod-1")
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    eth1_before = snapshot(pod.path, "eth1")
    lab.fds.append(lab.networks[0].attach_interface("eth1").tap_fd)
    description = json.loads(json.dumps(lab.networks[0].description))

    release(description)

    assert snapshot(pod.path, "eth0") == before
    assert snapshot(pod.path, "eth1") == eth1_before
    assert tun_links(pod.path) == []


def test_another_process_restores_the_network_from_its_description(lab: Lab) -> None:
    """A daemon that reattaches: the interfaces read again, the taps as they
    were; it adds, removes and detaches as the first one would."""
    pod = lab.pod()
    before = snapshot(pod.path, "eth0")
    [eth0] = lab.attach(pod, "pod-1")
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    eth1_before = snapshot(pod.path, "eth1")
    first = lab.networks[0]
    lab.fds.append(first.attach_interface("eth1").tap_fd)
    description = json.loads(json.dumps(first.description))

    network = PodNetwork.restore(description, "pod-1")
    lab.networks.append(network)

    assert network.interfaces == first.interfaces
    assert network.taps == first.taps == {"eth0": eth0.tap_name, "eth1": tap_name("pod-1", 1)}
    assert network.description == description
    network.detach_interface("eth1")
    assert snapshot(pod.path, "eth1") == eth1_before
    lab.veth(pod, "eth2", "198.51.100.2/24", "198.51.100.1/24")
    eth2 = network.attach_interface("eth2")
    lab.fds.append(eth2.tap_fd)
    assert eth2.tap_name == tap_name("pod-1", 1)  # the name eth1 freed
    network.detach()
    assert snapshot(pod.path, "eth0") == before
    assert tun_links(pod.path) == []


def test_a_description_whose_interface_is_gone_is_not_restored(lab: Lab) -> None:
    pod = lab.pod()
    lab.attach(pod, "pod-1")
    description = json.loads(json.dumps(lab.networks[0].description))
    ip("-n", pod.name, "link", "set", "eth0", "down")
    ip("-n", pod.name, "link", "set", "eth0", "name", "eth7")
    with pytest.raises(NetworkError, match="eth0"):
        PodNetwork.restore(description, "pod-1")


def test_a_namespace_with_only_loopback_takes_its_first_interface_later(lab: Lab) -> None:
    name, path = lab.netns()
    peer, peer_path = lab.netns()
    network = PodNetwork()
    lab.networks.append(network)
    assert network.attach(path, "lonely") == []
    lab.veth(NetPair(name, path, peer, peer_path), "eth0", "192.0.2.2/24", "192.0.2.1/24")

    endpoint = network.attach_interface("eth0")
    lab.fds.append(endpoint.tap_fd)

    assert endpoint.tap_name == tap_name("lonely", 0)
    assert tun_links(path) == [endpoint.tap_name]
    network.detach_interface("eth0")
    assert tun_links(path) == []


def test_a_detached_interface_frees_its_tap_name(lab: Lab) -> None:
    pod = lab.pod()
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    lab.attach(pod, "pod-1")
    network = lab.networks[0]
    network.detach_interface("eth0")

    again = network.attach_interface("eth0")
    lab.fds.append(again.tap_fd)

    assert again.tap_name == tap_name("pod-1", 0)
    assert [i.name for i in network.interfaces] == ["eth1", "eth0"]


def test_attaching_one_interface_refuses_what_it_cannot_carry(lab: Lab) -> None:
    pod = lab.pod()
    [eth0] = lab.attach(pod, "pod-1")
    network = lab.networks[0]
    ip("-n", pod.name, "link", "add", "br9", "type", "bridge")
    ip("-n", pod.name, "tuntap", "add", "dev", "tun9", "mode", "tun")  # layer 3
    attached = snapshot(pod.path, "eth0")

    with pytest.raises(
        NotFoundError, match="interface 'eth9' not found; put it in the pod's network namespace"
    ):
        network.attach_interface("eth9")
    with pytest.raises(ExistsError, match="attached to the VM already"):
        network.attach_interface("eth0")
    with pytest.raises(ConfigError, match="loopback"):
        network.attach_interface("lo")
    with pytest.raises(ConfigError, match="not an Ethernet interface"):
        network.attach_interface("tun9")
    with pytest.raises(ConfigError, match="a pod's own tap"):
        network.attach_interface(eth0.tap_name)
    with pytest.raises(NotFoundError, match=r"has no such interface attached \(attached: eth0\)"):
        network.detach_interface("eth9")

    assert snapshot(pod.path, "eth0") == attached
    assert sorted(tun_links(pod.path)) == sorted([eth0.tap_name, "tun9"])
    # A bridge is an Ethernet device: nothing stops it being carried.
    lab.fds.append(network.attach_interface("br9").tap_fd)


def test_a_renamed_interface_is_recognised_as_attached(lab: Lab) -> None:
    pod = lab.pod()
    lab.attach(pod, "pod-1")
    ip("-n", pod.name, "link", "set", "eth0", "down")
    ip("-n", pod.name, "link", "set", "eth0", "name", "eth5")

    with pytest.raises(ExistsError, match="it is eth0, attached already and renamed since"):
        lab.networks[0].attach_interface("eth5")


def test_a_failed_attach_of_one_interface_leaves_nothing(lab: Lab) -> None:
    pod = lab.pod()
    lab.attach(pod, "pod-1")
    network = lab.networks[0]
    description = network.description
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    with netlink(pod.path) as ipr:
        ipr.tc("add", "ingress", link_of(ipr, "eth1")["index"], INGRESS)  # the caller's own
    before = snapshot(pod.path, "eth1")
    tun_fds = open_tun_fds()

    with pytest.raises(NetworkError, match="eth1 already has an ingress qdisc"):
        network.attach_interface("eth1")

    assert snapshot(pod.path, "eth1") == before
    assert tun_links(pod.path) == [tap_name("pod-1", 0)]
    assert open_tun_fds() == tun_fds
    assert network.description == description


def test_one_interface_cannot_change_before_attach_nor_in_another_namespace(lab: Lab) -> None:
    with pytest.raises(NetworkError, match="not attached"):
        PodNetwork().attach_interface("eth0")
    pod = lab.pod()
    [endpoint] = lab.attach(pod, "pod-1")
    lab.networks[0].detach_interface("eth0")
    lab.fds.remove(endpoint.tap_fd)
    os.close(endpoint.tap_fd)  # a tap's queue holds its namespace
    ip("netns", "del", pod.name)
    ip("netns", "add", pod.name)  # someone else's namespace now
    # (Not eth0: the old peer may still be going away with the old namespace.)
    lab.veth(pod, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    before = snapshot(pod.path, "eth1")

    with pytest.raises(NetworkError, match="names another namespace"):
        lab.networks[0].attach_interface("eth1")

    assert snapshot(pod.path, "eth1") == before
    assert tun_links(pod.path) == []


# -- the redirect carries frames ---------------------------------------------


def arp(op: int, sender: tuple[bytes, str], target: tuple[bytes, str], dst: bytes) -> bytes:
    """An Ethernet frame carrying an ARP packet (padded to the 60-byte minimum)."""
    (smac, sip), (tmac, tip) = sender, target
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op,
        smac, socket.inet_aton(sip), tmac, socket.inet_aton(tip),
    )  # fmt: skip
    return (dst + smac + struct.pack("!H", 0x0806) + body).ljust(60, b"\0")


def read_frames(fd: int, wanted: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
    """The first frame read from a tap queue that ``wanted`` accepts."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            frame = os.read(fd, 65536)[VNET_HDR_LEN:]
            if wanted(frame):
                return frame
    raise AssertionError(f"no such frame from the tap within {timeout}s")


def test_an_arp_request_from_the_vm_is_answered_by_the_peer(lab: Lab) -> None:
    """The guest's frame leaves through the veth; the peer's answer comes back up the tap."""
    pod = lab.pod()
    [endpoint] = lab.attach(pod)
    vm_mac = bytes.fromhex(endpoint.interface.mac.replace(":", ""))
    with netlink(pod.peer_path) as ipr:
        peer_mac = bytes.fromhex(link_of(ipr, "eth0").get_attr("IFLA_ADDRESS").replace(":", ""))

    request = arp(1, (vm_mac, "192.0.2.2"), (bytes(6), "192.0.2.1"), dst=b"\xff" * 6)
    os.write(endpoint.tap_fd, bytes(VNET_HDR_LEN) + request)

    def is_reply(frame: bytes) -> bool:
        return frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02"

    reply = read_frames(endpoint.tap_fd, is_reply)
    expected = arp(2, (peer_mac, "192.0.2.1"), (vm_mac, "192.0.2.2"), dst=vm_mac)
    assert reply[:42] == expected[:42]  # the rest is padding


# -- checks and names -----------------------------------------------------------


def test_check_netns_accepts_a_network_namespace(lab: Lab) -> None:
    _, path = lab.netns()
    check_netns(path)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/run/netns/vct-no-such-namespace", "does not exist"),
        ("/proc/self/ns/mnt", "not a network namespace"),
        ("/proc/self/ns/net", "host's network namespace"),
    ],
)
def test_check_netns_refuses(path: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        check_netns(path)
    assert caught.value.field == "netns"


def test_check_netns_refuses_a_regular_file(tmp_path: Path) -> None:
    plain = tmp_path / "netns"
    plain.write_text("")
    with pytest.raises(ConfigError, match="not a namespace file"):
        check_netns(str(plain))


def test_tap_names_are_short_stable_and_distinct_per_pod() -> None:
    names = {tap_name(f"pod-{i}", n) for i in range(200) for n in (0, 1, 999)}
    assert len(names) == 600
    assert all(len(name) <= 15 and is_tap_name(name) for name in names)
    assert tap_name("pod-1", 0) == tap_name("pod-1", 0)
    assert not is_tap_name("eth0")
    with pytest.raises(ValueError, match="at most 999"):
        tap_name("pod-1", 1000)


@pytest.mark.parametrize(
    "description",
    [{}, {"version": 2}, {"version": 1, "netns": "/x", "netns_id": [1], "taps": [], "ingress": []}],
)
def test_release_refuses_a_description_it_did_not_write(description: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="network description"):
        release(description)


def test_a_namespace_id_tells_apart_a_new_namespace_that_reuses_the_inode(lab: Lab) -> None:
    """The kernel hands a freed namespace's inode number to the next one: the
    cookie, never reused, is what tells them apart."""
    pod = lab.pod()
    first = netns_id(pod.path)
    assert first is not None and first.cookie is not None
    reused = NetnsId(first.dev, first.ino, first.cookie + 1)
    assert not first.same_namespace(reused)
    assert first.same_namespace(NetnsId(first.dev, first.ino))  # a record without a cookie
    assert NetworkRecord.from_json(NetworkRecord(pod.path, first).to_json()).netns_id == first
