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
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

from virtcontainers.agent.results import ContainerStats, ExitStatus, ProcessInfo
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths, PodConfig
from virtcontainers.daemon import calls, launcher
from virtcontainers.daemon.client import (
    LIVE,
    call_daemon,
    daemon_running,
    reconcile,
    wait_daemon_gone,
)
from virtcontainers.errors import (
    CorruptRecordError,
    DaemonError,
    ExistsError,
    NotFoundError,
    StateError,
    VcError,
)
from virtcontainers.events import Event
from virtcontainers.factory import pool
from virtcontainers.host import orphans
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cleanup import remove_pod_files
from virtcontainers.host.orphans import GarbageReport
from virtcontainers.ids import validate_id
from virtcontainers.limits import Limits
from virtcontainers.records import ContainerRecord, PodRecord, ProcessRef
from virtcontainers.states import ContainerState, PodState
from virtcontainers.status import ContainerStatus, InterfaceStatus, PodStatus, ProcessHandle
from virtcontainers.stdio import Stdio
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.store import Store

if TYPE_CHECKING:
    from virtcontainers.daemon.hosted import DaemonHost

__all__ = [
    "ContainerStats",
    "ContainerStatus",
    "Event",
    "ExitStatus",
    "InterfaceStatus",
    "PodStatus",
    "ProcessHandle",
    "ProcessInfo",
    "Stdio",
    "add_interface",
    "attach_container",
    "attach_process",
    "collect_garbage",
    "container_stats",
    "container_status",
    "create_container",
    "create_pod",
    "delete_container",
    "delete_pod",
    "enter_container",
    "enter_pod",
    "follow_events",
    "kill_container",
    "list_interfaces",
    "list_pod_errors",
    "list_pods",
    "list_processes",
    "pause_container",
    "pause_pod",
    "pod_events",
    "pod_status",
    "remove_interface",
    "resize_terminal",
    "resume_container",
    "resume_pod",
    "run_pod",
    "signal_process",
    "start_container",
    "start_pod",
    "stop_container",
    "stop_pod",
    "update_container",
    "wait_container",
    "wait_process",
]

START_TIMEOUT = 300.0
STOP_TIMEOUT = 120.0
FORCE_GRACE = 10.0
DAEMON_EXIT_WAIT = 30.0
# A hot-plug waits for the guest twice at worst (the NIC to appear, then to let
# go of it again when the guest's configuration fails): a minute each.
INTERFACE_TIMEOUT = 180.0
R = TypeVar("R")


# --- helpers -----------------------------------------------------------------------------


def _store() -> Store:
    return Store()


def _live_call(
    pod_id: str,
    request: calls.Request[R],
    stdio: Stdio | None = None,
    timeout: float | None = 60.0,
) -> R:
    """Call the daemon of a running pod."""
    store = _store()
    return call_daemon(store, reconcile(store, pod_id), request, stdio, timeout)


# --- pods ----------------------------------------------------------------------------------


def create_pod(config: PodConfig) -> PodStatus:
    """Record a pod (its VM is not started).

    Checks what the pod needs of the host (memory, rootfs and mount sources, the
    guest image) once, here.  Raises ExistsError if the id is taken, ConfigError.
    """
    config.check_host()
    if config.netns is not None:
        # Opened to be checked: ctypes (for setns) loads only for pods that have one.
        from virtcontainers.network.netns import check_netns

        check_netns(config.netns)
    image = config.image or _default_image(config)
    store = _store()
    store.paths(config.id).check_socket_lengths()
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


def start_pod(
    pod_id: str,
    timeout: float = START_TIMEOUT,
    owner: ProcessRef | None = None,
    host: DaemonHost | None = None,
) -> PodStatus:
    """Boot the pod's VM and start its containers; returns when they run.

    The pod is held while it boots: a second start, a stop or a delete waits
    for the boot to end, even if this caller dies meanwhile (then the pod is
    stopped, since nobody heard it start).  With ``owner``, the pod is
    stopped and deleted when that process exits (``virtc run --rm``).  The
    pod's daemon is a process of its own, or with ``host`` a task on that
    event loop of this process (call from another thread), which then is the
    pod's daemon.
    """
    store = _store()
    with store.locked(pod_id, "start") as lock:
        record = reconcile(store, pod_id, held=True)
        record.state = record.state.moved_to(pod_id, PodState.STARTING)
        store.save(record)
        if host is None:
            launcher.spawn(store, lock, timeout, owner)
        else:
            host.start(store, lock, timeout, owner)
    return pod_status(pod_id)


def stop_pod(pod_id: str, timeout: float = STOP_TIMEOUT, force: bool = False) -> PodStatus:
    """Stop the VM (its containers end with it); the pod can be started again.

    ``force``: if the pod's daemon does not stop it within FORCE_GRACE
    seconds (hung, stopped by a signal, still booting), kill the daemon and
    the VM, and clean up after them.
    """
    store = _store()
    if force:
        _force_stop(store, pod_id)
        return pod_status(pod_id)
    with store.locked(pod_id, "stop"):
        record = reconcile(store, pod_id, held=True)
        if record.state is PodState.CREATED:
            record.state = record.state.moved_to(pod_id, PodState.STOPPED)
            store.save(record)
        else:
            record.state.require(pod_id, "stop", *LIVE)
            call_daemon(store, record, calls.StopPod(), timeout=timeout)
            wait_daemon_gone(store, record, timeout)
    return pod_status(pod_id)


