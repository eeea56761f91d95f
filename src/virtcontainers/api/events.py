"""The API's pod events: those of now, and following a pod's run to its end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from virtcontainers.api.common import DAEMON_EXIT_WAIT, live_call, pod_store
from virtcontainers.api.pods import pod_status
from virtcontainers.daemon import calls
from virtcontainers.daemon.client import LIVE, wait_daemon_gone
from virtcontainers.errors import DaemonError, NotFoundError, StateError
from virtcontainers.events import Event


def pod_events(pod_id: str, after: int = 0, timeout: int = 30) -> list[Event]:
    """The pod's events numbered above ``after`` (see :mod:`virtcontainers.events`),
    waiting up to ``timeout`` seconds for one to happen."""
    return live_call(pod_id, calls.WatchEvents(after, timeout), timeout=timeout + 30)


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
                store = pod_store()
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
        daemon = pod_store().load(pod_id).daemon
    except NotFoundError:
        return None
    return daemon.pid if daemon is not None else None
