"""How a caller reaches a pod's daemon: one call over the pod's socket, and
waiting for the daemon to end.

:mod:`virtcontainers.api` is the one caller; the daemon's side of the same
calls is :mod:`virtcontainers.daemon.server`.
"""

from __future__ import annotations

import time
from typing import TypeVar

from virtcontainers.daemon import calls, launcher, rpc
from virtcontainers.errors import (
    BusyError,
    CorruptRecordError,
    DaemonError,
    NotFoundError,
    StateError,
    VcError,
)
from virtcontainers.host import orphans
from virtcontainers.host import proc as hostproc
from virtcontainers.records import PodRecord
from virtcontainers.states import PodState
from virtcontainers.stdio import Stdio
from virtcontainers.store import Store

LIVE = (PodState.RUNNING, PodState.PAUSED)
"""The states in which a pod has a daemon to call."""
REATTACH_TIMEOUT = 120.0
"""How long a new daemon may take to take over a VM (a call waits that long for
the pod's lock, too, while another call reattaches)."""
R = TypeVar("R")


def call_daemon(
    store: Store,
    record: PodRecord,
    request: calls.Request[R],
    stdio: Stdio | None = None,
    timeout: float | None = 60.0,
) -> R:
    """Call the daemon of the pod whose (reconciled) record this is: the only way in."""
    if record.state not in LIVE:
        raise StateError(
            f"pod {record.id!r}", request.ACTION, record.state.value, [s.value for s in LIVE]
        )
    given = stdio.named() if stdio is not None else []
    params = {**request.to_params(), "stdio": [name for name, _fd in given]}
    socket = store.paths(record.id).socket

    def check() -> None:
        _raise_if_daemon_stopped(record, request)

    check()
    try:
        data = rpc.call(socket, request.METHOD, params, [fd for _name, fd in given], timeout, check)
    except DaemonError:
        _raise_if_stopped_meanwhile(store, record.id, request)
        raise
    return request.decode_result(data)


def _raise_if_daemon_stopped(record: PodRecord, request: calls.Request[R]) -> None:
    """A daemon stopped by a signal would leave the caller waiting out its timeout."""
    daemon = record.daemon
    if daemon is not None and daemon != hostproc.current() and hostproc.stopped(daemon):
        raise DaemonError(
            f"cannot {request.ACTION} pod {record.id!r}: its daemon (pid {daemon.pid}) "
            f"is stopped (by SIGSTOP or a debugger); continue it (kill -CONT {daemon.pid}), "
            "or stop the pod with force"
        )


def reconcile(store: Store, pod_id: str, held: bool = False) -> PodRecord:
    """Load a pod's record; if its daemon died, give it a new one that reattaches
    to its VM, or, when that cannot be (the VM is gone too, see
    :func:`~virtcontainers.host.orphans.cannot_reattach`), clean up and mark
    it stopped, saying why (:func:`~virtcontainers.host.orphans.reconcile`).

    ``held``: the caller holds the pod's lock.  Otherwise the lock is taken
    for the reattach; a pod that another call holds beyond
    :data:`REATTACH_TIMEOUT` is left to it.
    """
    record = store.load(pod_id)
    if not orphans.orphaned(record) or orphans.cannot_reattach(record) is not None:
        return orphans.reconcile(store, pod_id, held)
    if held:
        return _reattach(store, pod_id, None)
    try:
        with store.locked(pod_id, "reattach to", REATTACH_TIMEOUT) as lock:
            record = store.load(pod_id)
            if orphans.orphaned(record) and orphans.cannot_reattach(record) is None:
                return _reattach(store, pod_id, lock.fd)
            return orphans.reconcile(store, pod_id, held=True)
    except BusyError:
        return record


def _reattach(store: Store, pod_id: str, lock_fd: int | None) -> PodRecord:
    """A new daemon takes the pod over; if it cannot, it has cleaned up and said why."""
    try:
        launcher.spawn_reattach(store, pod_id, REATTACH_TIMEOUT, lock_fd)
    except VcError as exc:
        record = store.load(pod_id)
        if orphans.orphaned(record):  # the new daemon died too: as any orphan
            return orphans.reconcile(store, pod_id, held=True)
        record.error = record.error or f"reattaching failed: {exc}"
        return record
    return store.load(pod_id)


def _raise_if_stopped_meanwhile(store: Store, pod_id: str, request: calls.Request[R]) -> None:
    """A call that raced the pod's stop lost its daemon mid-way: say that plainly.

    Never reattaches nor waits for the pod's lock: the caller may hold it (a
    stop), and a daemon that died under a live VM is taken over by the next call.
    """
    try:
        record = store.load(pod_id)
        if orphans.orphaned(record) and orphans.cannot_reattach(record) is None:
            return
        state = orphans.reconcile(store, pod_id).state
    except VcError:
        return
    if state not in LIVE:
        raise StateError(f"pod {pod_id!r}", request.ACTION, state.value, [s.value for s in LIVE])


def wait_daemon_gone(store: Store, record: PodRecord, timeout: float) -> None:
    """Wait until the pod's daemon has ended (DaemonError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while record.daemon is not None and daemon_running(store, record):
        if time.monotonic() > deadline:
            raise DaemonError(
                f"pod {record.id!r}: daemon {record.daemon.pid} did not exit in {timeout:.0f}s"
            )
        time.sleep(0.02)


def daemon_running(store: Store, record: PodRecord) -> bool:
    """Whether the daemon ``record`` names still runs: its process is alive and the
    pod's record still names it.  A daemon hosted by a process that lives on
    (containerd's shim) ends by recording its exit, not by exiting."""
    if record.daemon is None or not hostproc.alive(record.daemon):
        return False
    try:
        return store.load(record.id).daemon == record.daemon
    except NotFoundError:
        return False
    except CorruptRecordError:
        return True
