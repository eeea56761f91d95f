"""Saved VM states for the QEMU driver: saving one, and resuming from one.

A template VM's device state is saved to a file (its RAM stays in its memory
file); a clone loads it with ``-incoming defer``.  Used by
:class:`~virtcontainers.hypervisor.qemu.driver.QemuHypervisor`, on its QMP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from qemu.qmp import QMPError

from virtcontainers.errors import HypervisorError, VMLaunchError
from virtcontainers.hypervisor.base import VMState

if TYPE_CHECKING:
    from virtcontainers.hypervisor.qemu.driver import QemuHypervisor, _Running

RESTORE_POLL = 0.01
SAVED_STATE_FD = "vc-state"


class QemuState:
    """Saving and resuming the state of one QEMU VM."""

    def __init__(self, vm: QemuHypervisor) -> None:
        self.vm = vm

    async def await_restore(self, run: _Running, deadline: float, argv: list[str]) -> None:
        """Wait until QEMU has loaded the saved state, and let the VM run again
        (it was paused when it was saved, and comes back paused).

        A state that does not fit the VM (other devices, other QEMU) makes QEMU
        exit: VMLaunchError with its reason from qemu.log.
        """
        assert run.qmp is not None
        while True:
            try:
                reply = await run.qmp.execute("query-status")
            except (QMPError, OSError) as exc:
                self.vm._log.debug("query-status during restore: %s", exc)
                reply = {}
            status = reply.get("status") if isinstance(reply, dict) else None
            if status in ("paused", "running"):  # loaded, in the state it was saved in
                if status == "paused":
                    await self.vm._execute("cont")
                self.vm._log.info("restored from %s", self.vm.config.incoming)
                return
            if run.exited.done() or status not in (None, "inmigrate"):
                await asyncio.wait({run.exited}, timeout=2)
                await asyncio.wait({run.console}, timeout=1)
                raise VMLaunchError(
                    f"QEMU for {self.vm._life.what} could not resume the saved state "
                    f"{self.vm.config.incoming} (status {status}); see the output below",
                    argv,
                    self.vm._output_tail(),
                )
            if time.monotonic() >= deadline:
                raise VMLaunchError(
                    f"QEMU for {self.vm._life.what} did not finish loading "
                    f"{self.vm.config.incoming} in time; the host may be overloaded",
                    argv,
                    self.vm._output_tail(),
                )
            await asyncio.wait({run.exited}, timeout=RESTORE_POLL)

    async def save(self, path: Path, timeout: float = 60) -> None:
        """Pause the VM and write its device state to *path* (a QEMU migration
        stream), for a later ``VMConfig.incoming``.

        RAM in a shared memory file stays out of it (``x-ignore-shared``): the
        file holds it.  The VM stays paused; stop it afterwards.  The file is
        opened here and handed to QEMU (QMP ``getfd``): its sandbox forbids the
        ``exec:cat > file`` way (``spawn=deny``).

        Raises HypervisorError (QEMU refused, e.g. a guest that mounted a 9p
        share is a migration blocker; or it took longer than *timeout*), and
        StateError unless running or paused.
        """
        self.vm._life.require("save the state of", VMState.RUNNING, VMState.PAUSED)
        run = self.vm._run
        assert run is not None
        if self.vm._life.state is VMState.RUNNING:
            await self.vm.pause()
        await self.set_ignore_shared()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            await self.vm._pass_fd(run, fd, SAVED_STATE_FD)
        finally:
            os.close(fd)
        await self.vm._execute("migrate", {"uri": f"fd:{SAVED_STATE_FD}"})
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.vm._execute("query-migrate")
            status = reply.get("status") if isinstance(reply, dict) else None
            if status == "completed":
                self.vm._log.info("state saved to %s", path)
                return
            if status in ("failed", "cancelled") or run.exited.done():
                error = reply.get("error-desc", "") if isinstance(reply, dict) else ""
                raise HypervisorError(
                    f"saving the state of {self.vm._life.what} to {path} failed: {error or status}"
                )
            if time.monotonic() >= deadline:
                with contextlib.suppress(HypervisorError):
                    await self.vm._execute("migrate_cancel")
                raise HypervisorError(
                    f"saving the state of {self.vm._life.what} took more than {timeout:.0f}s"
                )
            await asyncio.sleep(RESTORE_POLL)

    async def set_ignore_shared(self) -> None:
        """RAM in a memory file stays out of a saved state: the file holds it.
        Both the saving and the loading end must say so."""
        ignore = self.vm.config.memory_file is not None
        capabilities = [{"capability": "x-ignore-shared", "state": ignore}]
        await self.vm._execute("migrate-set-capabilities", {"capabilities": capabilities})
