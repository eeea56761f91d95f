"""Calls into a pod whose VM or daemon is frozen name the frozen part, at once."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import pod_with, run_exec, shell
from tests.unit.daemon.test_stopped_daemon import wait_until_stopped
from virtcontainers import api
from virtcontainers.errors import DaemonError, HypervisorError

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def test_exec_into_a_stopped_qemu_names_the_vm(no_leaks: Path, busybox_rootfs: Path) -> None:
    status = api.run_pod(pod_with("icy", busybox_rootfs, c="exec sleep 1000"))
    assert status.vm_pid is not None
    os.kill(status.vm_pid, signal.SIGSTOP)
    try:
        wait_until_stopped(status.vm_pid)
        expected = f"cannot exec in pod 'icy': its VM's process (pid {status.vm_pid}) is stopped"
        with pytest.raises(HypervisorError, match=re.escape(expected)):
            run_exec("icy", "c", shell("true"))
    finally:
        os.kill(status.vm_pid, signal.SIGCONT)
    assert run_exec("icy", "c", shell("echo awake")) == (b"awake\n", b"", 0)
    api.delete_pod("icy", force=True)


def test_stop_of_a_pod_whose_daemon_is_stopped_says_so(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    status = api.run_pod(pod_with("still", busybox_rootfs, c="exec sleep 1000"))
    assert status.daemon_pid is not None
    os.kill(status.daemon_pid, signal.SIGSTOP)
    try:
        wait_until_stopped(status.daemon_pid)
        expected = f"cannot stop pod 'still': its daemon (pid {status.daemon_pid}) is stopped"
        with pytest.raises(DaemonError, match=re.escape(expected)):
            api.stop_pod("still")
    finally:
        os.kill(status.daemon_pid, signal.SIGCONT)
    api.delete_pod("still", force=True)
