"""The public API: pods and containers.

Every function is synchronous and thin: validate, locate the pod, act
(directly on the store while the pod has no VM, through the pod's daemon
while it runs), answer.  Any process on the host may call any function for
any pod.  Errors are :class:`~virtcontainers.errors.VcError` subclasses.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtcontainers import hostproc, mounts, rpc
from virtcontainers.agent.base import ExitStatus
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, validate_id
from virtcontainers.errors import (
    DaemonError,
    ExistsError,
    NotFoundError,
    StateError,
    VcError,
)
from virtcontainers.process import Stdio
from virtcontainers.shareddir import SharedDir
from virtcontainers.states import ContainerState, PodState
from virtcontainers.store import PodPaths, Store

__all__ = [
    "ContainerStatus",
    "ExitStatus",
    "PodStatus",
    "ProcessHandle",
    "Stdio",
    "attach_container",
    "attach_process",
    "container_status",
    "create_container",
    "create_pod",
    "delete_container",
    "delete_pod",
    "enter_container",
    "enter_pod",
    "kill_container",
    "list_pods",
    "list_processes",
    "package_env",
    "pause_container",
    "pause_pod",
    "pod_status",
    "resize_terminal",
    "resume_container",
    "resume_pod",
    "run_pod",
    "signal_process",
    "start_container",
    "start_pod",
    "stop_container",
    "stop_pod",
    "wait_container",
    "wait_process",
]

START_TIMEOUT = 300.0
STOP_TIMEOUT = 120.0
LIVE = (PodState.RUNNING.value, PodState.PAUSED.value)


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    state: ContainerState
    pid: int | None
    exit_code: int | None
    signal: int | None
    oom_killed: bool
    rootfs: Path

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ContainerStatus:
        return cls(
            id=record["config"]["id"],
            state=ContainerState(record["state"]),
            pid=record.get("pid"),
            exit_code=record.get("exit_code"),
            signal=record.get("signal"),
            oom_killed=bool(record.get("oom_killed")),
            rootfs=Path(record["config"]["rootfs"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "rootfs": str(self.rootfs),
        }


@dataclass(frozen=True)
class PodStatus:
    id: str
    state: PodState
    containers: tuple[ContainerStatus, ...]
    hypervisor: str
    vm_pid: int | None
    daemon_pid: int | None
    error: str | None
    guest: dict[str, Any] | None
    created_at: float

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PodStatus:
        return cls(
            id=record["config"]["id"],
            state=PodState(record["state"]),
            containers=tuple(ContainerStatus.from_record(c) for c in record["containers"].values()),
            hypervisor=record["config"]["hypervisor"],
            vm_pid=_pid_of(record.get("vm")),
            daemon_pid=_pid_of(record.get("daemon")),
            error=record.get("error"),
            guest=record.get("guest"),
            created_at=float(record.get("created_at", 0.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "hypervisor": self.hypervisor,
            "containers": [c.to_dict() for c in self.containers],
            "vm_pid": self.vm_pid,
            "daemon_pid": self.daemon_pid,
            "error": self.error,
            "guest": self.guest,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class ProcessHandle:
    pod_id: str
    container_id: str | None  # None: a process in the VM, outside containers
    exec_id: str
    pid: int


def _pid_of(process: object) -> int | None:
    ref = hostproc.ProcessRef.from_record(process)
    return ref.pid if ref is not None else None


# --- helpers -----------------------------------------------------------------------------


def _store() -> Store:
    return Store()


def _reconcile(store: Store, pod_id: str) -> dict[str, Any]:
    """Load a pod's record; if its daemon died, clean up and mark it stopped."""
    record = store.load(pod_id)
    if record["state"] in LIVE and not hostproc.alive(record.get("daemon")):
        paths = store.paths(pod_id)
        hostproc.kill(record.get("vm"))
        _clean_run_files(paths)
        record["state"] = PodState.STOPPED.value
        record["error"] = record.get("error") or "the pod daemon exited unexpectedly"
        record["daemon"] = None
        record["vm"] = None
        for container in record["containers"].values():
            if container["state"] != ContainerState.CREATED.value:
                container["state"] = ContainerState.STOPPED.value
        store.save(pod_id, record)
    return record


