"""The whole host stack (API, RPC, daemon, Pod) with the mock hypervisor and agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import ExistsError, NotFoundError, StateError
from virtcontainers.states import ContainerState, PodState


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_pod_lifecycle_and_states(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    config = mock_pod("p1", image, ContainerConfig("c1", rootfs, Cmd(("sleep",))))
    assert api.create_pod(config).state is PodState.CREATED
    with pytest.raises(ExistsError):
        api.create_pod(config)
    status = api.start_pod("p1")
    assert status.state is PodState.RUNNING
    assert status.containers[0].state is ContainerState.RUNNING
    with pytest.raises(StateError, match="it is running, must be created or stopped"):
        api.delete_pod("p1")
    api.pause_pod("p1")
    assert api.pod_status("p1").state is PodState.PAUSED
    api.resume_pod("p1")
    api.stop_pod("p1")
    status = api.pod_status("p1")
    assert status.state is PodState.STOPPED
    assert status.containers[0].exit_code == 137
    assert status.daemon_pid is None
    api.delete_pod("p1")
    with pytest.raises(NotFoundError):
        api.pod_status("p1")


def test_container_output_exit_and_exec(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    api.run_pod(mock_pod("p2", image))
    out_r, out_w = os.pipe()
    api.create_container(
        "p2", ContainerConfig("c1", rootfs, Cmd(("echo", "hello"))), api.Stdio(stdout=out_w)
    )
    os.close(out_w)
    api.start_container("p2", "c1")
    assert read_all(out_r) == b"hello\n"
    assert api.wait_container("p2", "c1").exit_code == 0
    assert api.container_status("p2", "c1").state is ContainerState.STOPPED

    api.create_container("p2", ContainerConfig("c2", rootfs, Cmd(("sleep",))))
    api.start_container("p2", "c2")
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    handle = api.enter_container("p2", "c2", Cmd(("cat",)), api.Stdio(stdin=in_r, stdout=out_w))
    os.close(in_r)
    os.close(out_w)
    os.write(in_w, b"through the agent\n")
    os.close(in_w)
    assert read_all(out_r) == b"through the agent\n"
    assert api.wait_process("p2", "c2", handle.exec_id).exit_code == 0

    api.kill_container("p2", "c2", signal.SIGKILL)
    status = api.wait_container("p2", "c2")
    assert (status.exit_code, status.signal) == (137, 9)
    with pytest.raises(StateError):
        api.kill_container("p2", "c2", signal.SIGKILL)
    api.delete_container("p2", "c2")
    with pytest.raises(NotFoundError):
        api.container_status("p2", "c2")


def test_stop_container_escalates(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    api.run_pod(mock_pod("p3", image, ContainerConfig("c1", rootfs, Cmd(("sleep",)))))
    with pytest.raises(StateError, match="it is running, must be created or stopped"):
        api.delete_container("p3", "c1")
    api.stop_container("p3", "c1", timeout=1)
    status = api.container_status("p3", "c1")
    assert status.state is ContainerState.STOPPED
    assert status.exit_code == 128 + signal.SIGTERM


def test_list_pods_from_another_process(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    api.create_pod(mock_pod("seen", image))
    code = "from virtcontainers import api; print([p.id for p in api.list_pods()])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['seen']"


def test_dead_daemon_is_reconciled(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    status = api.run_pod(mock_pod("p4", image, ContainerConfig("c1", rootfs, Cmd(("sleep",)))))
    assert status.daemon_pid is not None
    os.kill(status.daemon_pid, signal.SIGKILL)
    while api.pod_status("p4").state is PodState.RUNNING:
        pass
    status = api.pod_status("p4")
    assert status.state is PodState.STOPPED
    assert status.error is not None and "daemon" in status.error
    api.delete_pod("p4")


def test_containers_added_before_start(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    api.create_pod(mock_pod("p5", image))
    api.create_container("p5", ContainerConfig("late", rootfs, Cmd(("sleep",))))
    with pytest.raises(ExistsError):
        api.create_container("p5", ContainerConfig("late", rootfs, Cmd(("sleep",))))
    api.start_pod("p5")
    assert api.container_status("p5", "late").state is ContainerState.RUNNING
    processes = api.list_processes("p5", "late")
    assert processes and processes[0].args == ("sleep",)


def test_enter_pod_runs_outside_containers(run_root: Path, image: ImagePaths) -> None:
    api.run_pod(mock_pod("p6", image))
    out_r, out_w = os.pipe()
    handle = api.enter_pod("p6", Cmd(("echo", "in", "the", "vm")), api.Stdio(stdout=out_w))
    os.close(out_w)
    assert handle.container_id is None
    assert read_all(out_r) == b"in the vm\n"
    assert api.wait_process("p6", None, handle.exec_id).exit_code == 0


def test_attach_copies_output_from_then_on(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    api.run_pod(mock_pod("p7", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    in_r, in_w = os.pipe()
    first_r, first_w = os.pipe()
    handle = api.enter_container("p7", "c", Cmd(("cat",)), api.Stdio(stdin=in_r, stdout=first_w))
    os.close(in_r)
    os.close(first_w)
    os.write(in_w, b"before\n")
    assert os.read(first_r, 100) == b"before\n"
    second_r, second_w = os.pipe()
    api.attach_process("p7", "c", handle.exec_id, api.Stdio(stdout=second_w))
    os.close(second_w)
    os.write(in_w, b"after\n")
    os.close(in_w)
    assert read_all(second_r) == b"after\n"
    assert read_all(first_r) == b"after\n"
    assert api.wait_process("p7", "c", handle.exec_id).exit_code == 0
    with pytest.raises(StateError):
        api.attach_process("p7", "c", handle.exec_id, api.Stdio(stdout=1))
