"""Updates and usage: the API over a mock pod, vc-runtime's runc-shaped flags and
events, and the guest's checks of what an update may set."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.agent.results import ContainerStats
from virtcontainers.cli.runtime.resources import limits_from_flags, runc_stats
from virtcontainers.cli.runtime.state import Options, RuntimeCommandError
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import ConfigError, StateError
from virtcontainers.guest.agent.args import AgentError
from virtcontainers.guest.agent.ops.resources import _check_resources
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


def test_events_follow_a_pods_run_to_its_stop(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    api.run_pod(mock_pod("ev", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    api.pause_container("ev", "c")
    api.resume_container("ev", "c")
    api.kill_container("ev", "c", 9)
    api.wait_container("ev", "c")
    events = api.pod_events("ev", timeout=5)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert {(e.kind, e.container_id) for e in events} >= {
        ("start", "c"), ("paused", "c"), ("resumed", "c"), ("exit", "c"),
    }  # fmt: skip
    [exit_event] = [e for e in events if e.kind == "exit"]
    assert exit_event.fields["exit_code"] == 137
    assert api.pod_events("ev", after=events[-1].seq, timeout=0) == []

    follower = api.follow_events("ev")
    assert next(follower) == events[0]  # from the start of the run: what is kept
    api.stop_pod("ev")
    kinds = [event.kind for event in follower]
    assert kinds[-1] == "stopped" and kinds[:-1] in ([], [e.kind for e in events[1:]])


def test_follow_says_stopped_when_the_daemon_is_gone(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    status = api.run_pod(mock_pod("gone", image))
    assert status.daemon_pid is not None
    os.kill(status.daemon_pid, signal.SIGKILL)
    [event] = list(api.follow_events("gone"))
    assert event.kind == "stopped" and "daemon exited unexpectedly" in str(event.fields["error"])
