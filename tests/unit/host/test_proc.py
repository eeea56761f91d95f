"""Host processes are known by pid and start time, never by name (defect 5)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtcontainers import api
from virtcontainers.cli.runtime.state import Record
from virtcontainers.config import PodConfig
from virtcontainers.host import proc as hostproc
from virtcontainers.records import ProcessRef
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
    process = hostproc.of(impostor.pid)
    assert process is not None and hostproc.alive(process)
    stale = ProcessRef(impostor.pid, process.start_time - 1)
    assert not hostproc.alive(stale)
    assert not hostproc.kill(stale)
    assert impostor.poll() is None
    assert hostproc.kill(process)
    assert impostor.wait(timeout=10) == -9


def test_a_ref_of_an_exited_process_is_dead() -> None:
    proc = subprocess.Popen(["true"])
    process = hostproc.of(proc.pid)
    assert process is not None
    proc.wait()
    assert not hostproc.alive(process)
    assert not hostproc.kill(process)


def test_records_parse_strictly() -> None:
    assert ProcessRef.from_record({"pid": 5, "start_time": 7}) == ProcessRef(5, 7)
    for bad in (
        None,
        5,
        {"pid": 5},
        {"pid": True, "start_time": 1},
        {"pid": -1, "start_time": 1},
        {"pid": "1", "start_time": 0},
    ):
        assert ProcessRef.from_record(bad) is None
    assert ProcessRef(5, 7).to_record() == {"pid": 5, "start_time": 7}


def test_a_create_whose_creator_cannot_be_read_was_killed(tmp_path: Path) -> None:
    """vc-runtime's record of a create: a creator that is no process is no create under way."""
    Record("c", "c", "/bundle", "/bundle/rootfs", "now", owns_pod=True).save(tmp_path)
    state = Record.path(tmp_path, "c")
    record = json.loads(state.read_text())
    record["creator"] = {"pid": "1", "start_time": 0}
    state.write_text(json.dumps(record))
    assert Record.load(tmp_path, "c").abandoned()
    record["creator"] = hostproc.current().to_record()
    state.write_text(json.dumps(record))
    assert not Record.load(tmp_path, "c").abandoned()


def test_a_stale_vm_pid_never_kills_an_unrelated_process(
    run_root: Path, impostor: subprocess.Popen[bytes]
) -> None:
    """A pod whose daemon died, whose recorded VM pid now belongs to another process."""
    api.create_pod(PodConfig(id="stale", hypervisor="mock"))
    state = run_root / "pods" / "stale" / "state.json"
    record = json.loads(state.read_text())
    process = hostproc.of(impostor.pid)
    assert process is not None
    record["state"] = PodState.RUNNING.value
    record["daemon"] = {"pid": impostor.pid, "start_time": process.start_time + 1}
    record["vm"] = {"pid": impostor.pid, "start_time": process.start_time + 1}
    state.write_text(json.dumps(record))
    assert api.pod_status("stale").state is PodState.STOPPED
    assert impostor.poll() is None, "an unrelated process was killed"
