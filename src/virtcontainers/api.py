"""The public API: pods and containers.

Every function is synchronous and thin: validate, locate the pod, act
(directly on the store while the pod has no VM, through the pod's daemon
while it runs), answer.  Any process on the host may call any function for
any pod.  Errors are :class:`~virtcontainers.errors.VcError` subclasses.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from virtcontainers import calls, launcher, mounts, rpc
from virtcontainers.agent.base import ExitStatus, GuestDetails, ProcessInfo
from virtcontainers.cleanup import release_run_files
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths, PodConfig, validate_id
from virtcontainers.errors import (
    CorruptRecordError,
    DaemonError,
    ExistsError,
    NotFoundError,
    StateError,
    VcError,
)
from virtcontainers.shareddir import SharedDir
from virtcontainers.states import ContainerState, PodState
from virtcontainers.stdio import Stdio
from virtcontainers.store import ContainerRecord, PodRecord, Store

__all__ = [
    "ContainerStatus",
    "ExitStatus",
    "PodStatus",
    "ProcessHandle",
    "ProcessInfo",
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
    "list_pod_errors",
    "list_pods",
    "list_processes",
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
LIVE = (PodState.RUNNING, PodState.PAUSED)
R = TypeVar("R")


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
    def from_record(cls, record: ContainerRecord) -> ContainerStatus:
        return cls(
            id=record.id,
            state=record.state,
            pid=record.pid,
            exit_code=record.exit.exit_code if record.exit else None,
            signal=record.exit.signal if record.exit else None,
            oom_killed=record.oom_killed,
            rootfs=record.config.rootfs,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value, "rootfs": str(self.rootfs)}


@dataclass(frozen=True)
class PodStatus:
    id: str
    state: PodState
    containers: tuple[ContainerStatus, ...]
    hypervisor: str
    vm_pid: int | None
    daemon_pid: int | None
    error: str | None
    guest: GuestDetails | None
    created_at: float

    @classmethod
    def from_record(cls, record: PodRecord) -> PodStatus:
        return cls(
            id=record.id,
            state=record.state,
            containers=tuple(ContainerStatus.from_record(c) for c in record.containers.values()),
            hypervisor=record.config.hypervisor,
            vm_pid=record.vm.pid if record.vm else None,
            daemon_pid=record.daemon.pid if record.daemon else None,
            error=record.error,
            guest=record.guest,
            created_at=record.created_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "state": self.state.value,
            "containers": [c.to_dict() for c in self.containers],
        }


@dataclass(frozen=True)
class ProcessHandle:
    pod_id: str
    container_id: str | None  # None: a process in the VM, outside containers
    exec_id: str
    pid: int


# --- helpers -----------------------------------------------------------------------------


def _store() -> Store:
    return Store()


def _reconcile(store: Store, pod_id: str) -> PodRecord:
    """Load a pod's record; if its daemon died, clean up and mark it stopped."""
    record = store.load(pod_id)
    if record.state in LIVE and not (record.daemon and record.daemon.alive()):
        if record.vm is not None:
            record.vm.kill()
        release_run_files(store.paths(pod_id))
        record.mark_stopped("the pod daemon exited unexpectedly")
        store.save(record)
    return record


def _live_call(
    pod_id: str,
    request: calls.Request[R],
    stdio: Stdio | None = None,
    timeout: float | None = 60.0,
) -> R:
    """Call the daemon of a running pod."""
    store = _store()
    return _call_daemon(store, _reconcile(store, pod_id), request, stdio, timeout)


def _call_daemon(
    store: Store,
    record: PodRecord,
    request: calls.Request[R],
    stdio: Stdio | None = None,
    timeout: float | None = 60.0,
) -> R:
    """Call the daemon of the pod whose (reconciled) record this is: the only way in."""
    if record.state not in LIVE:
        raise StateError(
            f"pod {record.id!r}", request.METHOD, record.state.value, [s.value for s in LIVE]
        )
    given = stdio.named() if stdio is not None else []
    params = {**request.to_params(), "stdio": [name for name, _fd in given]}
    socket = store.paths(record.id).socket
    data = rpc.call(socket, request.METHOD, params, [fd for _name, fd in given], timeout=timeout)
    return request.decode_result(data)


# --- pods ----------------------------------------------------------------------------------


