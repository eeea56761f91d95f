"""The reattach decision: a pod whose daemon died is given a new daemon that
takes over its VM when that can be, and is cleaned up, saying why, when not."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.daemon import calls, client
from virtcontainers.host import orphans
from virtcontainers.host import proc as hostproc
from virtcontainers.records import PodRecord, ProcessRef
from virtcontainers.states import ContainerState, PodState
from virtcontainers.store import Store
from virtcontainers.volumes import BlockVolume


def dead_process() -> ProcessRef:
    child = subprocess.Popen(["true"])
    ref = hostproc.of(child.pid)
    child.wait()
    assert ref is not None and not hostproc.alive(ref)
    return ref


def orphan(pod_id: str, image: ImagePaths, rootfs: Path, vm: ProcessRef | None) -> PodRecord:
    """A pod recorded running, whose daemon is dead and whose VM is ``vm``."""
    api.create_pod(mock_pod(pod_id, image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    store = Store()
    record = store.load(pod_id)
    record.state = PodState.RUNNING
    record.containers["c"].state = ContainerState.RUNNING
    record.daemon = dead_process()
    record.vm = vm
    store.save(record)
    return record


def test_a_pod_whose_vm_lives_can_be_reattached_unless_a_part_cannot_be(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    vm = subprocess.Popen(["sleep", "600"])
    try:
        record = orphan("live", image, rootfs, hostproc.of(vm.pid))
        check_what_rules_a_reattach_out(record, rootfs)
    finally:
        vm.kill()
        vm.wait()


def check_what_rules_a_reattach_out(record: PodRecord, rootfs: Path) -> None:
    assert orphans.orphaned(record)
    assert orphans.cannot_reattach(record) is None
    hosted = replace(record, daemon_hosted=True)
    assert "hosted" in (orphans.cannot_reattach(hosted) or "")
    networked = replace(record, config=replace(record.config, netns="/run/netns/x"))
    assert orphans.cannot_reattach(networked) is None  # its NICs are in the record
    volume = BlockVolume(rootfs / "disk.img", "/data")
    entry = record.containers["c"]
    with_volume = replace(entry, config=replace(entry.config, block_volumes=(volume,)))
    assert orphans.cannot_reattach(replace(record, containers={"c": with_volume})) is None
    assert "gone too" in (orphans.cannot_reattach(replace(record, vm=dead_process())) or "")
    assert "gone too" in (orphans.cannot_reattach(replace(record, vm=None)) or "")


def test_a_pod_whose_vm_is_gone_is_cleaned_up_and_says_why(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    orphan("gone", image, rootfs, dead_process())
    status = api.pod_status("gone")
    assert status.state is PodState.STOPPED
    assert status.error is not None
    assert "daemon exited unexpectedly" in status.error and "VM is gone too" in status.error
    assert api.container_status("gone", "c").exit_code == 137
    api.delete_pod("gone")


def test_a_vm_a_new_daemon_cannot_take_over_is_killed_and_the_pod_says_why(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    """A real reattach daemon is started; a mock VM cannot be adopted, so it
    kills the "VM" through its ProcessRef and records why."""
    vm = subprocess.Popen(["sleep", "600"])
    try:
        ref = hostproc.of(vm.pid)
        orphan("stuck", image, rootfs, ref)
        status = api.pod_status("stuck")
        assert status.state is PodState.STOPPED
        assert status.error is not None and "could not reattach" in status.error
        assert "does not outlive its daemon" in status.error
        assert vm.wait(timeout=30) == -9
        assert status.daemon_pid is None
    finally:
        vm.kill()
        vm.wait()
    api.delete_pod("stuck")


def test_a_call_that_lost_its_daemon_under_the_pods_lock_does_not_wait_for_itself(
    run_root: Path, image: ImagePaths, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graceful stop holds the pod's lock; when a forced stop kills its daemon
    while the VM still lives, the stop's error path must not wait for that lock
    to reattach (it would wait for itself, and the forced stop behind it)."""
    monkeypatch.setattr(client, "REATTACH_TIMEOUT", 3600.0)
    vm = subprocess.Popen(["sleep", "600"])
    try:
        orphan("held", image, rootfs, hostproc.of(vm.pid))
        store = Store()
        with store.locked("held", "stop"):
            checked = threading.Thread(
                target=client._raise_if_stopped_meanwhile,
                args=(store, "held", calls.StopPod()),
                daemon=True,
            )
            checked.start()
            checked.join(timeout=60)
            assert not checked.is_alive(), "the call waited for the lock its caller holds"
        assert vm.poll() is None, "the VM was killed: the next call could not reattach"
        assert store.load("held").state is PodState.RUNNING
    finally:
        vm.kill()
        vm.wait()
    api.delete_pod("held", force=True)
