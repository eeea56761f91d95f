"""The QMP session with one running QEMU: what the driver, its hot-plug and its
saved states say to that QEMU, how they learn that it exited, and whether its
vCPUs run.

The driver opens it once QEMU is launched (:func:`open_session`) and hands it to
:class:`~virtcontainers.hypervisor.qemu.hotplug.QemuHotplug` and
:class:`~virtcontainers.hypervisor.qemu.state.QemuState`, which thus need
nothing of the driver itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

from qemu.qmp import QMPClient, QMPError
from qemu.qmp.events import EventListener
from qemu.qmp.message import Message

from virtcontainers.errors import HypervisorError


class RunStateListener(EventListener):
    """Whether the VM's vCPUs run, as QEMU's last ``STOP`` or ``RESUME`` event
    said.  QEMU sends one on every change of its run state, whoever made it
    (this session, another monitor client, QEMU itself on an I/O error), before
    it answers the command that made it: once ``stop`` has returned, the state
    already says so.  Nothing is queued: only the last word is kept.
    """

    def __init__(self) -> None:
        super().__init__(("STOP", "RESUME"))
        self.running = True
        """A QEMU that was just launched, or loaded a saved state and was continued, runs."""
        self.heard = False
        """Whether an event has set :attr:`running` yet."""

    async def put(self, event: Message) -> None:
        if self.accept(event):
            self.running = event["event"] == "RESUME"
            self.heard = True


def _refuse(_event: Message) -> bool:
    return False


class QmpSession:
    """A connected QMP client, the VM it talks to (*what*, for messages), the
    future of that QEMU's exit code and whether its vCPUs run."""

    def __init__(
        self, client: QMPClient, what: str, exited: asyncio.Future[int], log: logging.Logger
    ) -> None:
        self._client = client
        self.what = what
        self.exited = exited
        self.log = log
        self._run_state = RunStateListener()
        client.register_listener(self._run_state)
        # qemu.qmp's default listener (which cannot be removed) keeps every
        # event, queued and in a history, for the client's life; some events
        # the guest can cause (RTC_CHANGE, BALLOON_CHANGE, ...), one a second
        # for months.  Nothing here reads it (the waits that need an event
        # listen for it): it takes none.
        client.events.event_filter = _refuse

    @property
    def vcpus_running(self) -> bool:
        """Whether the vCPUs run, as QEMU last said; asks QEMU nothing."""
        return self._run_state.running

    def learn_run_status(self, status: str) -> None:
        """What ``query-status`` answered (*status*), for a QEMU that this
        session did not see start (one adopted): an event heard meanwhile is
        at least as recent, and wins."""
        if not self._run_state.heard:
            self._run_state.running = status == "running"

    async def execute(self, cmd: str, args: Mapping[str, object] | None = None) -> object:
        """Run one QMP command; raises HypervisorError (its cause the QMP error)."""
        self.log.debug("QMP %s %s", cmd, args or "")
        try:
            return await self._client.execute(cmd, args)
        except (QMPError, OSError) as exc:
            raise HypervisorError(f"QMP {cmd} failed on {self.what}: {exc}") from exc

    async def run_status(self) -> str | None:
        """The QMP run status (``running``, ``paused``, ``inmigrate``...), None
        while QEMU cannot answer.  Not logged: it is polled."""
        try:
            reply = await self._client.execute("query-status")
        except (QMPError, OSError) as exc:
            self.log.debug("query-status: %s", exc)
            return None
        status = reply.get("status") if isinstance(reply, dict) else None
        return status if isinstance(status, str) else None

    async def pass_fd(self, fd: int, name: str) -> None:
        """Hand *fd* to QEMU under *name* (QMP ``getfd`` with SCM_RIGHTS)."""
        try:
            self._client.send_fd_scm(fd)
        except (QMPError, OSError) as exc:
            raise HypervisorError(f"passing a file to {self.what} failed: {exc}") from exc
        await self.execute("getfd", {"fdname": name})

    def listener(
        self, event: str, accept: Callable[[Message], bool]
    ) -> AbstractContextManager[EventListener]:
        """Collect the *event*s that *accept* takes while the context lasts
        (enter it before the command that causes them)."""
        return self._client.listener(event, accept)

    async def close(self) -> None:
        # disconnect() re-raises what ended the session (EOFError when QEMU exits).
        await _disconnect(self._client, self.log)


async def open_session(
    sock: Path,
    vm_id: str,
    what: str,
    exited: asyncio.Future[int],
    timeout: float,
    log: logging.Logger,
) -> QmpSession | None:
    """Connect to QEMU's QMP socket *sock* within *timeout* seconds; None if it
    did not answer (the caller tries again, or gives up)."""
    client = QMPClient(f"vc-{vm_id}")
    try:
        await asyncio.wait_for(client.connect(str(sock)), timeout)
    except (QMPError, OSError, TimeoutError) as exc:
        log.debug("QMP connect failed: %s", exc)
        await _disconnect(client, log)
        return None
    log.debug("QMP connected on %s", sock)
    return QmpSession(client, what, exited, log)


async def _disconnect(client: QMPClient, log: logging.Logger) -> None:
    try:
        await client.disconnect()
    except Exception as exc:
        log.debug("QMP session ended: %r", exc)
