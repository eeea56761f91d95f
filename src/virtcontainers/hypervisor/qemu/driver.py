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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from virtcontainers.errors import (
    ConfigError,
    HypervisorError,
    StateError,
    VMLaunchError,
)
from virtcontainers.host import proc as hostproc
from virtcontainers.host.logtail import tail
from virtcontainers.hypervisor import console
from virtcontainers.hypervisor.accel import cached_host_tsc_khz, detect_accelerator
from virtcontainers.hypervisor.base import (
    OUTPUT_TAIL,
    UNPLUG_TIMEOUT,
    Capabilities,
    Lifecycle,
    VMConfig,
    VMState,
)
from virtcontainers.hypervisor.devices import (
    BlockDevice,
    Device,
    NetDevice,
    SerialPortDevice,
    SharedFsDevice,
    SharedFsKind,
    check_socket_path,
    moved_device,
    moved_path,
)
from virtcontainers.hypervisor.qemu.command import (
    DEFAULT_BINARY,
    DEFAULT_MACHINE,
    MACHINES,
    QemuCommand,
    render_device,
)
from virtcontainers.hypervisor.qemu.confine import qemu_child_setup
from virtcontainers.hypervisor.qemu.hotplug import PluggedDevices, QemuHotplug, query_root_ports
from virtcontainers.hypervisor.qemu.session import QmpSession, open_session
from virtcontainers.hypervisor.qemu.state import QemuState
from virtcontainers.hypervisor.qemu.virtiofsd import (
    Virtiofsd,
    check_virtiofs_device,
    find_virtiofsd,
    start_virtiofsds,
    stop_virtiofsds,
    virtiofs_devices,
    virtiofs_socket,
    virtiofsd_output_tail,
    watch_virtiofsd,
)
from virtcontainers.records import ProcessRef

CONSOLE_LIMIT = 1 << 20
AGENT_PORT_NAME = "agent"
AGENT_DEVICE_ID = "vc-agent"


ADOPTED_EXIT_CODE = -1
"""What an adopted QEMU's exit code reads as: it is not our child, so its
status is its reaper's (init) to collect, not ours."""


class _Process(Protocol):
    @property
    def pid(self) -> int: ...

    def kill(self) -> None: ...

    def terminate(self) -> None: ...


