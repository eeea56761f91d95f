"""Adopting a QEMU that a previous pod daemon launched and left running: known
by a pidfd, its monitor connected to again, and which root ports it has and
what is in them asked of QEMU (``query-pci``).

:meth:`QemuHypervisor.adopt <virtcontainers.hypervisor.qemu.driver.QemuHypervisor.adopt>`
renders the command the VM was launched with and hands it here; it gets back
the :class:`~virtcontainers.hypervisor.qemu.running.RunningQemu` to keep.
"""

from __future__ import annotations

import dataclasses
import logging

from virtcontainers.errors import HypervisorError
from virtcontainers.host import proc as hostproc
from virtcontainers.hypervisor.accel import cached_host_tsc_khz, detect_accelerator
from virtcontainers.hypervisor.base import VMConfig
from virtcontainers.hypervisor.devices import BlockDevice, Device, NetDevice
from virtcontainers.hypervisor.qemu.command import DEFAULT_MACHINE, QemuCommand
from virtcontainers.hypervisor.qemu.hotplug import query_root_ports
from virtcontainers.hypervisor.qemu.running import AdoptedQemu, RunningQemu
from virtcontainers.hypervisor.qemu.session import open_session
from virtcontainers.records import ProcessRef


def open_pidfd(process: ProcessRef, what: str) -> int:
    """A pidfd of *process*; HypervisorError when it is gone."""
    pidfd = hostproc.pidfd(process)
    if pidfd is None:
        raise HypervisorError(f"{what}: QEMU (pid {process.pid}) is gone")
    return pidfd


def adopted_command(config: VMConfig, binary: str, tcg_thread: str | None) -> QemuCommand:
    """The command the adopted VM was launched with, as far as *config* says."""
    return QemuCommand(
        config=config,
        accelerator=config.accelerator or detect_accelerator()[0],
        machine=config.machine or DEFAULT_MACHINE,
        devices=(),
        tsc_khz=cached_host_tsc_khz(),
        binary=binary,
        tcg_thread=tcg_thread,
    )


def cold_devices(config: VMConfig) -> list[Device]:
    """The devices of an adopted VM that its command line renders.

    NICs and disks sit in root ports, as hot-plugged ones do: none is
    rendered as cold-plugged, which would count a root port of its own.
    """
    return [d for d in config.devices if not isinstance(d, NetDevice | BlockDevice)]


async def reconnect(
    adopted: AdoptedQemu,
    command: QemuCommand,
    what: str,
    timeout: float,
    log: logging.Logger,
) -> tuple[RunningQemu, QemuCommand]:
    """Watch *adopted* and connect to its monitor again; returns it running,
    and *command* with the root ports QEMU has.

    *command*'s NICs and disks are those the caller knows the VM holds, so
    that they can be unplugged again.  Raises HypervisorError when the
    monitor does not answer within *timeout* seconds or the root ports are
    not ours; the process is then left as it was.
    """
    config = command.config
    run = RunningQemu(proc=adopted, exited=adopted.watch(), console=None)
    try:
        session = await open_session(
            command.qmp_socket,
            config.vm_id,
            what,
            run.exited,
            timeout,
            log,
        )
        if session is None:
            raise HypervisorError(f"{what}: QEMU's monitor did not answer in {timeout:.0f}s")
        ports = await query_root_ports(session)
    except BaseException:
        adopted.forget()
        raise
    command = dataclasses.replace(
        command, config=dataclasses.replace(config, hotplug_ports=ports.count)
    )
    run.plugged.ports = ports.occupied
    run.plugged.hotplugged = {
        d.id: d
        for d in config.devices
        if isinstance(d, NetDevice | BlockDevice) and d.id in ports.occupied
    }
    run.session = session
    return run, command
