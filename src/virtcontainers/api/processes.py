"""The API's processes: exec into a container or the VM, signal, wait, attach, resize."""

from __future__ import annotations

import signal

from virtcontainers.agent.results import ExitStatus, ProcessInfo
from virtcontainers.api.common import live_call, pod_store
from virtcontainers.config import Cmd
from virtcontainers.daemon import calls
from virtcontainers.daemon.client import LIVE, call_daemon, reconcile
from virtcontainers.errors import NotFoundError
from virtcontainers.status import ProcessHandle
from virtcontainers.stdio import Stdio


def enter_container(
    pod_id: str,
    container_id: str,
    cmd: Cmd,
    stdio: Stdio | None = None,
    exec_id: str | None = None,
) -> ProcessHandle:
    """Start ``cmd`` in a running container (exec); returns at once."""
    started = live_call(pod_id, calls.ExecProcess(container_id, cmd, exec_id), stdio)
    return ProcessHandle(pod_id, container_id, started.exec_id, started.pid)


def enter_pod(pod_id: str, cmd: Cmd, stdio: Stdio | None = None) -> ProcessHandle:
    """Start ``cmd`` in the pod's VM, outside every container; returns at once.

    Wait for it with ``wait_process(pod_id, None, handle.exec_id)``.
    """
    started = live_call(pod_id, calls.EnterPod(cmd), stdio)
    return ProcessHandle(pod_id, None, started.exec_id, started.pid)


def signal_process(
    pod_id: str,
    container_id: str | None,
    exec_id: str | None,
    signum: int = signal.SIGTERM,
    all_processes: bool = False,
) -> None:
    request = calls.SignalProcess(container_id, exec_id, int(signum), all_processes)
    live_call(pod_id, request)


def kill_container(
    pod_id: str, container_id: str, signum: int = signal.SIGTERM, all_processes: bool = False
) -> None:
    signal_process(pod_id, container_id, None, signum, all_processes)


def wait_process(
    pod_id: str, container_id: str | None, exec_id: str | None, timeout: float | None = None
) -> ExitStatus:
    """Block until the process exits; exit_code is 128+N after signal N."""
    store = pod_store()
    record = reconcile(store, pod_id)
    if record.state not in LIVE and exec_id is None and container_id is not None:
        entry = record.containers.get(container_id)
        if entry is None:
            raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
        if entry.exit is not None:
            return entry.exit
    return call_daemon(store, record, calls.WaitProcess(container_id, exec_id), timeout=timeout)


def wait_container(pod_id: str, container_id: str, timeout: float | None = None) -> ExitStatus:
    return wait_process(pod_id, container_id, None, timeout)


def attach_process(
    pod_id: str, container_id: str | None, exec_id: str | None, stdio: Stdio
) -> None:
    """Copy a running process's output to ``stdio.stdout``/``stdio.stderr`` from now on.

    Returns at once; the fds see end-of-file when the process's output ends.
    Earlier output is not replayed (a container without stdio keeps it in its
    log), and stdin cannot be attached: it is given at create or exec time.
    After a reattach, output the guest held for a process whose caller's fds
    died with the old daemon goes to the first caller that attaches.
    """
    outputs = Stdio(stdout=stdio.stdout, stderr=stdio.stderr)
    live_call(pod_id, calls.AttachProcess(container_id, exec_id), outputs)


def attach_container(pod_id: str, container_id: str, stdio: Stdio) -> None:
    attach_process(pod_id, container_id, None, stdio)


def resize_terminal(
    pod_id: str, container_id: str | None, exec_id: str | None, rows: int, cols: int
) -> None:
    live_call(pod_id, calls.ResizeTerminal(container_id, exec_id, rows, cols))


def list_processes(pod_id: str, container_id: str) -> list[ProcessInfo]:
    return live_call(pod_id, calls.ListProcesses(container_id))
