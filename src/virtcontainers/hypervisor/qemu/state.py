"""Saved VM states for the QEMU driver: saving one, and resuming from one.

A template VM's device state is saved to a file (its RAM stays in its memory
file); a clone loads it with ``-incoming defer``.  The driver
(:class:`~virtcontainers.hypervisor.qemu.driver.QemuHypervisor`) hands it the
VM's QMP session and config.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from virtcontainers.errors import HypervisorError
from virtcontainers.hypervisor.base import VMConfig
from virtcontainers.hypervisor.qemu.session import QmpSession

RESTORE_POLL = 0.01
"""How often a restore or a save is polled for its end (QMP query-status/-migrate)."""
SAVED_STATE_FD = "vc-state"


class QemuState:
    """Saving and resuming the state of one QEMU VM."""

    def __init__(self, session: QmpSession, config: VMConfig) -> None:
        self.session = session
        self.config = config

    async def await_restore(self, deadline: float) -> str | None:
        """Wait until QEMU has loaded the saved state, and let the VM run again
        (it was paused when it was saved, and comes back paused).

        Returns None once it runs, else why it does not: a state that does not
        fit the VM (other devices, other QEMU) makes QEMU exit (its reason is
        in qemu.log), and a loaded host may run out of time.
        """
        session = self.session
        while True:
            status = await session.run_status()
            if status in ("paused", "running"):  # loaded, in the state it was saved in
                if status == "paused":
                    await session.execute("cont")
                session.log.info("restored from %s", self.config.incoming)
                return None
            if session.exited.done() or status not in (None, "inmigrate"):
                await asyncio.wait({session.exited}, timeout=2)
                return (
                    f"QEMU for {session.what} could not resume the saved state "
                    f"{self.config.incoming} (status {status}); see the output below"
                )
            if time.monotonic() >= deadline:
                return (
                    f"QEMU for {session.what} did not finish loading "
                    f"{self.config.incoming} in time; the host may be overloaded"
                )
            await asyncio.wait({session.exited}, timeout=RESTORE_POLL)

    async def save(self, path: Path, timeout: float = 60) -> None:
        """Write the device state of the paused VM to *path* (a QEMU migration
        stream), for a later ``VMConfig.incoming``.

        RAM in a shared memory file stays out of it (``x-ignore-shared``): the
        file holds it.  The VM stays paused; stop it afterwards.  The file is
        opened here and handed to QEMU (QMP ``getfd``): its sandbox forbids the
        ``exec:cat > file`` way (``spawn=deny``).

        Raises HypervisorError (QEMU refused, e.g. a guest that mounted a 9p
        share is a migration blocker; or it took longer than *timeout*).
        """
        session = self.session
        await self.set_ignore_shared()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            await session.pass_fd(fd, SAVED_STATE_FD)
        finally:
            os.close(fd)
        await session.execute("migrate", {"uri": f"fd:{SAVED_STATE_FD}"})
        deadline = time.monotonic() + timeout
        while True:
            reply = await session.execute("query-migrate")
            status = reply.get("status") if isinstance(reply, dict) else None
            if status == "completed":
                session.log.info("state saved to %s", path)
                return
            if status in ("failed", "cancelled") or session.exited.done():
                error = reply.get("error-desc", "") if isinstance(reply, dict) else ""
                raise HypervisorError(
                    f"saving the state of {session.what} to {path} failed: {error or status}"
                )
            if time.monotonic() >= deadline:
                with contextlib.suppress(HypervisorError):
                    await session.execute("migrate_cancel")
                raise HypervisorError(
                    f"saving the state of {session.what} took more than {timeout:.0f}s"
                )
            await asyncio.sleep(RESTORE_POLL)

    async def set_ignore_shared(self) -> None:
        """RAM in a memory file stays out of a saved state: the file holds it.
        Both the saving and the loading end must say so."""
        ignore = self.config.memory_file is not None
        capabilities = [{"capability": "x-ignore-shared", "state": ignore}]
        await self.session.execute("migrate-set-capabilities", {"capabilities": capabilities})