def _force_stop(store: Store, pod_id: str) -> None:
    record = reconcile(store, pod_id)
    if record.state in LIVE:
        try:
            call_daemon(store, record, calls.StopPod(), timeout=FORCE_GRACE)
        except VcError:
            pass  # hung or gone: killed below
        else:
            with contextlib.suppress(DaemonError):
                wait_daemon_gone(store, record, FORCE_GRACE)
    daemon = record.daemon
    if daemon is not None and daemon != hostproc.current() and daemon_running(store, record):
        # SIGKILL reaches a stopped process too.  QEMU outlives it and is killed
        # next; a daemon this process hosts sees its VM killed below, and ends.
        hostproc.kill(daemon)
    if record.vm is not None:
        hostproc.kill(record.vm)
    with contextlib.suppress(DaemonError):
        wait_daemon_gone(store, record, FORCE_GRACE)
    if not daemon_running(store, record):
        orphans.kill_processes_of(store, pod_id)
    with store.locked(pod_id, "stop", FORCE_GRACE):
        record = reconcile(store, pod_id, held=True)
        if record.state is PodState.CREATED:
            record.state = record.state.moved_to(pod_id, PodState.STOPPED)
            store.save(record)


def delete_pod(pod_id: str, force: bool = False) -> None:
    """Remove a pod that is not running, and everything it left on the host.

    ``force`` stops a running pod first (as ``stop_pod(force=True)``).  A pod
    whose record is corrupt is removed too: its files are all there is.
    """
    store = _store()
    if force:
        with contextlib.suppress(CorruptRecordError):
            if pod_status(pod_id).state not in (PodState.CREATED, PodState.STOPPED):
                stop_pod(pod_id, force=True)
    with store.locked(pod_id, "delete") as lock:
        try:
            record = reconcile(store, pod_id, held=True)
        except CorruptRecordError:
            pass
        else:
            record.state.require(pod_id, "delete", PodState.CREATED, PodState.STOPPED)
            # A daemon whose VM died may still be writing its last record.
            wait_daemon_gone(store, record, DAEMON_EXIT_WAIT)
        remove_pod_files(lock.paths)


def run_pod(
    config: PodConfig,
    timeout: float = START_TIMEOUT,
    owner: ProcessRef | None = None,
    host: DaemonHost | None = None,
) -> PodStatus:
    """Create and start a pod (see :func:`start_pod`); if starting fails the pod is
    deleted again."""
    create_pod(config)
    try:
        return start_pod(config.id, timeout, owner, host)
    except BaseException:
        with contextlib.suppress(VcError):
            delete_pod(config.id, force=True)
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
            found.append(PodStatus.from_record(reconcile(store, pod_id)))
        except CorruptRecordError as exc:
            found.append(exc)
        except NotFoundError:
            continue  # deleted while we listed
    return found


def collect_garbage() -> GarbageReport:
    """Remove what pods left behind: dead daemons' VMs, stale mounts and sockets,
    deleted containers' layers, half-created pods, stray processes.  Safe beside
    live pods (see :mod:`virtcontainers.host.orphans`), and what dead standbys of
    the pool left (:mod:`virtcontainers.factory.pool`)."""
    store = _store()
    report = orphans.collect(store)
    report.removed += [f"standby {name}: its daemon died" for name in pool.collect(store.root)]
    return report


