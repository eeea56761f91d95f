"""configure_network: NICs found by MAC, their addresses and routes, in a network namespace."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.guest.harness import BUSYBOX, NEEDS_RUNC, AgentCallError, AgentClient, spawn_agent

pytestmark = NEEDS_RUNC

# --------------------------------------------------------------------------- configure_network
# The agent runs in a network namespace each test makes (and always removes)
# with two veth NICs of known MACs, and with busybox's `ip` first on its PATH,
# as in the guest; the checks use iproute2's `ip -j`.  Nothing leaves it.

IPROUTE = shutil.which("ip")
MACS = ("02:00:0a:00:00:01", "02:00:0a:00:00:02")
NETWORK: dict[str, Any] = {
    "interfaces": [
        {"mac": MACS[0].upper(), "mtu": 1400, "addresses": ["10.1.2.3/24", "fd00::3/64"]},
        {"mac": MACS[1], "mtu": 9000, "addresses": ["10.3.0.5/16"]},
    ],
    "routes": [
        {"destination": "default", "gateway": "10.1.2.1", "mac": MACS[0]},
        {"destination": "default", "gateway": "fd00::1", "mac": MACS[0]},
        {"destination": "10.9.0.0/16", "gateway": "10.3.0.1", "mac": MACS[1]},
        {"destination": "10.8.0.0/16", "gateway": None, "mac": MACS[1]},
        {"destination": "fd01::/64", "gateway": None, "mac": MACS[1]},
    ],
}
needs_iproute = pytest.mark.skipif(IPROUTE is None, reason="iproute2 is not installed")


def ip(netns: str, *args: str) -> Any:
    """iproute2's JSON view of the namespace (or None for a command without output)."""
    assert IPROUTE is not None
    out = subprocess.run(
        [IPROUTE, "-n", netns, "-j", *args], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out) if out.strip() else None


@pytest.fixture
def netns_agent(tmp_path: Path) -> Iterator[tuple[AgentClient, str]]:
    assert IPROUTE is not None
    netns = "vct-" + uuid.uuid4().hex[:12]
    subprocess.run([IPROUTE, "netns", "add", netns], check=True)
    try:
        for index, mac in enumerate(MACS):
            nic = f"vc{index}"
            ip(netns, "link", "add", nic, "address", mac, "type", "veth", "peer", f"{nic}p")
            ip(netns, "link", "set", f"{nic}p", "up")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "ip").symlink_to(BUSYBOX)
        with spawn_agent([IPROUTE, "netns", "exec", netns], bin_dir) as harness:
            harness.client.hello()
            yield harness.client, netns
    finally:
        subprocess.run([IPROUTE, "netns", "delete", netns], check=False)


def global_addresses(link: dict[str, Any]) -> set[tuple[str, int]]:
    return {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["scope"] == "global"}


def routes(netns: str, family: str) -> set[tuple[str, str | None, str]]:
    return {(r["dst"], r.get("gateway"), r["dev"]) for r in ip(netns, family, "route", "show")}


def check_network(netns: str) -> None:
    links = {link["ifname"]: link for link in ip(netns, "addr", "show")}
    assert "UP" in links["lo"]["flags"]
    vc0, vc1 = links["vc0"], links["vc1"]
    assert (vc0["mtu"], vc1["mtu"]) == (1400, 9000)
    assert "UP" in vc0["flags"] and "UP" in vc1["flags"]
    assert global_addresses(vc0) == {("10.1.2.3", 24), ("fd00::3", 64)}
    assert global_addresses(vc1) == {("10.3.0.5", 16)}
    assert not [a for a in vc0["addr_info"] if a.get("tentative")]  # no DAD: usable at once
    assert {
        ("default", "10.1.2.1", "vc0"),
        ("10.9.0.0/16", "10.3.0.1", "vc1"),
        ("10.8.0.0/16", None, "vc1"),
    } <= routes(netns, "-4")
    assert {("default", "fd00::1", "vc0"), ("fd01::/64", None, "vc1")} <= routes(netns, "-6")


