"""TCP from the host side to a container through its pod's VM, against a plain namespace.

Two copies of one topology, each a "client" namespace joined by a veth to a
far namespace (client 192.0.2.1/24, far end 192.0.2.2/24, MTU 1500):

- floor: the server runs in the far namespace itself (``ip netns exec``), no VM;
- pod: the far namespace is a pod's ``netns``, so its VM takes the veth over
  (tap + tc redirect, virtio-net) and the same server runs in a container;
- forwarded: the same pod's server, from a client in the pod's own namespace
  dialling 127.0.0.1, which the pod forwards into the VM over its agent
  channel (``forward_loopback``: CRI port-forward's path, docs/network.md).

The server is the same busybox shell line in both: ``nc -ll`` on one port
runs ``dd`` of /dev/zero onto each connection (throughput), on another
``cat`` (a 1-byte echo for round trips).  The client is Python in the client
namespace, the same for both; it times on its own side:

- throughput: from the first byte received to end-of-file (so the server's
  fork and exec are not counted), bytes after the first chunk over that time;
- round trip: ``send`` 1 byte + ``recv`` 1 byte with TCP_NODELAY, after
  warm-up round trips; each run's median, then the median over runs.

Runs alternate floor and pod so that both see the same machine.  Safety
(docs/network.md): the namespaces are this benchmark's own,
``vcb-<pid>-<random>``, traffic flows only between addresses inside them, and
they are removed afterwards, as are the servers and the pod, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import NotFoundError, VcError

SERVER = "192.0.2.2"
CLIENT_CIDR = "192.0.2.1/24"
SERVER_CIDR = f"{SERVER}/24"
STREAM_PORT = 7000
ECHO_PORT = 7001
BLOCK = 65536
CONNECT_TIMEOUT = 120.0  # a pod's server may still be starting, under TCG
CLIENT_TIMEOUT = 600.0
Progress = Callable[[str], None]

# Run as ``python3 -I -c CLIENT MODE HOST PORT COUNT WARMUP`` in the client namespace.
CLIENT = """
import json, socket, sys, time
mode, host, port, count, warmup = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
deadline = time.monotonic() + float(sys.argv[6])
while True:
    try:
        conn = socket.create_connection((host, port), timeout=60)
        break
    except OSError:  # refused (or unreachable) until the server listens
        if time.monotonic() > deadline:
            sys.exit(f"no server answered at {host}:{port}")
        time.sleep(0.05)
with conn:
    if mode == "stream":
        view = memoryview(bytearray(1 << 20))
        first = conn.recv_into(view)
        started = time.perf_counter()
        total = first
        while got := conn.recv_into(view):
            total += got
        seconds = time.perf_counter() - started
        print(json.dumps({"bytes": total, "timed_bytes": total - first, "seconds": seconds}))
    else:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for _ in range(warmup + count):
            started = time.perf_counter()
            conn.sendall(b"x")
            if conn.recv(1) != b"x":
                sys.exit("the echo server closed or answered something else")
            rtts.append(time.perf_counter() - started)
        print(json.dumps({"rtts_s": rtts[warmup:]}))
