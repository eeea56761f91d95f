"""The pod record: one family of types, written and read in one place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.errors import CorruptRecordError, StateError
from virtcontainers.states import ContainerState, PodState
from virtcontainers.store import KILLED, ContainerRecord, PodRecord


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


CORRUPTIONS = {
    "not json": "{",
    "a list": "[]",
    "an old version": json.dumps({"version": 1}),
    "a bad state": None,
    "a bad container": None,
    "deep nesting": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupt_record_is_reported_and_can_be_deleted(run_root: Path, kind: str) -> None:
    api.create_pod(PodConfig(id="good", hypervisor="mock"))
    api.create_pod(PodConfig(id="bad", hypervisor="mock"))
    state = run_root / "pods" / "bad" / "state.json"
    text = CORRUPTIONS[kind]
    if text is None:
        data = json.loads(state.read_text())
        if kind == "a bad state":
            data["state"] = "exploded"
        else:
            data["containers"] = {"c": {"config": {"id": 5}}}
        text = json.dumps(data)
    state.write_text(text)
    assert [p.id for p in api.list_pods()] == ["good"]
    errors = api.list_pod_errors()
    assert [e.pod_id for e in errors] == ["bad"] and str(state) in str(errors[0])
    with pytest.raises(CorruptRecordError, match="virtc pod delete bad"):
        api.pod_status("bad")
    api.delete_pod("bad")
    assert not (run_root / "pods" / "bad").exists()
    assert api.list_pod_errors() == []


def test_importing_the_api_loads_no_asyncio() -> None:
    code = "import sys, virtcontainers.api; print('asyncio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
