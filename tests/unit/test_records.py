"""The pod record: one family of types, read back as it was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.errors import ConfigError, StateError
from virtcontainers.records import (
    KILLED,
    MAX_NICS,
    ContainerRecord,
    NicRecord,
    PodRecord,
    ProcessRef,
)
from virtcontainers.states import ContainerState, PodState


def test_a_record_round_trips(tmp_path: Path) -> None:
    container = ContainerConfig("c", tmp_path, Cmd(("sh",)))
    record = PodRecord(
        PodConfig(id="p", hypervisor="mock", containers=(container,)),
        containers={"c": ContainerRecord(container, ContainerState.STOPPED, 7, KILLED)},
        created_at=1.5,
    )
    assert PodRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_what_a_reattaching_daemon_needs_round_trips(tmp_path: Path) -> None:
    container = ContainerConfig("c", tmp_path, Cmd(("sh",)))
    record = PodRecord(
        PodConfig(id="p", hypervisor="mock", containers=(container,)),
        containers={"c": ContainerRecord(container, ContainerState.RUNNING, 7, logged=True)},
        daemon_hosted=True,
        owner=ProcessRef(42, 4242),
        nics=[NicRecord("eth0", "net0", False), NicRecord("eth1", "net2", True)],
        next_nic=3,
    )
    assert PodRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    older = record.to_json()
    for key in ("daemon_hosted", "owner", "nics", "next_nic"):
        del older[key]  # type: ignore[misc]
    del older["containers"]["c"]["logged"]
    loaded = PodRecord.from_json(json.loads(json.dumps(older)))
    assert not loaded.daemon_hosted and loaded.owner is None
    assert not loaded.containers["c"].logged
    assert (loaded.nics, loaded.next_nic) == ([], 0)


@pytest.mark.parametrize(
    "nics",
    [
        "eth0",
        [["eth0", "net0"]],
        [{"interface": "eth0", "device": "blk0"}],
        [{"interface": "", "device": "net0"}],
        [{"interface": "a-name-too-long-for-linux", "device": "net0"}],
        [{"interface": "eth0", "device": "net0"}, {"interface": "eth0", "device": "net1"}],
        [{"interface": f"eth{n}", "device": f"net{n}"} for n in range(MAX_NICS + 1)],
    ],
)
def test_a_malformed_list_of_nics_is_refused(nics: object) -> None:
    data = dict(PodRecord(PodConfig(id="p")).to_json())
    data["nics"] = nics
    with pytest.raises(ConfigError, match="nics"):
        PodRecord.from_json(data)


def test_a_stopped_pod_has_no_nics() -> None:
    record = PodRecord(PodConfig(id="p"), PodState.RUNNING, nics=[NicRecord("eth0", "net0", False)])
    record.next_nic = 1
    record.mark_stopped(None)
    assert (record.nics, record.next_nic) == ([], 0)


def test_marking_a_pod_stopped_goes_through_the_transitions(tmp_path: Path) -> None:
    running = ContainerRecord(ContainerConfig("r", tmp_path, Cmd(("sh",))), ContainerState.RUNNING)
    created = ContainerRecord(ContainerConfig("n", tmp_path, Cmd(("sh",))))
    record = PodRecord(PodConfig(id="p"), PodState.RUNNING, {"r": running, "n": created})
    record.mark_stopped("the VM died")
    assert record.state is PodState.STOPPED and record.error == "the VM died"
    assert (running.state, running.exit) == (ContainerState.STOPPED, KILLED)
    assert created.state is ContainerState.CREATED
    with pytest.raises(StateError, match="cannot move to paused pod 'p': it is stopped"):
        record.state.moved_to("p", PodState.PAUSED)
