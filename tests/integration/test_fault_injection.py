"""Fault injection with real VMs: the daemon or QEMU killed or stopped while a
call is under way, and the caller killed mid-call.

Each case checks that the call ends (with success or a clear error, never a
hang), that the pod is then in a state that says what happened, and that a
forced stop and a delete leave nothing behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import qemu_pids
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.errors import NotFoundError, VcError
from virtcontainers.host import proc as hostproc
from virtcontainers.states import PodState
from virtcontainers.storage import mounts

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]
POD = "fault"


def pid_of(victim: str) -> int:
    status = api.pod_status(POD)
    pid = status.daemon_pid if victim == "daemon" else status.vm_pid
    assert pid is not None, f"no {victim} pid"
    return pid


def call_in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except VcError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


def operation(point: str, rootfs: Path) -> Callable[[], object]:
    config = ContainerConfig("late", rootfs, Cmd(("sleep", "300")), writable_layer=True)
    if point == "create":
        return lambda: api.create_container(POD, config)
    if point == "exec":
        return lambda: api.wait_process(
            POD, "c", api.enter_container(POD, "c", Cmd(("sleep", "2"))).exec_id
        )
    return lambda: api.stop_pod(POD)


def settle_and_clean(root: Path) -> None:
    """Whatever happened, the pod can be stopped by force and deleted: nothing stays."""
    status = api.pod_status(POD)
    assert status.state in (PodState.CREATED, PodState.RUNNING, PodState.STOPPED), status
    if status.error is not None:  # what happened is said in plain words
        assert any(word in status.error for word in ("VM", "daemon", "caller")), status.error
    api.delete_pod(POD, force=True)
    with pytest.raises(NotFoundError):
        api.pod_status(POD)
    assert not qemu_pids(root)
    assert not mounts.mounts_under(root)


@pytest.mark.parametrize("point", ["create", "exec", "stop"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSTOP], ids=["KILL", "STOP"])
@pytest.mark.parametrize("victim", ["daemon", "qemu"])
def test_a_pod_process_faulted_during_a_call(
    no_leaks: Path, busybox_rootfs: Path, victim: str, signum: int, point: str
) -> None:
    container = ContainerConfig("c", busybox_rootfs, Cmd(("sleep", "300")), writable_layer=True)
    api.run_pod(PodConfig(id=POD, containers=(container,)))
    process = hostproc.of(pid_of(victim))
    assert process is not None
    thread, _failures = call_in_thread(operation(point, busybox_rootfs))
    hostproc.kill(process, signum)
    try:
        if signum == signal.SIGSTOP:
            time.sleep(1)  # let the call run into the stopped process
            status = api.stop_pod(POD, force=True)  # what a user does with a hung pod
            assert status.state is PodState.STOPPED
        thread.join(timeout=180)
        assert not thread.is_alive(), "the call hung"
    finally:
        hostproc.kill(process, signal.SIGCONT)
    settle_and_clean(no_leaks)


@pytest.mark.parametrize("point", ["start", "create", "exec", "stop", "delete"])
def test_the_caller_killed_mid_call(no_leaks: Path, busybox_rootfs: Path, point: str) -> None:
    api.create_pod(PodConfig(id=POD))
    if point != "start":
        api.start_pod(POD)
    if point == "exec":
        container = ContainerConfig("c", busybox_rootfs, Cmd(("sleep", "300")), writable_layer=True)
        api.create_container(POD, container)
        api.start_container(POD, "c")
    if point == "delete":
        api.stop_pod(POD)
    late = f"ContainerConfig('late', Path({str(busybox_rootfs)!r}), Cmd(('sleep', '300')))"
    calls = {
        "start": f"api.start_pod({POD!r})",
        "create": f"api.create_container({POD!r}, {late})",
        "exec": f"api.enter_container({POD!r}, 'c', Cmd(('sleep', '100')))",
        "stop": f"api.stop_pod({POD!r})",
        "delete": f"api.delete_pod({POD!r})",
    }
    code = (
        "from pathlib import Path\n"
        "from virtcontainers import api\n"
        "from virtcontainers.config import Cmd, ContainerConfig\n" + calls[point]
    )
    caller = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)  # mid-call: Python is up, the request is under way
    caller.kill()
    caller.wait()
    if point == "delete":
        try:
            status = api.pod_status(POD)
        except NotFoundError:
            return  # the delete finished first
        assert status.state is PodState.STOPPED
    if point == "start":
        # Nobody heard the pod start: its daemon stops it once it runs, and exits.
        deadline = time.monotonic() + 180
        while (status := api.pod_status(POD)).daemon_pid is not None or status.state in (
            PodState.STARTING,
            PodState.RUNNING,
        ):
            assert time.monotonic() < deadline, f"an unheard start stayed: {status}"
            time.sleep(0.2)
        assert api.pod_status(POD).state in (PodState.CREATED, PodState.STOPPED)
    settle_and_clean(no_leaks)