"""


@dataclass(frozen=True)
class NetBenchConfig:
    runs: int = 5
    mib: int = 64
    round_trips: int = 1000
    warmup: int = 50

    def __post_init__(self) -> None:
        for name in ("runs", "mib", "round_trips"):
            if getattr(self, name) < 1:
                raise ValueError(f"network bench: {name} must be at least 1")


@dataclass(frozen=True)
class Target:
    """Where a client runs (a namespace) and the address it dials."""

    netns: str
    host: str


@dataclass(frozen=True)
class Pair:
    """A client namespace joined by a veth to a far namespace."""

    client: str
    far: str

    @property
    def far_path(self) -> str:
        return f"/run/netns/{self.far}"

    @property
    def across(self) -> Target:
        return Target(self.client, SERVER)

    @property
    def far_loopback(self) -> Target:
        return Target(self.far, "127.0.0.1")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Namespaces:
    """The benchmark's own namespaces; ``close`` deletes every one it made."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def make(self) -> str:
        name = f"vcb-{os.getpid()}-{secrets.token_hex(4)}"
        ip("netns", "add", name)
        self.names.append(name)
        return name

    def pair(self) -> Pair:
        pair = Pair(self.make(), self.make())
        # Both ends are made in their namespaces: the name never exists in the host's.
        ip("link", "add", "eth0", "netns", pair.far, "type", "veth",
           "peer", "name", "eth0", "netns", pair.client)  # fmt: skip
        for name, cidr in ((pair.far, SERVER_CIDR), (pair.client, CLIENT_CIDR)):
            ip("-n", name, "link", "set", "eth0", "addrgenmode", "none")
            ip("-n", name, "addr", "add", cidr, "dev", "eth0", "nodad")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
        return pair

    def close(self) -> None:
        while self.names:
            name = self.names.pop()
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def server_script(mib: int) -> str:
    """The servers, as one busybox shell line; the same in a namespace and in a container."""
    count = mib * (1 << 20) // BLOCK
    stream = (
        f"/bin/busybox nc -ll -p {STREAM_PORT} -e "
        f"/bin/busybox dd if=/dev/zero bs={BLOCK} count={count} 2>/dev/null"
    )
    return f"{stream} & exec /bin/busybox nc -ll -p {ECHO_PORT} -e /bin/busybox cat"


@contextlib.contextmanager
def floor_server(pair: Pair, mib: int) -> Iterator[None]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", pair.far, "/bin/busybox", "sh", "-c", server_script(mib)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the background nc goes with it
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@contextlib.contextmanager
def pod_server(pair: Pair, mib: int, rootfs: Path, resources: Resources) -> Iterator[str]:
    pod_id = f"bench-net-{os.getpid()}"
    container = ContainerConfig(
        "server", rootfs, Cmd(("/bin/busybox", "sh", "-c", server_script(mib))), writable_layer=True
    )
    config = PodConfig(
        id=pod_id,
        netns=pair.far_path,
        containers=(container,),
        resources=resources,
        forward_loopback=True,
    )
    try:
        api.run_pod(config)
        yield pod_id
    finally:
        # Also when run_pod itself was interrupted: its own clean-up cannot delete
        # a pod that is still starting, so the pod is stopped by force here.
        with contextlib.suppress(NotFoundError):
            try:
                with contextlib.suppress(VcError):
                    api.stop_pod(pod_id)
            finally:
                api.delete_pod(pod_id, force=True)


