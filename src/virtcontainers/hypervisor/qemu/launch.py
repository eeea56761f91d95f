"""Launching QEMU: spawning it confined with its console copied, connecting
to its monitor, loading the saved state it was launched to resume, and the
error of a launch that failed, with the end of the VM's output.

:meth:`QemuHypervisor.start <virtcontainers.hypervisor.qemu.driver.QemuHypervisor.start>`
renders the command and starts virtiofsd, then hands one :class:`QemuLaunch`
what this needs of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import VMLaunchError
from virtcontainers.host.logtail import tail
from virtcontainers.hypervisor import console
from virtcontainers.hypervisor.base import OUTPUT_TAIL, VMConfig
from virtcontainers.hypervisor.devices import SharedFsDevice
from virtcontainers.hypervisor.qemu.confine import qemu_child_setup
from virtcontainers.hypervisor.qemu.running import RunningQemu
from virtcontainers.hypervisor.qemu.session import QmpSession, open_session
from virtcontainers.hypervisor.qemu.state import QemuState
from virtcontainers.hypervisor.qemu.virtiofsd import (
    Virtiofsd,
    stop_virtiofsds,
    virtiofsd_output_tail,
    watch_virtiofsd,
)


@dataclass(frozen=True)
class QemuLaunch:
    """One launch of ``argv`` for the VM named *what* (in messages) and *vm_id*."""

    argv: list[str]
    what: str
    vm_id: str
    run_dir: Path
    qemu_log: Path
    """QEMU's own stderr."""
    console_log: Path
    console_limit: int
    virtiofs: Sequence[SharedFsDevice]
    """The virtio-fs devices, whose virtiofsd's output a failed launch reports."""
    remove_sockets: Callable[[], None]
    log: logging.Logger

    async def spawn(self, fds: tuple[int, ...], virtiofsds: list[Virtiofsd]) -> RunningQemu:
        """Spawn QEMU, copy its console, and kill it if a virtiofsd dies under it.

        Raises VMLaunchError when QEMU cannot be executed; *virtiofsds* are
        stopped and the sockets removed on any failure.
        """
        try:
            with self.qemu_log.open("wb") as stderr:
                proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                    preexec_fn=qemu_child_setup(),
                    pass_fds=fds,
                )
        except BaseException as exc:
            await stop_virtiofsds(virtiofsds)
            self.remove_sockets()
            if isinstance(exc, OSError):
                raise VMLaunchError(
                    f"cannot execute {self.argv[0]} for {self.what}: {exc}", self.argv
                ) from exc
            raise
        assert proc.stdout is not None
        run = RunningQemu(
            proc=proc,
            exited=asyncio.ensure_future(proc.wait()),
            console=asyncio.create_task(
                console.pump(
                    proc.stdout,
                    self.console_log,
                    self.console_limit,
                    console.RateLimit(console.CONSOLE_RATE, console.CONSOLE_BURST),
                )
            ),
            virtiofsds=virtiofsds,
        )
        run.watchers = [
            asyncio.create_task(watch_virtiofsd(d, proc, run.exited, self.log)) for d in virtiofsds
        ]
        return run

    async def connect_qmp(self, run: RunningQemu, sock: Path, deadline: float) -> QmpSession:
        while True:
            if run.exited.done():
                raise await self.error(
                    run,
                    f"QEMU for {self.what} exited with code {run.exited.result()} "
                    "before its monitor answered; see the output below",
                )
            if sock.exists():
                remaining = max(0.1, deadline - time.monotonic())
                session = await open_session(
                    sock, self.vm_id, self.what, run.exited, remaining, self.log
                )
                if session is not None:
                    return session
            if time.monotonic() >= deadline:
                raise await self.error(
                    run,
                    f"QEMU for {self.what} did not answer on {sock} in time; "
                    "the host may be overloaded",
                )
            await asyncio.wait({run.exited}, timeout=0.02)

    async def restore(
        self,
        run: RunningQemu,
        session: QmpSession,
        config: VMConfig,
        incoming_uri: str,
        deadline: float,
    ) -> None:
        """Load the saved state that QEMU was launched to resume, and run it."""
        state = QemuState(session, config)
        await state.set_ignore_shared()
        await session.execute("migrate-incoming", {"uri": incoming_uri})
        failure = await state.await_restore(deadline)
        if failure is not None:
            raise await self.error(run, failure)

    async def error(self, run: RunningQemu, message: str) -> VMLaunchError:
        """The error of a launch that failed, with the end of the VM's output
        (all of it once QEMU has exited, when its console pipe drains)."""
        if run.exited.done() and run.console is not None:
            await asyncio.wait({run.console}, timeout=1)
        return VMLaunchError(message, self.argv, self.output_tail())

    def output_tail(self) -> str:
        virtiofsd = virtiofsd_output_tail(self.run_dir, self.virtiofs, OUTPUT_TAIL // 4)
        qemu = tail(self.qemu_log, OUTPUT_TAIL // 2 - len(virtiofsd) // 2).strip()
        console = tail(self.console_log, OUTPUT_TAIL - len(qemu) - len(virtiofsd)).strip()
        parts = [
            virtiofsd,
            f"[qemu] {qemu}" if qemu else "",
            f"[console] {console}" if console else "",
        ]
        return "\n".join(p for p in parts if p)