def create_pod(config: PodConfig) -> PodStatus:
    """Record a pod (its VM is not started).

    Checks what the pod needs of the host (memory, rootfs and mount sources, the
    guest image) once, here.  Raises ExistsError if the id is taken, ConfigError.
    """
    config.check_host()
    image = config.image or _default_image(config)
    store = _store()
    try:
        store.create_dir(config.id)
    except FileExistsError:
        raise ExistsError("pod", config.id) from None
    # From here on record.containers is the authority on the pod's containers;
    # record.config keeps the pod's config as it was created.
    record = PodRecord(
        config=config,
        containers={c.id: ContainerRecord(c) for c in config.containers},
        image=image,
        created_at=time.time(),
    )
    try:
        store.save(record)
    except BaseException:
        shutil.rmtree(store.paths(config.id).root, ignore_errors=True)
        raise
    return PodStatus.from_record(record)


def _default_image(config: PodConfig) -> ImagePaths | None:
    """The built guest image, for a pod that boots one (resolved once, at create)."""
    if config.hypervisor == "mock":
        return None
    from virtcontainers.image import find_image

    found = find_image()
    return ImagePaths(found.kernel, found.initrd, found.rootfs)


def start_pod(pod_id: str, timeout: float = START_TIMEOUT) -> PodStatus:
    """Boot the pod's VM and start its containers; returns when they run."""
    store = _store()
    with store.locked(pod_id) as paths:
        record = _reconcile(store, pod_id)
        record.state.moved_to(pod_id, PodState.RUNNING)
        launcher.spawn(store, paths, pod_id, timeout)
    return pod_status(pod_id)


def stop_pod(pod_id: str, timeout: float = STOP_TIMEOUT) -> PodStatus:
    """Stop the VM (its containers end with it); the pod can be started again."""
    store = _store()
    with store.locked(pod_id):
        record = _reconcile(store, pod_id)
        if record.state is PodState.CREATED:
            record.state = record.state.moved_to(pod_id, PodState.STOPPED)
            store.save(record)
        else:
            record.state.require(pod_id, "stop", *LIVE)
            _call_daemon(store, record, calls.StopPod(), timeout=timeout)
            _wait_gone(record, timeout)
    return pod_status(pod_id)


