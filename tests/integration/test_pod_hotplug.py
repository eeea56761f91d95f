"""Interfaces hot-plugged into running pods, and unplugged again.

Safety: the namespaces, veths and addresses (192.0.2.0/24, 203.0.113.0/24,
2001:db8::/64: the documentation ranges) are the test's own
(tests/netlab.py); traffic flows only between the pod's VM and the peer
namespace, and every namespace is removed after the test, also when it fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell
from tests.integration.test_pod_network import in_peer, networked_pod
from tests.netlab import Lab, NetPair, snapshot, tun_links
from virtcontainers import api
from virtcontainers.config import ContainerConfig, PodConfig
from virtcontainers.errors import ConfigError, ExistsError, NotFoundError

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

PEER_SERVER = """
import socket, sys
listener = socket.create_server((sys.argv[1], 7000))
listener.settimeout(120)
print("listening", flush=True)
connection, _ = listener.accept()
connection.sendall(b"hello over " + sys.argv[1].encode() + b"\\n")
connection.close()
"""


def container_run(pod_id: str, script: str) -> str:
    out, err, code = run_exec(pod_id, "c", shell(script))
    assert code == 0, f"{script!r} exited {code}: {err.decode()}"
    return out.decode()


def guest_macs(pod_id: str) -> set[str]:
    """The MACs of the VM's NICs, as the guest's kernel lists them."""
    return set(container_run(pod_id, "cat /sys/class/net/*/address").split())


def fetch_from_peer(pair: NetPair, pod_id: str, address: str) -> str:
    """What the container reads from a TCP server the peer runs on ``address``."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", pair.peer, "python3", "-c", PEER_SERVER, address],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        return container_run(pod_id, f"nc {address} 7000")
    finally:
        server.kill()
        server.wait()


def test_an_interface_added_to_a_running_pod_carries_traffic_until_removed(
    lab: Lab, no_leaks: Path, busybox_rootfs: Path
) -> None:
    pair = lab.pod()
    eth0_before = snapshot(pair.path, "eth0")
    api.run_pod(networked_pod("hot", pair, busybox_rootfs))
    [eth0_tap] = tun_links(pair.path)

    # The caller puts a second interface in the pod's namespace, then hands it over.
    lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    eth1_before = snapshot(pair.path, "eth1")
    eth1_mac = str(eth1_before["link"][2])  # type: ignore[index]
    added = api.add_interface("hot", "eth1")
    assert (added.name, added.mac, added.mtu) == ("eth1", eth1_mac, 1400)
    assert added.addresses == ("203.0.113.2/24",) and added.hotplugged
    assert [(i.name, i.hotplugged) for i in api.list_interfaces("hot")] == [
        ("eth0", False),
        ("eth1", True),
    ]
    assert eth1_mac in guest_macs("hot")
    assert "inet 203.0.113.2/24" in container_run("hot", "ip -o addr show")
    container_run("hot", "ping -c 1 -W 30 203.0.113.1")
    answer = in_peer(pair, "busybox", "ping", "-c", "1", "-W", "30", "203.0.113.2")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert fetch_from_peer(pair, "hot", "203.0.113.1") == "hello over 203.0.113.1\n"
    with pytest.raises(ExistsError, match="attached to the VM already"):
        api.add_interface("hot", "eth1")

    api.remove_interface("hot", "eth1")
    assert eth1_mac not in guest_macs("hot")
    assert "203.0.113.2" not in container_run("hot", "ip -o addr show")
    assert snapshot(pair.path, "eth1") == eth1_before
    assert tun_links(pair.path) == [eth0_tap]
    assert fetch_from_peer(pair, "hot", "192.0.2.1") == "hello over 192.0.2.1\n"

    # The interfaces found at boot sit in hot-plug slots too: they come out the same way.
    api.remove_interface("hot", "eth0")
    assert guest_macs("hot") == {"00:00:00:00:00:00"}  # loopback only
    assert tun_links(pair.path) == []
    assert snapshot(pair.path, "eth0") == eth0_before
    with pytest.raises(NotFoundError, match="attached: none"):
        api.remove_interface("hot", "eth0")

    api.stop_pod("hot")
    api.delete_pod("hot")
    assert tun_links(pair.path) == []
    assert snapshot(pair.path, "eth0") == eth0_before
    assert snapshot(pair.path, "eth1") == eth1_before


def test_a_pod_booted_with_loopback_only_gets_its_first_nic_hot_plugged(
    lab: Lab, no_leaks: Path, busybox_rootfs: Path
) -> None:
    name, path = lab.netns()
    peer, peer_path = lab.netns()
    pair = NetPair(name, path, peer, peer_path)
    container = ContainerConfig("c", busybox_rootfs, shell("exec sleep 1000"), writable_layer=True)
    api.run_pod(PodConfig(id="late", netns=path, containers=(container,)))
    assert container_run("late", "ls /sys/class/net").split() == ["lo"]

    lab.veth(pair, "eth0", "192.0.2.2/24", "192.0.2.1/24", "2001:db8::2/64", "2001:db8::1/64")
    before = snapshot(path, "eth0")
    with pytest.raises(NotFoundError, match="put it in the pod's network namespace"):
        api.add_interface("late", "eth9")
    with pytest.raises(ConfigError, match="loopback"):
        api.add_interface("late", "lo")
    api.add_interface("late", "eth0")
    container_run("late", "ping -c 1 -W 30 192.0.2.1 && ping6 -c 1 -W 30 2001:db8::1")
    assert fetch_from_peer(pair, "late", "192.0.2.1") == "hello over 192.0.2.1\n"

    api.remove_interface("late", "eth0")
    assert container_run("late", "ls /sys/class/net").split() == ["lo"]
    assert tun_links(path) == []
    assert snapshot(path, "eth0") == before

    # Back in again, and left in: stop and delete release it.
    api.add_interface("late", "eth0")
    assert len(tun_links(path)) == 1
    api.stop_pod("late")
    api.delete_pod("late")
    assert tun_links(path) == []
    assert snapshot(path, "eth0") == before
