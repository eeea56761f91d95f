"""Races and hangs around a pod's daemon, with the real daemon and the mock VM."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod
from tests.unit.test_api_mock import read_all
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import BusyError, DaemonError, StateError
from virtcontainers.host import proc as hostproc
from virtcontainers.states import ContainerState, PodState
from virtcontainers.store import Store


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_held_pod_is_busy_and_says_so(run_root: Path, image: ImagePaths) -> None:
    api.create_pod(mock_pod("held", image))
    store = Store()
    with (
        store.locked("held", "stop"),
        pytest.raises(BusyError) as caught,
        store.locked("held", "delete", timeout=0.2),
    ):
        pass
    assert caught.value.pod_id == "held" and "cannot delete pod 'held'" in str(caught.value)


def test_a_hung_daemon_is_stopped_by_force(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    container = ContainerConfig("c", rootfs, Cmd(("sleep",)))
    status = api.run_pod(mock_pod("hung", image, container))
    assert status.daemon_pid is not None
    daemon = hostproc.of(status.daemon_pid)
    assert daemon is not None
    os.kill(status.daemon_pid, signal.SIGSTOP)
    try:
        stopped = api.stop_pod("hung", force=True)
    finally:
        hostproc.kill(daemon, signal.SIGCONT)
    assert stopped.state is PodState.STOPPED
    assert stopped.containers[0].state is ContainerState.STOPPED
    assert stopped.containers[0].exit_code == 137
    assert not hostproc.alive(daemon)
    api.delete_pod("hung")
    assert api.list_pods() == []


def test_delete_by_force_stops_first(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    api.run_pod(mock_pod("running", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    with pytest.raises(StateError, match="it is running"):
        api.delete_pod("running")
    api.delete_pod("running", force=True)
    assert api.list_pods() == []


def test_a_pod_dies_with_its_owner(run_root: Path, image: ImagePaths, rootfs: Path) -> None:
    """``virtc run --rm`` killed: the daemon stops and deletes a pod whose owner is gone."""
    owner_pid = os.fork()
    if owner_pid == 0:
        # The child must never return into pytest, whatever handler it inherited.
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(600)
        finally:
            os._exit(0)
    try:
        owner = hostproc.of(owner_pid)
        assert owner is not None
        api.run_pod(
            mock_pod("owned", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))), owner=owner
        )
        assert api.pod_status("owned").state is PodState.RUNNING
    finally:
        os.kill(owner_pid, signal.SIGKILL)
        os.waitpid(owner_pid, 0)
    wait_for(lambda: api.list_pods() == [])
    assert not (run_root / "pods" / "owned").exists()


def test_a_start_whose_caller_went_away_ends_stopped(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    """Nobody heard the pod start: it is stopped, not left running unseen."""
    api.create_pod(mock_pod("orphan", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    starter = os.fork()
    if starter == 0:
        # Give up at once: gone before the daemon reports ready.
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            api.start_pod("orphan", timeout=0.01)
        finally:
            os._exit(0)
    os.waitpid(starter, 0)
    wait_for(lambda: api.pod_status("orphan").state is PodState.STOPPED)
    status = api.pod_status("orphan")
    assert status.error is not None and "went away before it was running" in status.error
    wait_for(lambda: api.pod_status("orphan").daemon_pid is None)
    api.delete_pod("orphan")


def test_stuck_readers_hold_up_only_their_own_output(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    """Seventy execs whose readers never read; every other exec keeps its output."""
    api.run_pod(mock_pod("stuck", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    stuck = []
    for _ in range(70):
        read_end, write_end = os.pipe()
        api.enter_container(
            "stuck", "c", Cmd(("spew", str(256 << 10))), api.Stdio(stdout=write_end)
        )
        os.close(write_end)
        stuck.append(read_end)
    try:
        read_end, write_end = os.pipe()
        handle = api.enter_container(
            "stuck", "c", Cmd(("echo", "still", "moving")), api.Stdio(stdout=write_end)
        )
        os.close(write_end)
        assert read_all(read_end) == b"still moving\n"
        assert api.wait_process("stuck", "c", handle.exec_id, timeout=60).exit_code == 0
        for fd in stuck:  # late readers get all of it: nothing was dropped
            assert len(read_all(fd)) == 256 << 10
    finally:
        for fd in stuck:
            with contextlib.suppress(OSError):
                os.close(fd)
    api.stop_pod("stuck")


def test_large_requests_go_through_and_too_large_ones_are_refused_first(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    """A request of a few hundred KB once hung on a partial send of its fds."""
    api.run_pod(mock_pod("big", image))
    read_end, write_end = os.pipe()
    large = ContainerConfig("large", rootfs, Cmd(("echo", "ok")), annotations={"k": "x" * 300_000})
    api.create_container("big", large, api.Stdio(stdout=write_end))
    os.close(write_end)
    api.start_container("big", "large")
    assert read_all(read_end) == b"ok\n"
    huge = ContainerConfig("huge", rootfs, Cmd(("echo",)), annotations={"k": "x" * (5 << 20)})
    with pytest.raises(DaemonError, match="too large"):
        api.create_container("big", huge)
    assert api.pod_status("big").state is PodState.RUNNING
    api.stop_pod("big")
