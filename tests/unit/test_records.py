"""The pod record: one family of types, read back as it was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.errors import StateError
from virtcontainers.records import KILLED, ContainerRecord, PodRecord
from virtcontainers.states import ContainerState, PodState


def test_a_record_round_trips(tmp_path: Path) -> None:
    container = ContainerConfig("c", tmp_path, Cmd(("sh",)))
    record = PodRecord(
        PodConfig(id="p", hypervisor="mock", containers=(container,)),
        containers={"c": ContainerRecord(container, ContainerState.STOPPED, 7, KILLED)},
        created_at=1.5,
    )
    assert PodRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


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