def _clean_run_files(paths: PodPaths) -> None:
    """What a pod's daemon leaves when it dies: mounts, VM sockets, its socket."""
    SharedDir(paths).detach()
    shutil.rmtree(paths.vm, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()


def _live_call(
    pod_id: str,
    method: str,
    params: dict[str, Any],
    stdio: Stdio | None = None,
    timeout: float | None = 60.0,
) -> Any:
    """Call the daemon of a running pod."""
    store = _store()
    return _call_daemon(store, _reconcile(store, pod_id), method, params, stdio, timeout)


def _call_daemon(
    store: Store,
    record: dict[str, Any],
    method: str,
    params: dict[str, Any],
    stdio: Stdio | None = None,
    timeout: float | None = 60.0,
) -> Any:
    """Call the daemon of the pod whose (reconciled) record this is."""
    pod_id = record["config"]["id"]
    if record["state"] not in LIVE:
        raise StateError(f"pod {pod_id!r}", method, record["state"], list(LIVE))
    names: list[str] = []
    fds: list[int] = []
    if stdio is not None:
        for name in ("stdin", "stdout", "stderr"):
            fd = getattr(stdio, name)
            if fd is not None:
                names.append(name)
                fds.append(fd)
    return rpc.call(
        store.paths(pod_id).socket, method, {**params, "stdio": names}, fds, timeout=timeout
    )


# --- pods ----------------------------------------------------------------------------------


def create_pod(config: PodConfig) -> PodStatus:
    """Record a pod (its VM is not started).  Raises ExistsError if the id is taken."""
    store = _store()
    try:
        store.create_dir(config.id)
    except FileExistsError:
        raise ExistsError("pod", config.id) from None
    containers = {
        c.id: {"config": c.to_dict(), "state": ContainerState.CREATED.value}
        for c in config.containers
    }
    # From here on record["containers"] is the authority on the pod's containers;
    # record["config"] keeps the pod's config as it was created.
    record = {
        "config": config.to_dict(),
        "state": PodState.CREATED.value,
        "containers": containers,
        "created_at": time.time(),
        "daemon": None,
        "vm": None,
        "error": None,
    }
    try:
        store.save(config.id, record)
    except BaseException:
        shutil.rmtree(store.paths(config.id).root, ignore_errors=True)
        raise
    return PodStatus.from_record(store.load(config.id))


def start_pod(pod_id: str, timeout: float = START_TIMEOUT) -> PodStatus:
    """Boot the pod's VM and start its containers; returns when they run."""
    store = _store()
    with store.locked(pod_id) as paths:
        record = _reconcile(store, pod_id)
        PodState(record["state"]).check_transition(pod_id, PodState.RUNNING)
        _spawn_daemon(store, paths, pod_id, timeout)
    return pod_status(pod_id)


def package_env() -> dict[str, str]:
    """Our environment, with this package importable by a child Python (the pod
    daemon, vc-runtime's shim) even when that child runs without site-packages."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _spawn_daemon(store: Store, paths: PodPaths, pod_id: str, timeout: float) -> None:
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "virtcontainers.daemon", "--detach", "--root", str(store.root)]
    argv += ["--pod", pod_id, "--ready-fd", str(write_end)]
    if os.environ.get("VC_DEBUG"):
        argv.append("--debug")
    with open(paths.log, "ab") as log:
        launcher = subprocess.Popen(
            argv,
            pass_fds=[write_end],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            env=package_env(),
        )
    os.close(write_end)
    try:
        launcher.wait()
        answer = _read_ready(read_end, timeout)
    finally:
        os.close(read_end)
    if answer is None:
        tail = _tail(paths.log)
        raise DaemonError(f"pod {pod_id!r}: the daemon died while starting\n{tail}")
    if answer.get("ok") is not True:
        raise rpc.error_from_dict(answer.get("error"))


def _read_ready(fd: int, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DaemonError(f"the pod daemon did not report ready within {timeout:.0f}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            data += chunk
    message = json.loads(data.split(b"\n", 1)[0])
    return message if isinstance(message, dict) else None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_pod(pod_id: str, timeout: float = STOP_TIMEOUT) -> PodStatus:
    """Stop the VM (its containers end with it); the pod can be started again."""
    store = _store()
    with store.locked(pod_id):
        record = _reconcile(store, pod_id)
        state = PodState(record["state"])
        if state is PodState.CREATED:
            state.check_transition(pod_id, PodState.STOPPED)
            record["state"] = PodState.STOPPED.value
            store.save(pod_id, record)
        else:
            state.require(pod_id, "stop", PodState.RUNNING, PodState.PAUSED)
            daemon = record.get("daemon")
            rpc.call(store.paths(pod_id).socket, "stop", {}, timeout=timeout)
            _wait_gone(daemon, pod_id, timeout)
    return pod_status(pod_id)


def _wait_gone(daemon: object, pod_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while hostproc.alive(daemon):
        if time.monotonic() > deadline:
            raise DaemonError(
                f"pod {pod_id!r}: daemon {_pid_of(daemon)} did not exit after stopping"
            )
        time.sleep(0.02)


def delete_pod(pod_id: str) -> None:
    """Remove a pod that is not running, and everything it left on the host."""
    store = _store()
    with store.locked(pod_id) as paths:
        record = _reconcile(store, pod_id)
        PodState(record["state"]).require(pod_id, "delete", PodState.CREATED, PodState.STOPPED)
        _clean_run_files(paths)
        SharedDir(paths).remove()
        left = mounts.mounts_under(paths.root)
        if left:
            raise VcError(
                f"pod {pod_id!r}: not deleted, {', '.join(map(str, left))} still mounted "
                "under its directory; unmount them and delete again"
            )
        shutil.rmtree(paths.root)


def run_pod(config: PodConfig, timeout: float = START_TIMEOUT) -> PodStatus:
    """Create and start a pod; if starting fails the pod is deleted again."""
    create_pod(config)
    try:
        return start_pod(config.id, timeout)
    except BaseException:
        with contextlib.suppress(VcError):
            delete_pod(config.id)
        raise


def list_pods() -> list[PodStatus]:
    """Every pod on this host, made by any process."""
    store = _store()
    pods = []
    for pod_id in store.pod_ids():
        with contextlib.suppress(NotFoundError):
            pods.append(PodStatus.from_record(_reconcile(store, pod_id)))
    return pods


def pod_status(pod_id: str) -> PodStatus:
    return PodStatus.from_record(_reconcile(_store(), validate_id("pod", pod_id)))


def pause_pod(pod_id: str) -> None:
    _live_call(pod_id, "pause", {})


def resume_pod(pod_id: str) -> None:
    _live_call(pod_id, "resume", {})


# --- containers ------------------------------------------------------------------------------


def create_container(
    pod_id: str, config: ContainerConfig, stdio: Stdio | None = None
) -> ContainerStatus:
    """Add a container; in a running pod it is created in the VM at once.

    ``stdio`` fds become the container process's stdin/stdout/stderr (the
    daemon keeps duplicates; the caller may close its own).  Without them,
    output goes to the pod's ``logs/<container>.log``.
    """
    store = _store()
    with store.locked(pod_id):
        record = _reconcile(store, pod_id)
        if record["state"] not in LIVE:  # no VM: the record is ours to edit
            if config.id in record["containers"]:
                raise ExistsError("container", config.id)
            if stdio is not None:
                raise StateError(
                    f"pod {pod_id!r}", "attach stdio to a container in", record["state"], list(LIVE)
                )
            entry = {"config": config.to_dict(), "state": ContainerState.CREATED.value}
            record["containers"][config.id] = entry
            store.save(pod_id, record)
            return ContainerStatus.from_record(entry)
    params = {"config": config.to_dict()}
    result = _call_daemon(store, record, "create_container", params, stdio, START_TIMEOUT)
    return ContainerStatus.from_record(result)


def delete_container(pod_id: str, container_id: str) -> None:
    """Remove a container that is not running."""
    validate_id("container", container_id)
    store = _store()
    with store.locked(pod_id):
        record = _reconcile(store, pod_id)
        if record["state"] not in LIVE:  # no VM: the record is ours to edit
            entry = record["containers"].get(container_id)
            if entry is None:
                raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
            ContainerState(entry["state"]).require(
                container_id, "delete", ContainerState.CREATED, ContainerState.STOPPED
            )
            del record["containers"][container_id]
            store.save(pod_id, record)
            SharedDir(store.paths(pod_id)).remove_layer(container_id)
            return
    _call_daemon(store, record, "delete_container", {"container_id": container_id})


def start_container(pod_id: str, container_id: str) -> None:
    _live_call(pod_id, "start_container", {"container_id": container_id})


def stop_container(pod_id: str, container_id: str, timeout: int = 10) -> None:
    """SIGTERM the container, SIGKILL after ``timeout`` seconds."""
    _live_call(
        pod_id,
        "stop_container",
        {"container_id": container_id, "timeout": timeout},
        timeout=timeout + 60.0,
    )


def container_status(pod_id: str, container_id: str) -> ContainerStatus:
    validate_id("container", container_id)
    record = _reconcile(_store(), pod_id)
    entry = record["containers"].get(container_id)
    if entry is None:
        raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
    return ContainerStatus.from_record(entry)


def pause_container(pod_id: str, container_id: str) -> None:
    _live_call(pod_id, "pause_container", {"container_id": container_id})


def resume_container(pod_id: str, container_id: str) -> None:
    _live_call(pod_id, "resume_container", {"container_id": container_id})


def enter_container(
    pod_id: str,
    container_id: str,
    cmd: Cmd,
    stdio: Stdio | None = None,
    exec_id: str | None = None,
) -> ProcessHandle:
    """Start ``cmd`` in a running container (exec); returns at once."""
    params = {"container_id": container_id, "cmd": cmd.to_dict(), "exec_id": exec_id}
    result = _live_call(pod_id, "exec", params, stdio)
    return ProcessHandle(pod_id, container_id, result["exec_id"], result["pid"])


def enter_pod(pod_id: str, cmd: Cmd, stdio: Stdio | None = None) -> ProcessHandle:
    """Start ``cmd`` in the pod's VM, outside every container; returns at once.

    Wait for it with ``wait_process(pod_id, None, handle.exec_id)``.
    """
    result = _live_call(pod_id, "enter_pod", {"cmd": cmd.to_dict()}, stdio)
    return ProcessHandle(pod_id, None, result["exec_id"], result["pid"])


def signal_process(
    pod_id: str,
    container_id: str | None,
    exec_id: str | None,
    signum: int = signal.SIGTERM,
    all_processes: bool = False,
) -> None:
    params = {"container_id": container_id, "exec_id": exec_id, "signal": int(signum)}
    _live_call(pod_id, "kill", {**params, "all": all_processes})


def kill_container(
    pod_id: str, container_id: str, signum: int = signal.SIGTERM, all_processes: bool = False
) -> None:
    signal_process(pod_id, container_id, None, signum, all_processes)


def wait_process(
    pod_id: str, container_id: str | None, exec_id: str | None, timeout: float | None = None
) -> ExitStatus:
    """Block until the process exits; exit_code is 128+N after signal N."""
    store = _store()
    record = _reconcile(store, pod_id)
    if record["state"] not in LIVE and exec_id is None and container_id is not None:
        entry = record["containers"].get(container_id)
        if entry is None:
            raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
        if entry.get("exit_code") is not None:
            return ExitStatus(entry["exit_code"], entry.get("signal"))
    params = {"container_id": container_id, "exec_id": exec_id}
    result = _call_daemon(store, record, "wait", params, timeout=timeout)
    return ExitStatus(result["exit_code"], result["signal"])


def wait_container(pod_id: str, container_id: str, timeout: float | None = None) -> ExitStatus:
    return wait_process(pod_id, container_id, None, timeout)


def attach_process(
    pod_id: str, container_id: str | None, exec_id: str | None, stdio: Stdio
) -> None:
    """Copy a running process's output to ``stdio.stdout``/``stdio.stderr`` from now on.

    Returns at once; the fds see end-of-file when the process's output ends.
    Earlier output is not replayed (a container without stdio keeps it in its
    log), and stdin cannot be attached: it is given at create or exec time.
    """
    params = {"container_id": container_id, "exec_id": exec_id}
    _live_call(pod_id, "attach", params, Stdio(stdout=stdio.stdout, stderr=stdio.stderr))


def attach_container(pod_id: str, container_id: str, stdio: Stdio) -> None:
    attach_process(pod_id, container_id, None, stdio)


def resize_terminal(
    pod_id: str, container_id: str | None, exec_id: str | None, rows: int, cols: int
) -> None:
    params = {"container_id": container_id, "exec_id": exec_id, "rows": rows, "cols": cols}
    _live_call(pod_id, "resize", params)


def list_processes(pod_id: str, container_id: str) -> list[dict[str, Any]]:
    result = _live_call(pod_id, "ps", {"container_id": container_id})
    return list(result)