class _AdoptedQemu:
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
class _Running:
    """What exists only while a QEMU process does."""

    proc: _Process
    exited: asyncio.Future[int]
    console: asyncio.Task[None] | None
    """Copies the console to console.log; None for an adopted QEMU, whose console
    pipe died with the daemon that launched it."""
    reaper: asyncio.Task[None] | None = None
    session: QmpSession | None = None
    plugged: PluggedDevices = dataclasses.field(default_factory=PluggedDevices)
    virtiofsds: list[Virtiofsd] = dataclasses.field(default_factory=list)
    watchers: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


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
        self._run: _Running | None = None
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
        if shutil.which(self._binary) is None:
            raise ConfigError("qemu binary", f"{self._binary} not found; install QEMU")
        for name, path in (("kernel", config.kernel), ("initrd", config.initrd)):
            if not path.is_file():
                raise ConfigError(name, f"{path} does not exist or is not a file")
        machine = config.machine or DEFAULT_MACHINE
        if machine not in MACHINES:
            raise ConfigError("machine", f"{machine!r}: must be one of {', '.join(MACHINES)}")
        if config.accelerator is None:
            accel, reason = detect_accelerator()
            self._log.info("accelerator %s: %s", accel.value, reason)
        else:
            accel = config.accelerator
        for device in config.devices:
            self._check_device(device, config.run_dir)
        self._check_saved_state(config)
        check_socket_path("run_dir", config.run_dir / "qmp.sock")
        check_socket_path("run_dir", config.run_dir / "agent.sock")
        config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config.run_dir.chmod(0o700)
        self._config = config
        self._devices = list(config.devices)
        self._command = QemuCommand(
            config=config,
            accelerator=accel,
            machine=machine,
            devices=(),
            tsc_khz=cached_host_tsc_khz(),
            binary=self._binary,
            tcg_thread=self._tcg_thread,
        )
        self._exit_code = None
        self._life.move(VMState.CREATED)

    def virtiofsd_binary(self) -> str | None:
        """The virtiofsd this driver runs for virtio-fs devices (None: not installed)."""
        return self._virtiofsd or find_virtiofsd()

    def _check_device(self, device: Device, run_dir: Path) -> None:
        if isinstance(device, SharedFsDevice) and device.kind is SharedFsKind.VIRTIO_FS:
            check_virtiofs_device(self.virtiofsd_binary(), device, run_dir)
        device.check_host()
        render_device(device, run_dir)  # ConfigError for a device type QEMU does not know

    def _check_saved_state(self, config: VMConfig) -> None:
        file = config.memory_file
        if file is not None:
            if not file.path.parent.is_dir():
                raise ConfigError("memory_file", f"{file.path.parent} is not a directory")
            if not file.shared and not file.path.is_file():
                raise ConfigError("memory_file", f"{file.path} does not exist or is not a file")
            if not file.shared and virtiofs_devices(config.devices):
                raise ConfigError(
                    "memory_file", "virtio-fs needs shared guest RAM, not a copy-on-write file"
                )
        if config.incoming is not None and not config.incoming.is_file():
            raise ConfigError("incoming", f"{config.incoming} does not exist or is not a file")

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
        config = self.config
        self._config = dataclasses.replace(
            config,
            vm_id=vm_id,
            run_dir=moved_path(config.run_dir, moves),
            devices=tuple(moved_device(d, moves) for d in config.devices),
        )
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

    def _sockets(self) -> list[Path]:
        socks = [self.command().qmp_socket]
        socks += [virtiofs_socket(self.config.run_dir, d) for d in self._virtiofs_devices()]
        socks += [d.socket_path for d in self._all_devices() if isinstance(d, SerialPortDevice)]
        if self._run is not None:
            socks += [
                d.socket_path
                for d in self._run.plugged.hotplugged.values()
                if isinstance(d, SerialPortDevice)
            ]
        return socks

    def _remove_sockets(self) -> None:
        for sock in self._sockets():
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()

    def _output_tail(self) -> str:
        devices = self._virtiofs_devices()
        virtiofsd = virtiofsd_output_tail(self.config.run_dir, devices, OUTPUT_TAIL // 4)
        qemu = tail(self.qemu_log_path(), OUTPUT_TAIL // 2 - len(virtiofsd) // 2).strip()
        console = tail(self.console_path(), OUTPUT_TAIL - len(qemu) - len(virtiofsd)).strip()
        parts = [
            virtiofsd,
            f"[qemu] {qemu}" if qemu else "",
            f"[console] {console}" if console else "",
        ]
        return "\n".join(p for p in parts if p)

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

    async def _start(self, timeout: float, state_fd: int | None) -> None:
        command = dataclasses.replace(self.command(), incoming_fd=state_fd)
        argv = command.argv()
        self._log.debug("launching: %s", shlex.join(argv))
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
        run = await self._launch(argv, command.passed_fds(), virtiofsds)
        run.plugged.ports = command.cold_ports()
        self._run = run
        self._log.info("QEMU started, pid %d", run.proc.pid)
        try:
            run.session = await self._connect_qmp(run, command.qmp_socket, deadline, argv)
            if state_fd is not None:
                await self._restore(run, run.session, command, deadline, argv)
        except BaseException:
            await self._kill(run)
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
        pidfd = hostproc.pidfd(process)
        if pidfd is None:
            raise HypervisorError(f"{self._life.what}: QEMU (pid {process.pid}) is gone")
        self._config = config
        # NICs and disks sit in root ports, as hot-plugged ones do: none is
        # rendered as cold-plugged, which would count a root port of its own.
        self._devices = [d for d in config.devices if not isinstance(d, NetDevice | BlockDevice)]
        self._command = QemuCommand(
            config=config,
            accelerator=config.accelerator or detect_accelerator()[0],
            machine=config.machine or DEFAULT_MACHINE,
            devices=(),
            tsc_khz=cached_host_tsc_khz(),
            binary=self._binary,
            tcg_thread=self._tcg_thread,
        )
        adopted = _AdoptedQemu(process.pid, pidfd)
        run = _Running(proc=adopted, exited=adopted.watch(), console=None)
        try:
            session = await open_session(
                self._command.qmp_socket,
                config.vm_id,
                self._life.what,
                run.exited,
                timeout,
                self._log,
            )
            if session is None:
                raise HypervisorError(
                    f"{self._life.what}: QEMU's monitor did not answer in {timeout:.0f}s"
                )
            ports = await query_root_ports(session)
        except BaseException:
            adopted.forget()
            raise
        self._command = dataclasses.replace(
            self._command, config=dataclasses.replace(config, hotplug_ports=ports.count)
        )
        run.plugged.ports = ports.occupied
        run.plugged.hotplugged = {
            d.id: d
            for d in config.devices
            if isinstance(d, NetDevice | BlockDevice) and d.id in ports.occupied
        }
        self._run = run
        run.session = session
        run.reaper = asyncio.create_task(self._reap(run))
        self._life.move(VMState.CREATED)
        self._life.move(VMState.RUNNING)
        session.learn_run_status(await self._query_status())
        if not session.vcpus_running:
            self._life.move(VMState.PAUSED)
        self._log.info("adopted QEMU pid %d", process.pid)

    async def _launch(
        self, argv: list[str], fds: tuple[int, ...], virtiofsds: list[Virtiofsd]
    ) -> _Running:
        """Spawn QEMU, copy its console, and kill it if a virtiofsd dies under it.

        Raises VMLaunchError when QEMU cannot be executed; *virtiofsds* are
        stopped and the sockets removed on any failure.
        """
        try:
            with self.qemu_log_path().open("wb") as stderr:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                    preexec_fn=qemu_child_setup(),
                    pass_fds=fds,
                )
        except BaseException as exc:
            await stop_virtiofsds(virtiofsds)
            self._remove_sockets()
            if isinstance(exc, OSError):
                raise VMLaunchError(
                    f"cannot execute {argv[0]} for {self._life.what}: {exc}", argv
                ) from exc
            raise
        assert proc.stdout is not None
        run = _Running(
            proc=proc,
            exited=asyncio.ensure_future(proc.wait()),
            console=asyncio.create_task(
                console.pump(
                    proc.stdout,
                    self.console_path(),
                    self._console_limit,
                    console.RateLimit(console.CONSOLE_RATE, console.CONSOLE_BURST),
                )
            ),
            virtiofsds=virtiofsds,
        )
        run.watchers = [
            asyncio.create_task(watch_virtiofsd(d, proc, run.exited, self._log)) for d in virtiofsds
        ]
        return run

    async def _connect_qmp(
        self, run: _Running, sock: Path, deadline: float, argv: list[str]
    ) -> QmpSession:
        while True:
            if run.exited.done():
                raise await self._launch_error(
                    run,
                    argv,
                    f"QEMU for {self._life.what} exited with code {run.exited.result()} "
                    "before its monitor answered; see the output below",
                )
            if sock.exists():
                remaining = max(0.1, deadline - time.monotonic())
                session = await open_session(
                    sock, self.config.vm_id, self._life.what, run.exited, remaining, self._log
                )
                if session is not None:
                    return session
            if time.monotonic() >= deadline:
                raise await self._launch_error(
                    run,
                    argv,
                    f"QEMU for {self._life.what} did not answer on {sock} in time; "
                    "the host may be overloaded",
                )
            await asyncio.wait({run.exited}, timeout=0.02)

    async def _restore(
        self,
        run: _Running,
        session: QmpSession,
        command: QemuCommand,
        deadline: float,
        argv: list[str],
    ) -> None:
        """Load the saved state that QEMU was launched to resume, and run it."""
        state = QemuState(session, self.config)
        await state.set_ignore_shared()
        await session.execute("migrate-incoming", {"uri": command.incoming_uri})
        failure = await state.await_restore(deadline)
        if failure is not None:
            raise await self._launch_error(run, argv, failure)

    async def _launch_error(self, run: _Running, argv: list[str], message: str) -> VMLaunchError:
        """The error of a launch that failed, with the end of the VM's output
        (all of it once QEMU has exited, when its console pipe drains)."""
        if run.exited.done() and run.console is not None:
            await asyncio.wait({run.console}, timeout=1)
        return VMLaunchError(message, argv, self._output_tail())

    async def _kill(self, run: _Running) -> None:
        """SIGKILL QEMU (if alive) and reap it."""
        if not run.exited.done():
            with contextlib.suppress(ProcessLookupError):
                run.proc.kill()
        await asyncio.shield(run.exited)

    async def _cleanup(self, run: _Running) -> None:
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

    async def _reap(self, run: _Running) -> None:
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
            if run.session is not None and not run.exited.done():
                try:
                    await asyncio.wait_for(run.session.execute("quit"), timeout)
                except (HypervisorError, TimeoutError) as exc:
                    self._log.debug("QMP quit: %s", exc)
            await asyncio.wait({run.exited}, timeout=timeout)
            if not run.exited.done():
                self._log.warning("QEMU ignored quit for %.0f s; sending SIGTERM", timeout)
                with contextlib.suppress(ProcessLookupError):
                    run.proc.terminate()
                await asyncio.wait({run.exited}, timeout=2)
        finally:
            await self._kill(run)
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