@needs_iproute
def test_configure_network_sets_up_nics_by_mac_and_adds_routes(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, netns = netns_agent
    assert "UP" not in ip(netns, "link", "show", "lo")[0]["flags"]
    assert client.call("configure_network", **NETWORK) == {}
    check_network(netns)
    assert client.call("configure_network", **NETWORK) == {}  # again: no error, no change
    check_network(netns)


@needs_iproute
def test_configure_network_unknown_mac_is_not_found(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, _ = netns_agent
    nic = {"mac": "02:00:0a:00:00:99", "mtu": 1500, "addresses": []}
    with pytest.raises(AgentCallError) as info:
        client.call("configure_network", interfaces=[nic], routes=[])
    assert info.value.kind == "not_found"
    assert "02:00:0a:00:00:99" in info.value.message


@needs_iproute
def test_configure_network_waits_for_a_nic_that_appears_later(
    netns_agent: tuple[AgentClient, str],
) -> None:
    """As for a hot-plugged NIC: the guest's kernel shows it a moment after the host adds it."""
    client, netns = netns_agent
    late = "02:00:0a:00:00:03"
    nic = {"mac": late, "mtu": 1400, "addresses": ["10.7.0.2/24"]}
    route = {"destination": "10.70.0.0/16", "gateway": "10.7.0.1", "mac": late}

    def plug() -> None:
        time.sleep(0.5)
        ip(netns, "link", "add", "vc2", "address", late, "type", "veth", "peer", "vc2p")
        ip(netns, "link", "set", "vc2p", "up")

    plugger = threading.Thread(target=plug)
    plugger.start()
    try:
        assert client.call("configure_network", interfaces=[nic], routes=[route], wait=30) == {}
    finally:
        plugger.join()
    assert global_addresses(ip(netns, "addr", "show", "dev", "vc2")[0]) == {("10.7.0.2", 24)}
    assert ("10.70.0.0/16", "10.7.0.1", "vc2") in routes(netns, "-4")


@needs_iproute
def test_configure_network_gives_up_waiting_and_says_so(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, _ = netns_agent
    nic = {"mac": "02:00:0a:00:00:99", "mtu": 1500, "addresses": []}
    waiting = client.request("configure_network", interfaces=[nic], routes=[], wait=1.5)
    assert client.call("ping") == {}  # answered meanwhile: the wait does not block the agent
    assert waiting not in client.responses
    with pytest.raises(AgentCallError) as info:
        client.result(waiting)
    assert info.value.kind == "not_found"
    assert "02:00:0a:00:00:99" in info.value.message and "after waiting 1.5s" in info.value.message


@needs_iproute
def test_configure_network_failure_says_which_command(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, _ = netns_agent
    nic = {"mac": MACS[0], "mtu": 1500, "addresses": ["10.1.2.3/24"]}
    unreachable = {"destination": "10.6.0.0/16", "gateway": "10.5.0.1", "mac": MACS[0]}
    with pytest.raises(AgentCallError) as info:
        client.call("configure_network", interfaces=[nic], routes=[unreachable])
    assert info.value.kind == "network"
    assert "route replace 10.6.0.0/16 via 10.5.0.1 dev vc0" in info.value.message
    assert "unreachable" in info.value.message


def _nic(**fields: Any) -> dict[str, Any]:
    return {"mac": MACS[0], "mtu": 1500, "addresses": ["10.1.2.3/24"], **fields}


def _route(**fields: Any) -> dict[str, Any]:
    return {"destination": "10.9.0.0/16", "gateway": "10.1.2.1", "mac": MACS[0], **fields}


@needs_iproute
@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"interfaces": []}, "routes"),
        ({"interfaces": [], "routes": [], "dns": []}, "dns"),
        ({"interfaces": {}, "routes": []}, "interfaces"),
        ({"interfaces": [_nic()] * 17, "routes": []}, "at most 16"),
        ({"interfaces": [_nic(mac="02:00:0a:00:00")], "routes": []}, "mac"),
        ({"interfaces": [_nic(mac="02:00:0a:00:00:0g")], "routes": []}, "mac"),
        ({"interfaces": [_nic(mac="01:00:5e:00:00:01")], "routes": []}, "multicast"),
        ({"interfaces": [_nic(), _nic()], "routes": []}, "distinct"),
        ({"interfaces": [_nic(mtu=67)], "routes": []}, "mtu"),
        ({"interfaces": [_nic(mtu=True)], "routes": []}, "mtu"),
        ({"interfaces": [_nic(mtu=1000, addresses=["fd00::3/64"])], "routes": []}, "1280"),
        ({"interfaces": [_nic(addresses=["10.1.2.3"])], "routes": []}, "CIDR"),
        ({"interfaces": [_nic(addresses=["10.1.2.3/33"])], "routes": []}, "addresses[0]"),
        ({"interfaces": [_nic(addresses=["10.1.2.3/255.0.0.0"])], "routes": []}, "CIDR"),
        ({"interfaces": [_nic(addresses=["fe80::1%vc0/64"])], "routes": []}, "CIDR"),
        ({"interfaces": [_nic(addresses=["224.0.0.1/4"])], "routes": []}, "cannot be"),
        ({"interfaces": [_nic(addresses=[7])], "routes": []}, "addresses[0]"),
        ({"interfaces": [_nic()], "routes": [_route(destination="10.9.0.1/16")]}, "host bits"),
        ({"interfaces": [_nic()], "routes": [_route(destination="anywhere")]}, "destination"),
        ({"interfaces": [_nic()], "routes": [_route(gateway="10.1.2.1/24")]}, "gateway"),
        ({"interfaces": [_nic()], "routes": [_route(gateway="fd00::1")]}, "IP version"),
        ({"interfaces": [_nic()], "routes": [_route(destination="default", gateway=None)]}, "::/0"),
        ({"interfaces": [_nic()], "routes": [_route(mac=MACS[1])]}, "not the MAC of one"),
        ({"interfaces": [_nic()], "routes": [_route()] * 257}, "at most 256"),
        ({"interfaces": [_nic()], "routes": [], "wait": -1}, "wait"),
        ({"interfaces": [_nic()], "routes": [], "wait": 121}, "0..120"),
        ({"interfaces": [_nic()], "routes": [], "wait": "5"}, "wait"),
        ({"interfaces": [_nic()], "routes": [], "wait": True}, "wait"),
    ],
)
def test_configure_network_checks_every_field(
    netns_agent: tuple[AgentClient, str], args: dict[str, Any], says: str
) -> None:
    client, netns = netns_agent
    with pytest.raises(AgentCallError) as info:
        client.call("configure_network", **args)
    assert info.value.kind == "invalid"
    assert says in info.value.message
    vc0 = ip(netns, "addr", "show", "dev", "vc0")[0]
    assert not global_addresses(vc0) and "UP" not in vc0["flags"]  # nothing was applied
