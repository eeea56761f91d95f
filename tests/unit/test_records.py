"""The pod record: one family of types, read back as it was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.errors import StateError
from virtcontainers.records import KILLED, ContainerRecord, PodRecord, ProcessRef
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
    )
    assert PodRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    older = record.to_json()
    for key in ("daemon_hosted", "owner"):
        del older[key]  # type: ignore[misc]
    del older["containers"]["c"]["logged"]
    loaded = PodRecord.from_json(json.loads(json.dumps(older)))
    assert not loaded.daemon_hosted and loaded.owner is None
    assert not loaded.containers["c"].logged


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
