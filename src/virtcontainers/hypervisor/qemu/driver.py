"""The QEMU driver: QEMU as a direct child process, driven over QMP.

:class:`~virtcontainers.hypervisor.qemu.command.QemuCommand` owns the argv
(rendered from a :class:`VMConfig`); :class:`QemuHypervisor` runs it.  The
guest console (ttyS0) is QEMU's stdout, a pipe that this process copies into
``console.log`` in the run directory, bounded in size and rate
(:mod:`virtcontainers.hypervisor.console`).  QEMU's own messages go to
``qemu.log``.

QEMU outlives the process that launched it: a pod daemon that dies leaves its
VM running, for the clean-up to kill through a pidfd
(:mod:`virtcontainers.host.orphans`).  It
runs confined (:mod:`virtcontainers.hypervisor.qemu.confine`): few capabilities,
a seccomp filter against set-id files, and its own ``-sandbox``.

A virtio-fs :class:`SharedFsDevice` is served by a virtiofsd process
(:mod:`virtcontainers.hypervisor.qemu.virtiofsd`), started before QEMU and
stopped and reaped whenever QEMU is.

The driver keeps the VM's state and hands the steps to the modules beside it:
:mod:`~virtcontainers.hypervisor.qemu.prepare` (the config checked, the command
made), :mod:`~virtcontainers.hypervisor.qemu.launch` (spawning, the monitor,
a saved state restored), :mod:`~virtcontainers.hypervisor.qemu.adopt` (a QEMU
another daemon launched), :mod:`~virtcontainers.hypervisor.qemu.running` (the
process handle, ending it, its sockets), hot-plug and saved states.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path

from virtcontainers.errors import ConfigError, HypervisorError, StateError, VMLaunchError
from virtcontainers.hypervisor.base import (
    UNPLUG_TIMEOUT,
    Capabilities,
    Lifecycle,
    VMConfig,
    VMState,
)
from virtcontainers.hypervisor.devices import (
    Device,
    SerialPortDevice,
    SharedFsDevice,
    SharedFsKind,
    moved_device,
)
from virtcontainers.hypervisor.qemu.adopt import (
    adopted_command,
    cold_devices,
    open_pidfd,
    reconnect,
)
from virtcontainers.hypervisor.qemu.command import DEFAULT_BINARY, DEFAULT_MACHINE, QemuCommand
from virtcontainers.hypervisor.qemu.hotplug import QemuHotplug
from virtcontainers.hypervisor.qemu.launch import QemuLaunch
from virtcontainers.hypervisor.qemu.prepare import check_device, prepared_command
from virtcontainers.hypervisor.qemu.running import (
    ADOPTED_EXIT_CODE,
    AdoptedQemu,
    RunningQemu,
    ask_to_quit,
    kill,
    remove_sockets,
)
from virtcontainers.hypervisor.qemu.session import QmpSession
from virtcontainers.hypervisor.qemu.state import QemuState
from virtcontainers.hypervisor.qemu.virtiofsd import (
    find_virtiofsd,
    start_virtiofsds,
    stop_virtiofsds,
    virtiofs_devices,
)
from virtcontainers.records import ProcessRef

__all__ = ["ADOPTED_EXIT_CODE", "QemuHypervisor"]

CONSOLE_LIMIT = 1 << 20
AGENT_PORT_NAME = "agent"
AGENT_DEVICE_ID = "vc-agent"


class QemuHypervisor:
    """A :class:`~virtcontainers.hypervisor.base.Hypervisor` backed by QEMU."""

    def __init__(
        self,
        binary: str = DEFAULT_BINARY,
        *,
        console_limit: int = CONSOLE_LIMIT,
        tcg_thread: str | None = None,
        virtiofsd: str | None = None,
    ) -> None:
        self._binary = binary
        self._virtiofsd = virtiofsd
        self._console_limit = max(console_limit, 4096)
        self._tcg_thread = tcg_thread
        self._life = Lifecycle()
        self._log = logging.getLogger(__name__)
        self._config: VMConfig | None = None
        self._command: QemuCommand | None = None
        self._devices: list[Device] = []
        self._run: RunningQemu | None = None
        self._exit_code: int | None = None

    # -- configuration ------------------------------------------------------

    @property
    def state(self) -> VMState:
        return self._life.state

    @property
    def config(self) -> VMConfig:
        if self._config is None:
            raise StateError(self._life.what, "read config", self._life.state.value, ["created"])
        return self._config

    async def create(self, config: VMConfig) -> None:
        """Validate *config*, resolve machine and accelerator, prepare run_dir.

        Raises ConfigError (no QEMU binary, missing kernel/initrd/device path,
        unknown machine, socket path too long) and StateError.
        """
        self._life.vm_id = config.vm_id
        self._life.require("create", VMState.NEW, VMState.CREATED, VMState.STOPPED)
        self._log = logging.getLogger(__name__).getChild(config.vm_id)
        command = prepared_command(
            config, self._binary, self._tcg_thread, self.virtiofsd_binary, self._log
        )
        self._config = config
        self._devices = list(config.devices)
        self._command = command
        self._exit_code = None
        self._life.move(VMState.CREATED)

    def virtiofsd_binary(self) -> str | None:
        """The virtiofsd this driver runs for virtio-fs devices (None: not installed)."""
        return self._virtiofsd or find_virtiofsd()

    def _check_device(self, device: Device, run_dir: Path) -> None:
        check_device(device, run_dir, self.virtiofsd_binary)

    def add_device(self, device: Device) -> None:
        """Cold-plug *device*; raises StateError after start, ConfigError if invalid."""
        self._life.require("add a device to", VMState.CREATED)
        self._check_device(device, self.config.run_dir)
        if any(d.id == device.id for d in self._devices):
            raise ConfigError("device id", f"{device.id!r} is already used in {self._life.what}")
        self._devices.append(device)

    def _all_devices(self) -> tuple[Device, ...]:
        devices = tuple(self._devices)
        if not any(isinstance(d, SerialPortDevice) and d.name == AGENT_PORT_NAME for d in devices):
            agent = SerialPortDevice(
                AGENT_DEVICE_ID, self.config.run_dir / "agent.sock", AGENT_PORT_NAME
            )
            devices += (agent,)
        return devices

    def command(self) -> QemuCommand:
        """The command that :meth:`start` runs (StateError before create)."""
        if self._command is None:
            raise StateError(self._life.what, "render the command of", "new", ["created"])
        return dataclasses.replace(self._command, devices=self._all_devices())

    def console_path(self) -> Path:
        return self.config.run_dir / "console.log"

    def relocate(self, moves: Mapping[Path, Path], vm_id: str) -> None:
        self._config = self.config.relocated(moves, vm_id)
        self._devices = [moved_device(d, moves) for d in self._devices]
        if self._command is not None:
            self._command = dataclasses.replace(self._command, config=self._config)
        self._life.vm_id = vm_id
        self._log = logging.getLogger(__name__).getChild(vm_id)

    def qemu_log_path(self) -> Path:
        """QEMU's own stderr."""
        return self.config.run_dir / "qemu.log"

    def agent_socket_path(self) -> Path:
        for d in self._all_devices():
            if isinstance(d, SerialPortDevice) and d.name == AGENT_PORT_NAME:
                return d.socket_path
        raise AssertionError("the agent port is always rendered")

    def capabilities(self) -> Capabilities:
        command = self._command
        machine = command.machine if command else DEFAULT_MACHINE
        return Capabilities(
            machine=machine,
            accelerator=command.accelerator if command else None,
            hotplug_block=command is not None and bool(self.command().port_ids()),
            hotplug_cpu=False,
            hotplug_memory=False,
            hotplug_net=command is not None and bool(self.command().port_ids()),
            hotplug_serial_port=True,
            shared_fs=SharedFsKind.VIRTIO_FS.value
            if command is not None and self.command().shared_memory
            else SharedFsKind.VIRTIO_9P.value,
            pause=True,
        )

    @property
    def pid(self) -> int | None:
        if self._run is None or self._run.exited.done():
            return None
        return self._run.proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def vcpus_running(self) -> bool:
        """As QEMU's last STOP or RESUME event said
        (:class:`~virtcontainers.hypervisor.qemu.session.RunStateListener`)."""
        run = self._run
        return (
            run is not None
            and run.session is not None
            and not run.exited.done()
            and run.session.vcpus_running
        )

    # -- lifecycle ----------------------------------------------------------

    def _virtiofs_devices(self) -> list[SharedFsDevice]:
        return virtiofs_devices(self._all_devices())

    def _remove_sockets(self) -> None:
        hotplugged = self._run.plugged.hotplugged.values() if self._run is not None else ()
        remove_sockets(self.command(), self.config.run_dir, hotplugged)

    async def start(self, timeout: float = 60) -> None:
        """Launch QEMU and connect QMP within *timeout* seconds.

        Raises VMLaunchError (QEMU missing, exited, or silent; the message
        carries the argv and the tail of qemu.log and console.log) and
        StateError.  On any failure QEMU is killed and reaped and its sockets
        removed.
        """
        self._life.require("start", VMState.CREATED)
        incoming = self.config.incoming
        try:
            state_fd = None if incoming is None else os.open(incoming, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise VMLaunchError(
                f"cannot open the saved state {incoming} for {self._life.what}: {exc}", []
            ) from exc
        try:
            await self._start(timeout, state_fd)
        finally:
            if state_fd is not None:
                os.close(state_fd)  # QEMU has its own copy, or failed

    def _launcher(self, argv: list[str]) -> QemuLaunch:
        return QemuLaunch(
            argv,
            self._life.what,
            self.config.vm_id,
            self.config.run_dir,
            qemu_log=self.qemu_log_path(),
            console_log=self.console_path(),
            console_limit=self._console_limit,
            virtiofs=self._virtiofs_devices(),
            remove_sockets=self._remove_sockets,
            log=self._log,
        )

    async def _start(self, timeout: float, state_fd: int | None) -> None:
        command = dataclasses.replace(self.command(), incoming_fd=state_fd)
        launch = self._launcher(command.argv())
        self._log.debug("launching: %s", shlex.join(launch.argv))
        self._remove_sockets()
        deadline = time.monotonic() + timeout
        virtiofsds = await start_virtiofsds(
            self.virtiofsd_binary(),
            self._virtiofs_devices(),
            self.config.run_dir,
            deadline,
            owner=self._life.what,
            log=self._log,
        )
        run = await launch.spawn(command.passed_fds(), virtiofsds)
        run.plugged.ports = command.cold_ports()
        self._run = run
        self._log.info("QEMU started, pid %d", run.proc.pid)
        try:
            run.session = await launch.connect_qmp(run, command.qmp_socket, deadline)
            if state_fd is not None:
                await launch.restore(run, run.session, self.config, command.incoming_uri, deadline)
        except BaseException:
            await kill(run)
            await self._cleanup(run)
            raise
        run.reaper = asyncio.create_task(self._reap(run))
        self._life.move(VMState.RUNNING)

    async def adopt(self, config: VMConfig, process: ProcessRef, timeout: float = 60) -> None:
        """Take over a QEMU that a previous pod daemon launched and left running:
        watch it through a pidfd and connect to its QMP socket again.

        Its console is no longer copied (the pipe died with that daemon).
        Which root ports it has and which are taken is asked of QEMU
        (``query-pci``); *config*'s NICs and disks are those the caller knows
        the VM holds, so that they can be unplugged again.  Raises
        HypervisorError when the process is gone, its monitor does not answer
        within *timeout* seconds, or its root ports are not ours.
        """
        self._life.vm_id = config.vm_id
        self._life.require("adopt", VMState.NEW)
        self._log = logging.getLogger(__name__).getChild(config.vm_id)
        pidfd = open_pidfd(process, self._life.what)
        self._config = config
        self._devices = cold_devices(config)
        command = adopted_command(config, self._binary, self._tcg_thread)
        self._command = command
        run, self._command = await reconnect(
            AdoptedQemu(process.pid, pidfd), command, self._life.what, timeout, self._log
        )
        self._run = run
        run.reaper = asyncio.create_task(self._reap(run))
        self._life.move(VMState.CREATED)
        self._life.move(VMState.RUNNING)
        session = self._session()
        session.learn_run_status(await self._query_status())
        if not session.vcpus_running:
            self._life.move(VMState.PAUSED)
        self._log.info("adopted QEMU pid %d", process.pid)

    async def _cleanup(self, run: RunningQemu) -> None:
        """After QEMU exited: stop virtiofsd, finish the console, close QMP, remove sockets."""
        try:
            for watcher in run.watchers:
                watcher.cancel()
            await stop_virtiofsds(run.virtiofsds)
            if run.console is not None:
                await asyncio.wait({run.console}, timeout=5)
                if not run.console.done():
                    run.console.cancel()
            if run.session is not None:
                await run.session.close()
        finally:
            self._remove_sockets()
            self._exit_code = run.exited.result()
            self._run = None

    async def _reap(self, run: RunningQemu) -> None:
        await asyncio.shield(run.exited)
        self._log.info("QEMU exited with code %d", run.exited.result())
        await self._cleanup(run)
        self._life.move(VMState.STOPPED)

    async def stop(self, timeout: float = 10) -> None:
        """Quit QEMU over QMP; after *timeout* s SIGTERM, 2 s later SIGKILL.

        Always reaps QEMU and removes its sockets.  A no-op when STOPPED.
        """
        if self._life.state is VMState.STOPPED:
            return
        self._life.require("stop", VMState.RUNNING, VMState.PAUSED)
        run = self._run
        assert run is not None and run.reaper is not None
        try:
            await ask_to_quit(run, timeout, self._log)
        finally:
            await kill(run)
            await asyncio.shield(run.reaper)

    async def wait(self) -> int:
        """Wait for QEMU to exit; returns its exit code (StateError before start)."""
        if self._life.state is VMState.STOPPED and self._exit_code is not None:
            return self._exit_code
        self._life.require("wait for", VMState.RUNNING, VMState.PAUSED)
        run = self._run
        assert run is not None and run.reaper is not None
        await asyncio.shield(run.reaper)
        assert self._exit_code is not None
        return self._exit_code

    def _session(self) -> QmpSession:
        run = self._run
        if run is None or run.session is None:
            raise HypervisorError(f"{self._life.what} has no monitor connection")
        return run.session

    async def _query_status(self) -> str:
        """The QMP run status (``running``, ``paused``, ...), asked of QEMU."""
        reply = await self._session().execute("query-status")
        assert isinstance(reply, dict)
        return str(reply["status"])

    async def pause(self) -> None:
        self._life.require("pause", VMState.RUNNING)
        await self._session().execute("stop")
        self._life.move(VMState.PAUSED)

    async def resume(self) -> None:
        self._life.require("resume", VMState.PAUSED)
        await self._session().execute("cont")
        self._life.move(VMState.RUNNING)

    # -- hot-plug (hotplug.py) and saved states (state.py) --------------------

    def _hotplug(self) -> QemuHotplug:
        run = self._run
        assert run is not None
        run_dir = self.config.run_dir
        return QemuHotplug(
            self._session(),
            self.command(),
            run.plugged,
            lambda device: self._check_device(device, run_dir),
        )

    async def hotplug_device(self, device: Device) -> None:
        """Attach *device* to the running VM (see :meth:`QemuHotplug.plug`).

        Raises StateError unless running or paused.
        """
        self._life.require("hot-plug a device into", VMState.RUNNING, VMState.PAUSED)
        await self._hotplug().plug(device)

    async def unplug_device(self, device_id: str, timeout: float = UNPLUG_TIMEOUT) -> None:
        """Detach a device from the running VM (see :meth:`QemuHotplug.unplug`).

        Raises StateError unless running.
        """
        self._life.require("unplug a device from", VMState.RUNNING)
        await self._hotplug().unplug(device_id, timeout)

    async def save_state(self, path: Path, timeout: float = 60) -> None:
        """Pause the VM and save its device state to *path* (see :meth:`QemuState.save`).

        Raises StateError unless running or paused.
        """
        self._life.require("save the state of", VMState.RUNNING, VMState.PAUSED)
        if self._life.state is VMState.RUNNING:
            await self.pause()
        await QemuState(self._session(), self.config).save(path, timeout)
