"""The API's pods: create, start, stop, delete, list, and what dead pods left."""

from __future__ import annotations

import contextlib
import shutil
import time
from typing import TYPE_CHECKING

from virtcontainers.api.common import DAEMON_EXIT_WAIT, START_TIMEOUT, live_call, pod_store
from virtcontainers.config import ImagePaths, PodConfig
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
    VcError,
)
from virtcontainers.factory import pool
from virtcontainers.host import orphans
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cleanup import remove_pod_files
from virtcontainers.host.orphans import GarbageReport
from virtcontainers.ids import validate_id
from virtcontainers.records import ContainerRecord, PodRecord, ProcessRef
from virtcontainers.states import PodState
from virtcontainers.status import PodStatus
from virtcontainers.store import Store

if TYPE_CHECKING:
    from virtcontainers.daemon.hosted import DaemonHost

STOP_TIMEOUT = 120.0
FORCE_GRACE = 10.0


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
    store = pod_store()
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
    store = pod_store()
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
    store = pod_store()
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
    store = pod_store()
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
    store = pod_store()
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
    store = pod_store()
    report = orphans.collect(store)
    report.removed += [f"standby {name}: its daemon died" for name in pool.collect(store.root)]
    return report


def pod_status(pod_id: str) -> PodStatus:
    return PodStatus.from_record(reconcile(pod_store(), validate_id("pod", pod_id)))


def pause_pod(pod_id: str) -> None:
    live_call(pod_id, calls.PausePod())


def resume_pod(pod_id: str) -> None:
    live_call(pod_id, calls.ResumePod())
