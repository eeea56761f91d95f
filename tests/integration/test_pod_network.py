"""Pods on a network the test made: a veth from the pod's namespace to a peer's.

Safety: the namespaces, veths and addresses (192.0.2.0/24, 2001:db8::/64: the
documentation ranges) are the test's own (tests/netlab.py), traffic flows only
between the pod's VM and the peer namespace, and both namespaces are removed
after the test, also when it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell, wait_stopped
from tests.netlab import Lab, NetPair, ip, snapshot, tun_links
from virtcontainers import api
from virtcontainers.config import ContainerConfig, PodConfig
from virtcontainers.errors import ConfigError
from virtcontainers.network.loopnat import TABLE
from virtcontainers.network.netns import run_in_netns
from virtcontainers.volumes import Mount

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

PEER_SERVER = """
import hashlib, os, socket
blob = os.urandom(1 << 20)
listener = socket.create_server(("192.0.2.1", 7000))
listener.settimeout(120)
print(hashlib.sha256(blob).hexdigest(), flush=True)
connection, _ = listener.accept()
connection.sendall(blob)
connection.close()
"""

PEER_CLIENT = """
import socket
with socket.create_connection(("192.0.2.2", 7001), timeout=60) as s:
    print(s.recv(100).decode().strip())
"""


def in_peer(pair: NetPair, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", pair.peer, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def networked_pod(
    pod_id: str, pair: NetPair, rootfs: Path, mounts: tuple[Mount, ...] = (), hostname: str = ""
) -> PodConfig:
    container = ContainerConfig(
        "c", rootfs, shell("exec sleep 1000"), mounts=mounts, writable_layer=True
    )
    return PodConfig(id=pod_id, netns=pair.path, containers=(container,), hostname=hostname or None)


def name_files(directory: Path) -> tuple[Mount, ...]:
    """/etc/hosts and /etc/resolv.conf as an engine gives them: files bound in."""
    hosts = directory / "hosts"
    hosts.write_text("127.0.0.1 localhost\n192.0.2.1 peer.test peer\n")
    resolv = directory / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\nsearch test\n")
    return (
        Mount(str(hosts), "/etc/hosts", read_only=True),
        Mount(str(resolv), "/etc/resolv.conf", read_only=True),
    )


def container_run(pod_id: str, script: str) -> str:
    out, err, code = run_exec(pod_id, "c", shell(script))
    assert code == 0, f"{script!r} exited {code}: {err.decode()}"
    return out.decode()


def test_a_container_has_the_callers_interface_and_reaches_the_peer(
    lab: Lab, no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    pair = lab.pod()
    before = snapshot(pair.path, "eth0")
    mounts = name_files(tmp_path)
    api.run_pod(networked_pod("net", pair, busybox_rootfs, mounts, hostname="web"))

    names = container_run("net", "hostname; cat /etc/hosts /etc/resolv.conf")
    assert names.splitlines() == [
        "web", "127.0.0.1 localhost", "192.0.2.1 peer.test peer",
        "nameserver 192.0.2.53", "search test",
    ]  # fmt: skip

    addresses = container_run("net", "ip -o addr show")
    assert "inet 192.0.2.2/24" in addresses and "inet6 2001:db8::2/64" in addresses
    mac = container_run("net", "cat /sys/class/net/eth0/address").strip()
    assert mac == str(before["link"][2])  # type: ignore[index]
    routes = container_run("net", "ip route; ip -6 route")
    assert "default via 192.0.2.1" in routes and "198.51.100.0/24" in routes
    assert "default via 2001:db8::1" in routes

    container_run("net", "ping -c 1 -W 30 192.0.2.1 && ping6 -c 1 -W 30 2001:db8::1")
    for address in ("192.0.2.2", "2001:db8::2"):
        answer = in_peer(pair, "busybox", "ping", "-c", "1", "-W", "30", address)
        assert answer.returncode == 0, answer.stdout + answer.stderr

    # TCP both ways: the container connects out, and the peer connects in.
    server = subprocess.Popen(
        ["ip", "netns", "exec", pair.peer, "python3", "-c", PEER_SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        digest = server.stdout.readline().strip()
        fetched = container_run("net", "nc 192.0.2.1 7000 | sha256sum")
        assert fetched.split()[0] == digest
    finally:
        server.kill()
        server.wait()
    handle = api.enter_container("net", "c", shell("echo from the pod | nc -l -p 7001"))
    client = in_peer(pair, "python3", "-c", PEER_CLIENT)
    assert client.stdout.strip() == "from the pod", client.stderr
    assert api.wait_process("net", "c", handle.exec_id).exit_code == 0

    api.stop_pod("net")
    assert tun_links(pair.path) == []
    assert snapshot(pair.path, "eth0") == before
    api.delete_pod("net")


def test_a_namespace_with_loopback_only_gives_the_guest_loopback_only(
    lab: Lab, no_leaks: Path, busybox_rootfs: Path
) -> None:
    name, path = lab.netns()
    container = ContainerConfig("c", busybox_rootfs, shell("exec sleep 1000"), writable_layer=True)
    api.run_pod(PodConfig(id="lo", netns=path, containers=(container,)))
    links = container_run("lo", "ls /sys/class/net")
    assert links.split() == ["lo"]
    api.stop_pod("lo")
    api.delete_pod("lo")
    assert tun_links(path) == []
    assert name in os.listdir("/run/netns")  # the caller's namespace stays


def test_loopback_connections_in_the_namespace_reach_the_vm(
    lab: Lab, no_leaks: Path, busybox_rootfs: Path
) -> None:
    """forward_loopback on a namespace with loopback only (the guest's own loopback
    is brought up for it): several connections at once, echoed by a server in a
    container; a daemon killed leaves no table once the pod is cleaned up."""
    name, path = lab.netns()
    ip("-n", name, "link", "set", "lo", "up")
    container = ContainerConfig(
        "c", busybox_rootfs, shell("exec nc -ll -p 8080 -e cat"), writable_layer=True
    )
    config = PodConfig(id="fwd", netns=path, containers=(container,), forward_loopback=True)
    status = api.run_pod(config)
    container_run("fwd", "until netstat -ltn | grep -q ':8080 '; do sleep 0.2; done")
    assert f"table inet {TABLE}" in nft_tables(name)

    payloads = [os.urandom(200_000 + n) for n in range(4)]
    targets = ["127.0.0.1", "::1"] * 2
    with ThreadPoolExecutor(len(payloads)) as pool:
        echoed = list(pool.map(partial(echo_through, path), targets, payloads))
    assert echoed == payloads

    assert status.daemon_pid is not None and status.vm_pid is not None
    os.kill(status.daemon_pid, signal.SIGKILL)
    os.kill(status.vm_pid, signal.SIGKILL)
    wait_stopped("fwd")
    assert TABLE not in nft_tables(name)
    assert (
        subprocess.run(
            ["ip", "netns", "exec", name, "ss", "-Hltn"], capture_output=True, text=True, check=True
        ).stdout
        == ""
    )
    api.delete_pod("fwd")


def echo_through(netns: str, address: str, payload: bytes) -> bytes:
    """Connect to port 8080 on loopback inside the namespace, send, half-close,
    and read to the end."""
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sock = run_in_netns(fd, lambda: socket.create_connection((address, 8080), timeout=60))
    finally:
        os.close(fd)
    with sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def nft_tables(netns: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_network_of_a_pod_whose_daemon_died_is_released(
    lab: Lab, no_leaks: Path, busybox_rootfs: Path
) -> None:
    pair = lab.pod()
    before = snapshot(pair.path, "eth0")
    status = api.run_pod(networked_pod("orphan", pair, busybox_rootfs))
    assert status.daemon_pid is not None and status.vm_pid is not None
    os.kill(status.daemon_pid, signal.SIGKILL)
    os.kill(status.vm_pid, signal.SIGKILL)

    stopped = wait_stopped("orphan")
    assert stopped.error and "daemon exited unexpectedly" in stopped.error
    assert tun_links(pair.path) == []
    assert snapshot(pair.path, "eth0") == before
    api.delete_pod("orphan")


def test_a_path_that_is_not_a_network_namespace_is_refused_at_create(
    run_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        api.create_pod(PodConfig(id="a", netns="/run/netns/vct-no-such-namespace"))
    with pytest.raises(ConfigError, match="not a network namespace"):
        api.create_pod(PodConfig(id="b", netns="/proc/self/ns/pid"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a namespace file"):
        api.create_pod(PodConfig(id="c", netns=str(tmp_path / "file")))
    with pytest.raises(ConfigError, match="host's network namespace"):
        api.create_pod(PodConfig(id="d", netns="/proc/self/ns/net"))
    assert api.list_pods() == []
