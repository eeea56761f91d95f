"""Updates and usage: the API over a mock pod, vc-runtime's runc-shaped flags and
events, and the guest's checks of what an update may set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.agent.base import ContainerStats
from virtcontainers.cli.runtime_resources import limits_from_flags, runc_stats
from virtcontainers.cli.runtime_state import Options, RuntimeCommandError
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import ConfigError, StateError
from virtcontainers.guest.agent.args import AgentError
from virtcontainers.guest.agent.op_resources import _check_resources
from virtcontainers.limits import Limits


def test_update_merges_into_the_record_and_refuses_more_than_the_vm(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    limits = Limits(memory_bytes=64 << 20, pids=10)
    api.run_pod(mock_pod("u", image, ContainerConfig("c", rootfs, Cmd(("sleep",)), limits=limits)))
    api.update_container("u", "c", Limits(memory_bytes=128 << 20))
    pod = api.pod_status("u")
    assert pod.state.value == "running"
    with pytest.raises(ConfigError, match="more than its pod's VM has"):
        api.update_container("u", "c", Limits(cpus=4))
    stats = api.container_stats("u", "c")
    assert isinstance(stats, ContainerStats) and stats.pids == 1
    api.stop_pod("u")
    with pytest.raises(StateError):
        api.update_container("u", "c", Limits(pids=5))


@pytest.mark.parametrize(
    ("flags", "limits"),
    [
        ({"memory": "128m"}, Limits(memory_bytes=128 << 20)),
        ({"memory": "-1", "pids_limit": 20}, Limits(pids=20)),
        ({"cpu_quota": 50000, "cpu_period": 100000}, Limits(cpus=0.5)),
        ({"cpu_quota": -1}, Limits()),
    ],
)
def test_runc_update_flags(flags: dict[str, Any], limits: Limits) -> None:
    assert limits_from_flags(flags, Options(), "c") == limits


def test_runc_update_resources_document_warns_of_what_it_cannot_change(tmp_path: Path) -> None:
    document = tmp_path / "resources.json"
    document.write_text(
        json.dumps(
            {
                "memory": {"limit": 1 << 30, "reservation": 1 << 20},
                "cpu": {"shares": 512},
                "pids": {"limit": 64},
            }
        )
    )
    log = tmp_path / "log"
    options = Options(log=log)
    limits = limits_from_flags({"resources_file": str(document)}, options, "c")
    assert limits == Limits(memory_bytes=1 << 30, pids=64)
    text = log.read_text()
    assert "memory.reservation is not updated" in text and "cpu.shares is not updated" in text


def test_runc_update_refuses_what_a_vm_cannot_change() -> None:
    with pytest.raises(RuntimeCommandError, match="--cpuset-cpus cannot be changed"):
        limits_from_flags({"cpuset_cpus": "0-1"}, Options(), "c")


def test_events_stats_are_shaped_as_runcs() -> None:
    stats = ContainerStats(10, 4, 6, 1 << 20, 2 << 20, 4096, 3, 50, 7, 8, 9, 10)
    event = runc_stats("c", stats)
    assert event["type"] == "stats" and event["id"] == "c"
    data: Any = event["data"]
    assert data["cpu"]["usage"] == {"total": 10, "kernel": 6, "user": 4}
    assert data["memory"]["usage"] == {"usage": 1 << 20, "limit": 2 << 20}
    assert data["pids"] == {"current": 3, "limit": 50}


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({}, "non-empty object"),
        ({"blkio": {"weight": 10}}, "expected one of"),
        ({"memory": {"kernel": 1}}, "cannot be updated"),
        ({"memory": {"limit": "1G"}}, "must be an integer"),
        ({"pids": {"limit": 1 << 63}}, "out of range"),
        ([], "non-empty object"),
    ],
)
def test_the_guest_checks_what_an_update_sets(resources: object, message: str) -> None:
    with pytest.raises(AgentError, match=message):
        _check_resources(resources)
