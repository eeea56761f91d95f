"""A QEMU process while it runs: the handle the driver holds it by (its own
child, or one adopted through a pidfd), what exists only while it does, and
how it is ended, its sockets removed.

:class:`~virtcontainers.hypervisor.qemu.driver.QemuHypervisor` keeps one
:class:`RunningQemu` between launch (or adoption) and reaping;
:mod:`virtcontainers.hypervisor.qemu.launch` and
:mod:`virtcontainers.hypervisor.qemu.adopt` make it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from virtcontainers.errors import HypervisorError
from virtcontainers.hypervisor.devices import Device, SerialPortDevice
from virtcontainers.hypervisor.qemu.command import QemuCommand
from virtcontainers.hypervisor.qemu.hotplug import PluggedDevices
from virtcontainers.hypervisor.qemu.session import QmpSession
from virtcontainers.hypervisor.qemu.virtiofsd import Virtiofsd, virtiofs_devices, virtiofs_socket

ADOPTED_EXIT_CODE = -1
"""What an adopted QEMU's exit code reads as: it is not our child, so its
status is its reaper's (init) to collect, not ours."""


class QemuProcess(Protocol):
    """What the driver does to a QEMU process, whether it launched it or adopted it."""

    @property
    def pid(self) -> int: ...

    def kill(self) -> None: ...

    def terminate(self) -> None: ...


class AdoptedQemu:
    """A QEMU that a previous pod daemon launched and left running, known by a
    pidfd (never by a pid that could be reused)."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self._pid = pid
        self._pidfd = pidfd

    @property
    def pid(self) -> int:
        return self._pid

    def watch(self) -> asyncio.Future[int]:
        """A future done when the process exits; the pidfd is closed then."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()

        def gone() -> None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
            exited.set_result(ADOPTED_EXIT_CODE)

        loop.add_reader(self._pidfd, gone)
        return exited

    def forget(self) -> None:
        """Stop watching (the adoption failed); the process is left as it was."""
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        if self._pidfd < 0:
            raise ProcessLookupError(self._pid)
        signal.pidfd_send_signal(self._pidfd, signum)


@dataclasses.dataclass
class RunningQemu:
    """What exists only while a QEMU process does."""

    proc: QemuProcess
    exited: asyncio.Future[int]
    console: asyncio.Task[None] | None
    """Copies the console to console.log; None for an adopted QEMU, whose console
    pipe died with the daemon that launched it."""
    reaper: asyncio.Task[None] | None = None
    session: QmpSession | None = None
    plugged: PluggedDevices = dataclasses.field(default_factory=PluggedDevices)
    virtiofsds: list[Virtiofsd] = dataclasses.field(default_factory=list)
    watchers: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


async def kill(run: RunningQemu) -> None:
    """SIGKILL QEMU (if alive) and reap it."""
    if not run.exited.done():
        with contextlib.suppress(ProcessLookupError):
            run.proc.kill()
    await asyncio.shield(run.exited)


async def ask_to_quit(run: RunningQemu, timeout: float, log: logging.Logger) -> None:
    """Quit QEMU over QMP; after *timeout* s SIGTERM, and wait 2 s more.

    Returns once QEMU is gone or the waits are over: the caller kills what is left.
    """
    if run.session is not None and not run.exited.done():
        try:
            await asyncio.wait_for(run.session.execute("quit"), timeout)
        except (HypervisorError, TimeoutError) as exc:
            log.debug("QMP quit: %s", exc)
    await asyncio.wait({run.exited}, timeout=timeout)
    if not run.exited.done():
        log.warning("QEMU ignored quit for %.0f s; sending SIGTERM", timeout)
        with contextlib.suppress(ProcessLookupError):
            run.proc.terminate()
        await asyncio.wait({run.exited}, timeout=2)


def remove_sockets(command: QemuCommand, run_dir: Path, hotplugged: Iterable[Device]) -> None:
    """Remove the sockets of QEMU (its monitor, serial ports cold- and
    hot-plugged) and of its virtiofsds, those that exist."""
    devices = command.devices
    socks = [command.qmp_socket]
    socks += [virtiofs_socket(run_dir, d) for d in virtiofs_devices(devices)]
    socks += [d.socket_path for d in devices if isinstance(d, SerialPortDevice)]
    socks += [d.socket_path for d in hotplugged if isinstance(d, SerialPortDevice)]
    for sock in socks:
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