def client(target: Target, mode: str, port: int, count: int, warmup: int = 0) -> dict[str, Any]:
    argv = [sys.executable, "-I", "-c", CLIENT, mode, target.host, str(port), str(count)]
    done = subprocess.run(
        ["ip", "netns", "exec", target.netns, *argv, str(warmup), str(CONNECT_TIMEOUT)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} client in {target.netns} failed: {done.stderr.strip()[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def throughput(target: Target, mib: int) -> float:
    """MiB/s of one transfer of ``mib`` MiB from the server to the client."""
    answer = client(target, "stream", STREAM_PORT, 0)
    if answer["bytes"] != mib << 20:
        raise RuntimeError(f"received {answer['bytes']} bytes, expected {mib << 20}")
    return float(answer["timed_bytes"]) / (1 << 20) / float(answer["seconds"])


def round_trips(target: Target, config: NetBenchConfig) -> list[float]:
    answer = client(target, "echo", ECHO_PORT, config.round_trips, config.warmup)
    return [float(rtt) for rtt in answer["rtts_s"]]


def spread(samples: list[float], digits: int) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "runs": len(samples),
    }


@dataclass
class Side:
    """What one path (floor, pod or forwarded) measured: MiB/s per run, round trips per run."""

    name: str
    mib_s: list[float]
    rtts: list[list[float]]

    def run_once(self, target: Target, config: NetBenchConfig, progress: Progress) -> None:
        self.mib_s.append(throughput(target, config.mib))
        self.rtts.append(round_trips(target, config))
        median_us = statistics.median(self.rtts[-1]) * 1e6
        progress(
            f"network {self.name} run {len(self.mib_s)}/{config.runs}: "
            f"{self.mib_s[-1]:.1f} MiB/s, round trip {median_us:.0f} µs"
        )

    def summary(self) -> dict[str, Any]:
        pooled = sorted(rtt for run in self.rtts for rtt in run)
        return {
            "throughput_mib_s": spread(self.mib_s, 1),
            "round_trip_us": {
                **spread([statistics.median(run) * 1e6 for run in self.rtts], 1),
                "p90_all": round(pooled[len(pooled) * 9 // 10] * 1e6, 1),
            },
        }


def measure(
    config: NetBenchConfig, rootfs: Path, progress: Progress, resources: Resources | None = None
) -> dict[str, Any]:
    """Set up, measure floor and pod alternately, tear down; the figures for results.json."""
    resources = resources or Resources()
    floor, pod = Side("floor", [], []), Side("pod", [], [])
    forwarded = Side("forwarded", [], [])
    namespaces = Namespaces()
    try:
        floor_pair, pod_pair = namespaces.pair(), namespaces.pair()
        progress(f"network: namespaces {', '.join(namespaces.names)}; starting the pod")
        with (
            floor_server(floor_pair, config.mib),
            pod_server(pod_pair, config.mib, rootfs, resources),
        ):
            for _ in range(config.runs):
                floor.run_once(floor_pair.across, config, progress)
                pod.run_once(pod_pair.across, config, progress)
                forwarded.run_once(pod_pair.far_loopback, config, progress)
    finally:
        namespaces.close()
    floor_figures, pod_figures = floor.summary(), pod.summary()
    forwarded_figures = forwarded.summary()
    return {
        "setup": {
            "transfer_mib": config.mib,
            "round_trips_per_run": config.round_trips,
            "warmup_round_trips": config.warmup,
            "pod_vcpus": resources.vcpus,
            "pod_memory_mib": resources.memory_mib,
            "server": "busybox nc -ll: dd of /dev/zero (stream), cat (echo)",
        },
        "floor_plain_netns": floor_figures,
        "pod_container_via_vm": pod_figures,
        "pod_container_port_forwarded": forwarded_figures,
        "ratios": {
            "throughput_pod_over_floor": _ratio(pod_figures, floor_figures, "throughput_mib_s", 4),
            "round_trip_pod_over_floor": _ratio(pod_figures, floor_figures, "round_trip_us", 2),
            "throughput_forwarded_over_pod": _ratio(
                forwarded_figures, pod_figures, "throughput_mib_s", 4
            ),
            "round_trip_forwarded_over_pod": _ratio(
                forwarded_figures, pod_figures, "round_trip_us", 2
            ),
        },
    }


def _ratio(side: dict[str, Any], base: dict[str, Any], figure: str, digits: int) -> float:
    return round(float(side[figure]["median"]) / float(base[figure]["median"]), digits)


def report(figures: dict[str, Any]) -> list[str]:
    """Lines for the terminal."""
    floor, pod = figures["floor_plain_netns"], figures["pod_container_via_vm"]
    forwarded = figures["pod_container_port_forwarded"]
    ratios = figures["ratios"]
    return [
        f"TCP throughput, plain netns (floor) median {floor['throughput_mib_s']['median']} MiB/s",
        f"TCP throughput, pod container       median {pod['throughput_mib_s']['median']} MiB/s"
        f" ({ratios['throughput_pod_over_floor']}x floor)",
        f"TCP round trip, plain netns (floor) median {floor['round_trip_us']['median']} µs",
        f"TCP round trip, pod container       median {pod['round_trip_us']['median']} µs"
        f" ({ratios['round_trip_pod_over_floor']}x floor)",
        f"TCP throughput, port-forwarded      median {forwarded['throughput_mib_s']['median']}"
        f" MiB/s ({ratios['throughput_forwarded_over_pod']}x pod)",
        f"TCP round trip, port-forwarded      median {forwarded['round_trip_us']['median']} µs"
        f" ({ratios['round_trip_forwarded_over_pod']}x pod)",
    ]
