"""What the API's calls share: the store, a call to the daemon of a running
pod, and how long a pod may take to start and its daemon to end."""

from __future__ import annotations

from typing import TypeVar

from virtcontainers.daemon import calls
from virtcontainers.daemon.client import call_daemon, reconcile
from virtcontainers.stdio import Stdio
from virtcontainers.store import Store

START_TIMEOUT = 300.0
DAEMON_EXIT_WAIT = 30.0
R = TypeVar("R")


def pod_store() -> Store:
    return Store()


def live_call(
    pod_id: str,
    request: calls.Request[R],
    stdio: Stdio | None = None,
    timeout: float | None = 60.0,
) -> R:
    """Call the daemon of a running pod."""
    store = pod_store()
    return call_daemon(store, reconcile(store, pod_id), request, stdio, timeout)