def pod_status(pod_id: str) -> PodStatus:
    return PodStatus.from_record(reconcile(_store(), validate_id("pod", pod_id)))


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
    output goes to the pod's ``logs/<container>.log``, rotated at
    ``Resources.log_mib``.
    """
    config.check_host()
    store = _store()
    with store.locked(pod_id, "create a container in"):
        record = reconcile(store, pod_id, held=True)
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
    return ContainerStatus.from_record(call_daemon(store, record, request, stdio, START_TIMEOUT))


def delete_container(pod_id: str, container_id: str) -> None:
    """Remove a container that is not running."""
    validate_id("container", container_id)
    store = _store()
    with store.locked(pod_id, "delete a container in") as lock:
        record = reconcile(store, pod_id, held=True)
        if record.state not in LIVE:  # no VM: the record is ours to edit
            entry = record.containers.get(container_id)
            if entry is None:
                raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
            entry.state.require(
                container_id, "delete", ContainerState.CREATED, ContainerState.STOPPED
            )
            del record.containers[container_id]
            store.save(record)
            SharedDir(lock.paths).remove_layer(container_id)
            return
    call_daemon(store, record, calls.DeleteContainer(container_id))


def start_container(pod_id: str, container_id: str) -> None:
    _live_call(pod_id, calls.StartContainer(container_id))


def stop_container(pod_id: str, container_id: str, timeout: int = 10) -> None:
    """SIGTERM the container, SIGKILL after ``timeout`` seconds."""
    _live_call(pod_id, calls.StopContainer(container_id, timeout), timeout=timeout + 60.0)


def container_status(pod_id: str, container_id: str) -> ContainerStatus:
    validate_id("container", container_id)
    record = reconcile(_store(), pod_id)
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
    _live_call(pod_id, calls.AttachProcess(container_id, exec_id), outputs)


def attach_container(pod_id: str, container_id: str, stdio: Stdio) -> None:
    attach_process(pod_id, container_id, None, stdio)


def resize_terminal(
    pod_id: str, container_id: str | None, exec_id: str | None, rows: int, cols: int
) -> None:
    _live_call(pod_id, calls.ResizeTerminal(container_id, exec_id, rows, cols))


def list_processes(pod_id: str, container_id: str) -> list[ProcessInfo]:
    return _live_call(pod_id, calls.ListProcesses(container_id))


def update_container(pod_id: str, container_id: str, limits: Limits) -> None:
    """Change a created or running container's limits; None fields stay as they are.

    Raises ConfigError when a limit is more than the pod's VM has (the VM does
    not grow), and AgentError "runtime" when the guest refuses it (a memory
    limit below what the container uses now, say).
    """
    _live_call(pod_id, calls.UpdateContainer(container_id, limits))


def pod_events(pod_id: str, after: int = 0, timeout: int = 30) -> list[Event]:
    """The pod's events numbered above ``after`` (see :mod:`virtcontainers.events`),
    waiting up to ``timeout`` seconds for one to happen."""
    return _live_call(pod_id, calls.WatchEvents(after, timeout), timeout=timeout + 30)


def follow_events(pod_id: str, poll: int = 30) -> Iterator[Event]:
    """Every event of the pod's run from now on, ending with its ``stopped`` event.

    When the pod's daemon is gone before it said so (it was killed, or the pod
    stopped between two waits), the last event is made from the pod's record;
    if a new daemon reattached to the pod instead, its events follow (numbered
    from 1 again, starting with ``reattach``).
    """
    after = 0
    daemon = pod_status(pod_id).daemon_pid
    while True:
        try:
            events = pod_events(pod_id, after, poll)
        except (StateError, DaemonError):
            # A daemon being killed may answer for a moment: wait it out, so the
            # record is reconciled before it is read.
            with contextlib.suppress(DaemonError):
                store = _store()
                record = store.load(pod_id)
                if record.daemon is not None and record.daemon.pid == daemon:
                    wait_daemon_gone(store, record, DAEMON_EXIT_WAIT)
            status = pod_status(pod_id)
            if status.state in LIVE and status.daemon_pid not in (None, daemon):
                daemon, after = status.daemon_pid, 0
                continue
            yield Event(after + 1, time.time(), "stopped", None, {"error": status.error})
            return
        answered_by = _daemon_pid(pod_id)
        if answered_by not in (None, daemon):  # reattached on the way: numbers start again
            daemon, after = answered_by, 0
            continue
        for event in events:
            yield event
            if event.kind == "stopped":
                return
        after = events[-1].seq if events else after


def _daemon_pid(pod_id: str) -> int | None:
    """The pid of the daemon the pod's record names now (None: none, or no pod)."""
    try:
        daemon = _store().load(pod_id).daemon
    except NotFoundError:
        return None
    return daemon.pid if daemon is not None else None


def container_stats(pod_id: str, container_id: str) -> ContainerStats:
    """What a container uses now, read from its cgroup in the guest."""
    return _live_call(pod_id, calls.GetContainerStats(container_id))


# --- network ---------------------------------------------------------------------------------


def add_interface(pod_id: str, name: str) -> InterfaceStatus:
    """Carry one more interface of the pod's network namespace into its running VM.

    Put the interface in the namespace first (a veth, a macvlan, ...), with
    its addresses and routes: the guest takes them, as it takes those of the
    interfaces found at boot.  Returns when the guest has it configured.
    Raises StateError (the pod is not running), ConfigError (the pod has no
    network namespace, or the interface cannot be carried), NotFoundError
    (no such interface in the namespace), ExistsError (attached already),
    NetworkError, HypervisorError (no free hot-plug slot), AgentError.
    """
    request = calls.AddInterface(name)
    return _live_call(pod_id, request, timeout=INTERFACE_TIMEOUT)


def remove_interface(pod_id: str, name: str) -> None:
    """Take an interface out of the pod's running VM, and leave it in the namespace
    exactly as the caller gave it.

    Returns when the guest has let the NIC go (its addresses and routes go
    with it).  Raises StateError, ConfigError (no network namespace),
    NotFoundError (the interface is not attached), HypervisorError (the guest
    did not release the NIC: it stays attached; try again), NetworkError.
    """
    request = calls.RemoveInterface(name)
    _live_call(pod_id, request, timeout=INTERFACE_TIMEOUT)


def list_interfaces(pod_id: str) -> list[InterfaceStatus]:
    """The interfaces the pod's VM carries: those found at boot, then those added."""
    return _live_call(pod_id, calls.ListInterfaces())
