"""Pod daemons hosted on the event loop of a longer-lived process, instead of
processes of their own: that process is then the pods' daemon.

containerd's shim hosts its pod this way, so that a Kubernetes pod costs one
host process besides QEMU, and the pod's record names the shim as its daemon
(``virtc pod list``, ``virtc top`` and the metrics count it).  The contract of
``api.start_pod`` is :func:`virtcontainers.daemon.launcher.spawn`'s: the
daemon gets a hold of its own on the pod's lock (a duplicate of the caller's
fd, released when the boot ends), reports through a pipe, and the start
returns once the pod runs or raises the daemon's error.

QEMU is forked by the daemon on the loop's thread, so its parent-death signal
fires when the hosting process exits, not when a thread of its pool does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading

from virtcontainers.daemon import launcher, server
from virtcontainers.errors import DaemonError
from virtcontainers.records import ProcessRef
from virtcontainers.store import PodLock, Store

log = logging.getLogger("virtcontainers.daemon")


class DaemonHost:
    """Runs pod daemons as tasks on ``loop``, which runs in another thread of this
    process; setting ``stop`` (the host's shutdown) stops their pods."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self.loop = loop
        self.stop = stop
        self._daemons: set[concurrent.futures.Future[int]] = set()
        self._guard = threading.Lock()

    def start(self, store: Store, lock: PodLock, timeout: float, owner: ProcessRef | None) -> None:
        """Start the pod's daemon on the loop; return once it reports the pod running.

        Called from a thread other than the loop's (which must keep running to
        boot the pod).  Raises the daemon's error, or DaemonError if it ends
        or stays silent.
        """
        if self._on_loop_thread():
            raise DaemonError("a hosted pod daemon cannot be started from its own loop's thread")
        pod_id = lock.paths.root.name
        read_end, write_end = os.pipe()
        # The daemon's own hold on the pod (the same open file, so the same lock),
        # which it releases when the boot ends, whatever this caller does.
        hold = os.dup(lock.fd)
        args = launcher.DaemonArgs(store.root, pod_id, write_end, False, False, hold, owner)
        daemon = asyncio.run_coroutine_threadsafe(server.run(store, args, self.stop), self.loop)
        with self._guard:
            self._daemons.add(daemon)
        daemon.add_done_callback(self._ended)
        try:
            answer = launcher.read_ready(read_end, timeout)
        finally:
            os.close(read_end)
        launcher.check_ready(pod_id, answer, lock.paths.log)

    async def wait(self) -> None:
        """Until every daemon hosted here has ended (their pods stopped and recorded)."""
        with self._guard:
            daemons = [asyncio.wrap_future(daemon) for daemon in self._daemons]
        await asyncio.gather(*daemons, return_exceptions=True)

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _ended(self, daemon: concurrent.futures.Future[int]) -> None:
        with self._guard:
            self._daemons.discard(daemon)
        if not daemon.cancelled() and daemon.exception() is not None:
            log.error("a hosted pod daemon failed", exc_info=daemon.exception())
