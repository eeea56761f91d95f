"""Host processes are known by pid and start time, never by name (defect 5)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtcontainers import api
from virtcontainers.config import PodConfig
from virtcontainers.host import proc as hostproc
from virtcontainers.host.proc import ProcessRef
from virtcontainers.states import PodState


@pytest.fixture
def impostor() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose command line says qemu."""
    proc = subprocess.Popen(["qemu-system-x86_64", "600"], executable="/bin/sleep")
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_ref_matches_only_the_process_it_was_made_for(
    impostor: subprocess.Popen[bytes],
) -> None:
    ref = ProcessRef.of(impostor.pid)
    assert ref is not None and ref.alive()
    stale = ProcessRef(impostor.pid, ref.start_time - 1)
    assert not stale.alive()
    assert not stale.kill()
    assert impostor.poll() is None
    assert ref.kill()
    assert impostor.wait(timeout=10) == -9


def test_a_ref_of_an_exited_process_is_dead() -> None:
    proc = subprocess.Popen(["true"])
    ref = ProcessRef.of(proc.pid)
    assert ref is not None
    proc.wait()
    assert not ref.alive()
    assert not ref.kill()


def test_records_parse_strictly() -> None:
    assert ProcessRef.from_record({"pid": 5, "start_time": 7}) == ProcessRef(5, 7)
    for bad in (None, 5, {"pid": 5}, {"pid": True, "start_time": 1}, {"pid": -1, "start_time": 1}):
        assert ProcessRef.from_record(bad) is None
    assert not hostproc.alive({"pid": "1", "start_time": 0})


def test_a_stale_vm_pid_never_kills_an_unrelated_process(
    run_root: Path, impostor: subprocess.Popen[bytes]
) -> None:
    """A pod whose daemon died, whose recorded VM pid now belongs to another process."""
    api.create_pod(PodConfig(id="stale", hypervisor="mock"))
    state = run_root / "pods" / "stale" / "state.json"
    record = json.loads(state.read_text())
    ref = ProcessRef.of(impostor.pid)
    assert ref is not None
    record["state"] = PodState.RUNNING.value
    record["daemon"] = {"pid": impostor.pid, "start_time": ref.start_time + 1}
    record["vm"] = {"pid": impostor.pid, "start_time": ref.start_time + 1}
    state.write_text(json.dumps(record))
    assert api.pod_status("stale").state is PodState.STOPPED
    assert impostor.poll() is None, "an unrelated process was killed"