def _wait_gone(record: PodRecord, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while record.daemon is not None and record.daemon.alive():
        if time.monotonic() > deadline:
            raise DaemonError(
                f"pod {record.id!r}: daemon {record.daemon.pid} did not exit after stopping"
            )
        time.sleep(0.02)


def delete_pod(pod_id: str) -> None:
    """Remove a pod that is not running, and everything it left on the host.

    A pod whose record is corrupt is removed too: its files are all there is.
    """
    store = _store()
    with store.locked(pod_id) as paths:
        try:
            record = _reconcile(store, pod_id)
        except CorruptRecordError:
            release_run_files(paths)
        else:
            record.state.require(pod_id, "delete", PodState.CREATED, PodState.STOPPED)
            release_run_files(paths)
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
    """Every pod on this host, made by any process.  A pod whose record is
    corrupt is left out: :func:`list_pod_errors` names them."""
    return [status for status in _all_pods() if isinstance(status, PodStatus)]


def list_pod_errors() -> list[CorruptRecordError]:
    """The pods whose records cannot be read (delete_pod removes them)."""
    return [error for error in _all_pods() if isinstance(error, CorruptRecordError)]


def _all_pods() -> list[PodStatus | CorruptRecordError]:
    store = _store()
    found: list[PodStatus | CorruptRecordError] = []
    for pod_id in store.pod_ids():
        try:
            found.append(PodStatus.from_record(_reconcile(store, pod_id)))
        except CorruptRecordError as exc:
            found.append(exc)
        except NotFoundError:
            continue  # deleted while we listed
    return found


def pod_status(pod_id: str) -> PodStatus:
    return PodStatus.from_record(_reconcile(_store(), validate_id("pod", pod_id)))


def pause_pod(pod_id: str) -> None:
    _live_call(pod_id, calls.PausePod())


def resume_pod(pod_id: str) -> None:
    _live_call(pod_id, calls.ResumePod())


# --- containers ------------------------------------------------------------------------------


def create_container(
    pod_id: str, config: ContainerConfig, stdio: Stdio | None = None
) -> ContainerStatus:
    """Add a container; in a running pod it is created in the VM at once.

    ``stdio`` fds become the container process's stdin/stdout/stderr (the
    daemon keeps duplicates; the caller may close its own).  Without them,
    output goes to the pod's ``logs/<container>.log``.
    """
    config.check_host()
    store = _store()
    with store.locked(pod_id):
        record = _reconcile(store, pod_id)
        if record.state not in LIVE:  # no VM: the record is ours to edit
            if config.id in record.containers:
                raise ExistsError("container", config.id)
            if stdio is not None:
                raise StateError(
                    f"pod {pod_id!r}",
                    "attach stdio to a container in",
                    record.state.value,
                    [s.value for s in LIVE],
                )
            entry = ContainerRecord(config)
            record.containers[config.id] = entry
            store.save(record)
            return ContainerStatus.from_record(entry)
    request = calls.CreateContainer(config)
    return ContainerStatus.from_record(_call_daemon(store, record, request, stdio, START_TIMEOUT))


def delete_container(pod_id: str, container_id: str) -> None:
    """Remove a container that is not running."""
    validate_id("container", container_id)
    store = _store()
    with store.locked(pod_id) as paths:
        record = _reconcile(store, pod_id)
        if record.state not in LIVE:  # no VM: the record is ours to edit
            entry = record.containers.get(container_id)
            if entry is None:
                raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
            entry.state.require(
                container_id, "delete", ContainerState.CREATED, ContainerState.STOPPED
            )
            del record.containers[container_id]
            store.save(record)
            SharedDir(paths).remove_layer(container_id)
            return
    _call_daemon(store, record, calls.DeleteContainer(container_id))


def start_container(pod_id: str, container_id: str) -> None:
    _live_call(pod_id, calls.StartContainer(container_id))


def stop_container(pod_id: str, container_id: str, timeout: int = 10) -> None:
    """SIGTERM the container, SIGKILL after ``timeout`` seconds."""
    _live_call(pod_id, calls.StopContainer(container_id, timeout), timeout=timeout + 60.0)


def container_status(pod_id: str, container_id: str) -> ContainerStatus:
    validate_id("container", container_id)
    record = _reconcile(_store(), pod_id)
    entry = record.containers.get(container_id)
    if entry is None:
        raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
    return ContainerStatus.from_record(entry)


def pause_container(pod_id: str, container_id: str) -> None:
    _live_call(pod_id, calls.PauseContainer(container_id))


def resume_container(pod_id: str, container_id: str) -> None:
    _live_call(pod_id, calls.ResumeContainer(container_id))


def enter_container(
    pod_id: str,
    container_id: str,
    cmd: Cmd,
    stdio: Stdio | None = None,
    exec_id: str | None = None,
) -> ProcessHandle:
    """Start ``cmd`` in a running container (exec); returns at once."""
    started = _live_call(pod_id, calls.ExecProcess(container_id, cmd, exec_id), stdio)
    return ProcessHandle(pod_id, container_id, started.exec_id, started.pid)


def enter_pod(pod_id: str, cmd: Cmd, stdio: Stdio | None = None) -> ProcessHandle:
    """Start ``cmd`` in the pod's VM, outside every container; returns at once.

    Wait for it with ``wait_process(pod_id, None, handle.exec_id)``.
    """
    started = _live_call(pod_id, calls.EnterPod(cmd), stdio)
    return ProcessHandle(pod_id, None, started.exec_id, started.pid)


def signal_process(
    pod_id: str,
    container_id: str | None,
    exec_id: str | None,
    signum: int = signal.SIGTERM,
    all_processes: bool = False,
) -> None:
    request = calls.SignalProcess(container_id, exec_id, int(signum), all_processes)
    _live_call(pod_id, request)


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
    if record.state not in LIVE and exec_id is None and container_id is not None:
        entry = record.containers.get(container_id)
        if entry is None:
            raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
        if entry.exit is not None:
            return entry.exit
    return _call_daemon(store, record, calls.WaitProcess(container_id, exec_id), timeout=timeout)


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
    outputs = Stdio(stdout=stdio.stdout, stderr=stdio.stderr)
    _live_call(pod_id, calls.AttachProcess(container_id, exec_id), outputs)


def attach_container(pod_id: str, container_id: str, stdio: Stdio) -> None:
    attach_process(pod_id, container_id, None, stdio)


def resize_terminal(
    pod_id: str, container_id: str | None, exec_id: str | None, rows: int, cols: int
) -> None:
    _live_call(pod_id, calls.ResizeTerminal(container_id, exec_id, rows, cols))


def list_processes(pod_id: str, container_id: str) -> list[ProcessInfo]:
    return _live_call(pod_id, calls.ListProcesses(container_id))
