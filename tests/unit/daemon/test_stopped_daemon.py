"""A pod daemon stopped by a signal: calls say so at once instead of timing out."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import DaemonError
from virtcontainers.host import proc as hostproc


def wait_until_stopped(pid: int) -> None:
    for _ in range(500):
        fields = hostproc.stat_fields(pid)
        if fields is not None and fields[0] in "Tt":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


@pytest.fixture
def daemon(run_root: Path, image: ImagePaths, rootfs: Path) -> Iterator[int]:
    """The daemon of a running pod "frozen", continued and its pod removed after the test."""
    status = api.run_pod(mock_pod("frozen", image, ContainerConfig("c1", rootfs, Cmd(("sleep",)))))
    assert status.daemon_pid is not None
    try:
        yield status.daemon_pid
    finally:
        os.kill(status.daemon_pid, signal.SIGCONT)
        api.delete_pod("frozen", force=True)


def test_a_call_to_a_stopped_daemon_fails_at_once(daemon: int) -> None:
    os.kill(daemon, signal.SIGSTOP)
    wait_until_stopped(daemon)
    expected = f"cannot stop pod 'frozen': its daemon (pid {daemon}) is stopped"
    with pytest.raises(DaemonError, match=re.escape(expected)):
        api.stop_pod("frozen")


def test_a_daemon_stopped_during_a_call_fails_the_call(daemon: int) -> None:
    failures: list[BaseException] = []

    def wait() -> None:
        try:
            api.wait_container("frozen", "c1")
        except BaseException as exc:
            failures.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.5)  # the call is under way: the daemon holds it, the process sleeps
    os.kill(daemon, signal.SIGSTOP)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    [failure] = failures
    assert isinstance(failure, DaemonError)
    assert f"its daemon (pid {daemon}) is stopped" in str(failure)
