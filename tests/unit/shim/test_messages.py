"""What the shim makes of containerd's documents, and what it answers: specs, stats, flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from virtcontainers.api import ContainerStats, PodStatus
from virtcontainers.errors import RuntimeSpecError
from virtcontainers.host.proc import process_usage
from virtcontainers.limits import Limits
from virtcontainers.shim import main, specs, stats
from virtcontainers.shim.protos import cgroups_v1, cgroups_v2
from virtcontainers.states import PodState

USAGE = ContainerStats(
    cpu_usage_ns=3_000_000,
    cpu_user_ns=2_000_000,
    cpu_system_ns=1_000_000,
    memory_bytes=50 << 20,
    memory_limit_bytes=256 << 20,
    memory_cache_bytes=4 << 20,
    pids=3,
    pids_limit=100,
    io_read_bytes=10,
    io_write_bytes=20,
    network_rx_bytes=30,
    network_tx_bytes=40,
)


def packed(url: str, document: object) -> any_pb2.Any:
    return any_pb2.Any(type_url=url, value=json.dumps(document).encode())


def test_exec_spec_becomes_a_cmd() -> None:
    process = {"args": ["sh", "-c", "echo hi"], "cwd": "/tmp", "terminal": True, "env": ["A=1"]}
    cmd = specs.exec_cmd(packed(specs.PROCESS_URL, process))
    assert (cmd.args, cmd.cwd, cmd.terminal) == (("sh", "-c", "echo hi"), "/tmp", True)
    assert "A=1" in cmd.env


@pytest.mark.parametrize(
    "bad",
    [
        packed("some.other.Type", {"args": ["sh"]}),
        any_pb2.Any(type_url=specs.PROCESS_URL, value=b"{not json"),
        packed(specs.PROCESS_URL, ["sh"]),
        packed(specs.PROCESS_URL, {"args": "sh"}),
    ],
)
def test_a_bad_exec_spec_is_a_runtime_spec_error(bad: any_pb2.Any) -> None:
    with pytest.raises(RuntimeSpecError):
        specs.exec_cmd(bad)


def test_update_takes_memory_cpu_and_pids() -> None:
    resources = {
        "memory": {"limit": 256 << 20, "swap": -1},
        "cpu": {"quota": 50_000, "period": 100_000, "shares": 2},
        "pids": {"limit": 64},
    }
    limits = specs.update_limits(packed(specs.RESOURCES_URL, resources))
    assert limits == Limits(memory_bytes=256 << 20, pids=64, cpus=0.5)
    assert specs.update_limits(packed(specs.RESOURCES_URL, {"memory": {"limit": -1}})).empty


@pytest.mark.parametrize(
    "resources", [{"memory": {"limit": 1024}}, {"memory": "lots"}, {"cpu": {"quota": 1}}]
)
def test_an_impossible_update_is_a_runtime_spec_error(resources: object) -> None:
    with pytest.raises(RuntimeSpecError):
        specs.update_limits(packed(specs.RESOURCES_URL, resources))


def test_stats_as_cgroup_v1_metrics() -> None:
    answer = stats.metrics(USAGE, v2=False)
    assert answer.type_url == "io.containerd.cgroups.v1.Metrics"
    decoded = cgroups_v1.Metrics()
    decoded.ParseFromString(answer.value)
    assert decoded.memory.usage.usage == 50 << 20
    assert decoded.memory.usage.limit == 256 << 20
    assert decoded.memory.total_cache == 4 << 20
    assert decoded.cpu.usage.total == 3_000_000
    assert (decoded.pids.current, decoded.pids.limit) == (3, 100)


def test_stats_as_cgroup_v2_metrics() -> None:
    answer = stats.metrics(USAGE, v2=True)
    assert answer.type_url == "io.containerd.cgroups.v2.Metrics"
    decoded = cgroups_v2.Metrics()
    decoded.ParseFromString(answer.value)
    assert (decoded.memory.usage, decoded.memory.usage_limit) == (50 << 20, 256 << 20)
    assert decoded.cpu.usage_usec == 3000
    assert decoded.io.usage[0].wbytes == 20


def test_a_sandbox_reports_what_its_vm_costs_the_host() -> None:
    """Its QEMU and daemon (this process twice here), not the guest's pause process."""
    me = os.getpid()
    pod = PodStatus("p", PodState.RUNNING, (), "qemu", me, me, None, None, 0.0)
    own = process_usage(me)
    assert own is not None
    usage = stats.vm_usage(pod, USAGE)
    assert usage.pids == 2
    # Twice this process's PSS, read a moment later: PSS shrinks when another
    # process (a test worker's fork) comes to share pages, so no exact sum.
    assert usage.memory_bytes > own.pss_bytes > 0
    assert usage.cpu_usage_ns == usage.cpu_user_ns + usage.cpu_system_ns
    assert usage.cpu_usage_ns >= round(own.cpu_seconds * 1e9) * 2 > 0
    assert (usage.network_rx_bytes, usage.network_tx_bytes) == (30, 40)  # the pod's, from the guest
    assert (usage.memory_limit_bytes, usage.pids_limit, usage.io_read_bytes) == (0, 0, 0)
    gone = PodStatus("p", PodState.STOPPED, (), "qemu", None, None, None, None, 0.0)
    assert stats.vm_usage(gone, USAGE).memory_bytes == 0


def test_host_cgroup_kind(tmp_path: Path) -> None:
    assert not stats.host_is_cgroup_v2(tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert stats.host_is_cgroup_v2(tmp_path)


def test_flags_as_containerd_passes_them(tmp_path: Path) -> None:
    argv = ["-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/bin/c"]
    flags = main.parse_flags([*argv, "-id", "abc", "-bundle", str(tmp_path), "-debug", "start"])
    assert (flags.namespace, flags.address, flags.id, flags.action) == (
        "k8s.io",
        "/run/c.sock",
        "abc",
        "start",
    )
    assert flags.bundle == tmp_path and flags.debug
    with pytest.raises(SystemExit):
        main.parse_flags(["-id", "abc", "start"])  # no namespace


def test_one_socket_per_pod_containerd_and_namespace() -> None:
    path = main.socket_path("/run/c.sock", "k8s.io", "a" * 64)
    assert path == main.socket_path("/run/c.sock", "k8s.io", "a" * 64)
    assert len(str(path)) < 107
    assert path != main.socket_path("/run/c.sock", "other", "a" * 64)
    assert path != main.socket_path("/run/d.sock", "k8s.io", "a" * 64)
