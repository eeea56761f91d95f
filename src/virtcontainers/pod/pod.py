"""A running pod, as its daemon holds it: VM, agent, shared files, containers.

The Pod composes a :class:`Hypervisor`, an :class:`Agent` and the pod's
:class:`Store` record, and writes the record on every state transition.
Every failure path unwinds what was set up: the VM is stopped, the agent
connection closed, relays closed, and bind mounts removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from virtcontainers import spec
from virtcontainers.agent.base import Agent, StdioStreams, Stream
from virtcontainers.agent.messages import OciResources
from virtcontainers.agent.results import (
    ContainerStats,
    ExitStatus,
    GuestTable,
    KeptProcess,
    ProcessInfo,
)
from virtcontainers.config import Cmd, ContainerConfig
from virtcontainers.errors import (
    AgentError,
    DaemonError,
    ExistsError,
    HypervisorError,
    NotFoundError,
    StateError,
    VcError,
)
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cleanup import release_run_files
from virtcontainers.hypervisor.base import Hypervisor
from virtcontainers.hypervisor.devices import Device
from virtcontainers.ids import validate_id
from virtcontainers.limits import Limits
from virtcontainers.pod.boot import VM_EXIT_GRACE, PodBoot
from virtcontainers.pod.container import Container
from virtcontainers.pod.eventlog import EventLog, RateLimitedLog
from virtcontainers.pod.interfaces import PodInterfaces
from virtcontainers.pod.nics import PodNics
from virtcontainers.pod.portforward import LoopbackForwarder
from virtcontainers.pod.process import GuestProcess, ProcessIO
from virtcontainers.pod.reattach import GUEST_STATES, PodReattach, kept_processes
from virtcontainers.pod.sinks import ContainerLog
from virtcontainers.pod.vm import PodVM
from virtcontainers.pod.volumes import PodVolumes
from virtcontainers.records import KILLED, PodRecord, end_with_vm
from virtcontainers.states import ContainerState, PodState
from virtcontainers.status import InterfaceStatus
from virtcontainers.stdio import Stdio
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.store import PodPaths, Store

SHUTDOWN_TIMEOUT = 5.0
LIVE_STATES = (ContainerState.RUNNING, ContainerState.PAUSED)


class Pod:
    """One pod's VM and containers, driven by its daemon (asyncio)."""

    def __init__(
        self, store: Store, record: PodRecord, hypervisor: Hypervisor, agent: Agent
    ) -> None:
        self.store = store
        self.record = record
        self.id = record.id
        self.config = record.config
        self.paths: PodPaths = store.paths(self.id)
        self.log = logging.getLogger(__name__).getChild(self.id)
        self.hypervisor = hypervisor
        self.agent = agent
        self.shared = SharedDir(self.paths, self.config.resources.layers_mib)
        self.network = PodNics(self.paths)
        self.events = EventLog()
        self.guest_log = RateLimitedLog(self.log)
        self.vm = PodVM(self.id, hypervisor, agent, self.log)
        self.interfaces = PodInterfaces(self.vm, self.config.netns, self.network, self._require)
        self.volumes = PodVolumes(self.vm)
        self.containers = {
            cid: Container.from_record(entry) for cid, entry in record.containers.items()
        }
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"io-{self.id}")
        self.stopping = False
        self.stopped = asyncio.Event()
        self._watchers: set[asyncio.Task[None]] = set()
        self.guest_execs: dict[str, GuestProcess] = {}
        self.forwarder: LoopbackForwarder | None = None
        self._container_locks: dict[str, asyncio.Lock] = {}
        self._guest_exec_numbers = itertools.count(1)
        self.agent.on_event(self._on_agent_event)

    # --- record -------------------------------------------------------------------

    @property
    def state(self) -> PodState:
        return self.record.state

    def persist(self) -> None:
        """Write the record, with the containers' and the VM's current state."""
        self.record.containers = {cid: c.to_record() for cid, c in self.containers.items()}
        pid = self.hypervisor.pid
        if pid is None:
            self.record.vm = None
        elif self.record.vm is None or self.record.vm.pid != pid:
            self.record.vm = hostproc.of(pid)
        self.record.nics, self.record.next_nic = (
            self.network.records() if pid is not None else ([], 0)
        )
        self.store.save(self.record)

    def _save(self, undone: str) -> None:
        """Persist, or say that the record could not be saved and what was undone."""
        try:
            self.persist()
        except OSError as exc:
            raise DaemonError(
                f"pod {self.id!r}: cannot save its record in {self.paths.state} "
                f"({exc.strerror}): {undone}; free space under the run root and try again"
            ) from exc

    def _move_to(self, target: PodState) -> None:
        self.record.state = self.state.moved_to(self.id, target)
        self.persist()

    @contextlib.asynccontextmanager
    async def _exclusive(self, container_id: str) -> AsyncIterator[None]:
        """One change at a time to a container: a create, start, stop, pause or
        delete that races another on the same container waits for it."""
        lock = self._container_locks.setdefault(container_id, asyncio.Lock())
        async with lock:
            yield

    def container(self, container_id: str) -> Container:
        validate_id("container", container_id)
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFoundError("container", container_id, f"in pod {self.id!r}") from None

    # --- pod lifecycle --------------------------------------------------------------

    async def start(self, standby: str | None = None) -> None:
        """Boot the VM, connect the agent, create and start the pod's containers.

        *standby*: the VM runs already, a clone of this template taken from
        the pool (:meth:`~virtcontainers.pod.boot.PodBoot.boot`)."""
        self.state.moved_to(self.id, PodState.RUNNING)
        self.log.info("starting pod" if standby is None else "starting pod from the pool")
        try:
            await self._boot().boot(standby)
            await self._forward_loopback()
            self._spawn(self._watch_vm())
            # Nothing waits for the details (the agent runs `crun --version` for them,
            # ≈0.2 s under TCG): they are recorded when they arrive.
            self._spawn(self._fetch_details())
            for container in self.containers.values():
                if container.state is not ContainerState.CREATED:
                    container.move_to(ContainerState.CREATED)
                container.exit = None
                container.logged = True
                await self._create_in_guest(container, None)
                await self._start_in_guest(container)
        except BaseException:
            self.log.exception("pod start failed; cleaning up")
            await self._teardown()
            self.persist()
            raise
        self._move_to(PodState.RUNNING)
        self.events.emit("boot", step="pod running")

    async def _forward_loopback(self) -> None:
        """Listen for the namespace's loopback connections; the table that
        redirects them is made anew (a dead daemon's pointed at its listener)."""
        if self.config.forward_loopback and self.config.netns is not None:
            self.forwarder = await LoopbackForwarder.start(
                self.agent, self.config.netns, self.id, self.log
            )

    def _boot(self) -> PodBoot:
        return PodBoot(
            self.vm,
            self.config,
            self.record.image,
            paths=self.paths,
            shared=self.shared,
            nics=self.network,
            events=self.events,
            store_root=self.store.root,
            vm_started=self._vm_started,
        )

    def _vm_started(self, template: str | None) -> None:
        """Record the VM at once: if the daemon dies before the agent answers,
        whoever cleans the pod up finds the VM to kill."""
        self.record.template = template
        self.record.started_at = time.time()
        self.persist()

    async def _fetch_details(self) -> None:
        try:
            self.record.guest = await self.agent.guest_details()
        except AgentError as exc:
            self.log.warning("guest details: %s", exc)
            return
        self.log.info("guest: %s", self.record.guest)
        if not self.stopping:
            self.persist()

    async def reattach(self) -> None:
        """Serve the pod again after its daemon died, its VM still running: adopt
        the VM, reconnect the agent, and rebuild the containers and processes
        from the record and what the guest kept (:mod:`virtcontainers.pod.reattach`).

        Exit statuses the guest kept are reported, and output it held is
        delivered: to a container's log, or to the first caller that attaches.
        """
        self.state.require(self.id, "reattach to", PodState.RUNNING, PodState.PAUSED)
        if self.record.vm is None:
            raise StateError(f"pod {self.id!r}", "reattach to", "without a VM", ["with a VM"])
        self.log.info("reattaching to VM %d", self.record.vm.pid)
        try:
            devices: list[Device] = []
            if self.config.netns is not None:
                devices += await self.network.restore(
                    self.id, self.record.nics, self.record.next_nic
                )
            devices += self.volumes.restore(c.config for c in self.containers.values())
            reattach = PodReattach(
                self.vm, self.record.image, self.paths, self.record.vm, self.events, devices
            )
            table = await reattach.reattach()
            self._spawn(self._watch_vm())
            await self._take_over(table)
            await self._forward_loopback()
            if self.state is PodState.PAUSED:
                await self.hypervisor.pause()
        except BaseException:
            self.log.exception("reattach failed; cleaning up")
            await self._teardown()
            raise
        self.persist()
        self.events.emit("reattach", step="serving")

    async def _take_over(self, table: GuestTable) -> None:
        kept = kept_processes(table, set(self.containers))
        resumed = await self.agent.resume_output([s for p in kept for s in p.streams])
        for container in self.containers.values():
            status = GUEST_STATES.get(table.containers.get(container.id, ""))
            if status is None:
                self.log.warning("container %s is gone from the guest", container.id)
                end_with_vm([container])
                continue
            container.in_guest = True
            container.state = status
        for process in kept:
            logged = process.exec_id is None and self.containers[str(process.container_id)].logged
            io = self._resumed_io(process, resumed, logged)
            guest_process = GuestProcess(process.container_id, process.exec_id, io, pid=process.pid)
            if process.container_id is None:
                self.guest_execs[str(process.exec_id)] = guest_process
                self._spawn(self._reap(guest_process))
                continue
            container = self.containers[process.container_id]
            if process.exec_id is None:
                container.init = guest_process
            else:
                container.execs[process.exec_id] = guest_process
            self._spawn(self._watch_process(container, guest_process))

    def _resumed_io(
        self, process: KeptProcess, resumed: Mapping[int, Stream], logged: bool
    ) -> ProcessIO:
        """The relay of a process taken over: a logged container's output goes
        to its log again; any other output waits in the guest for an attach."""
        outputs = {
            name: resumed[stream_id]
            for name, stream_id in (("stdout", process.stdout), ("stderr", process.stderr))
            if stream_id is not None and stream_id in resumed
        }
        log = None
        sinks = Stdio()
        if logged and outputs and process.container_id is not None:
            log = self._log(process.container_id)
            sinks = log.stdio()
        io = ProcessIO.resumed(self.agent, self.executor, outputs, sinks, log)
        io.start()
        return io

    async def _watch_vm(self) -> None:
        code = await self.hypervisor.wait()
        if self.stopping:
            return
        self.log.error("VM exited unexpectedly with code %s", code)
        self.record.error = (
            f"the VM exited unexpectedly (code {code}); its console is in {self.paths.console}"
        )
        await self.stop()

    async def stop(self) -> None:
        """Shut the VM down; the pod's containers end with it (exit 137)."""
        if self.stopping:  # a stop (asked, or the VM's death) is under way: join it
            await self.stopped.wait()
            return
        self.state.require(self.id, "stop", PodState.RUNNING, PodState.PAUSED)
        self.stopping = True
        if self.state is PodState.PAUSED:
            with contextlib.suppress(VcError):
                await self.hypervisor.resume()
        with contextlib.suppress(VcError, asyncio.TimeoutError, OSError):
            await asyncio.wait_for(self.agent.shutdown(), SHUTDOWN_TIMEOUT)
        await self._teardown()
        self._move_to(PodState.STOPPED)
        self.events.emit("stopped", error=self.record.error)
        self.stopped.set()

    async def _teardown(self) -> None:
        self.stopping = True
        if self.forwarder is not None:
            try:
                await self.forwarder.close()
            except VcError as exc:
                self.log.warning("ending port forwarding: %s", exc)
            self.forwarder = None
        try:
            await self.hypervisor.stop()
        except VcError as exc:
            self.log.warning("stopping the VM: %s", exc)
        self.volumes.release_claims()
        try:
            await self.agent.close()
        except (VcError, OSError) as exc:
            self.log.warning("closing the agent connection: %s", exc)
        for process in self.guest_execs.values():
            await self._abandon(process)
        for container in self.containers.values():
            await self._end_processes(container)
            container.in_guest = False
        end_with_vm(self.containers.values())
        for task in list(self._watchers):
            if task is not asyncio.current_task():
                task.cancel()
        try:
            release_run_files(self.paths, keep_socket=True)  # the daemon still answers on it
        except VcError as exc:
            self.log.warning("releasing the pod's files: %s", exc)

    async def _end_processes(self, container: Container) -> None:
        for process in (container.init, *container.execs.values()):
            if process is not None:
                await self._abandon(process)

    async def _abandon(self, process: GuestProcess) -> None:
        """Release a process's waiters and relays without its agent (VM gone or going)."""
        if process.status is None:
            process.status = ExitStatus(
                KILLED.exit_code, KILLED.signal, self.record.error or "the pod was stopped"
            )
        process.done.set()
        await process.io.close()

    async def pause(self) -> None:
        self._require("pause", PodState.RUNNING)
        await self.hypervisor.pause()
        self._move_to(PodState.PAUSED)
        self.events.emit("paused")

    async def resume(self) -> None:
        self._require("resume", PodState.PAUSED)
        await self.hypervisor.resume()
        self._move_to(PodState.RUNNING)
        self.events.emit("resumed")

    def _require_running(self, operation: str) -> None:
        self._require(operation, PodState.RUNNING)

    def _require_awake(self, operation: str) -> None:
        """The VM runs: one frozen behind the pod's back (QEMU stopped by a
        signal, or paused by another monitor client or by QEMU itself) is
        named as the frozen part, where a call into its guest would only time
        out.  Neither check waits for the VM: a stopped process shows in
        /proc, a pause in the run state the driver keeps from QEMU's events.
        The pod's own pause never gets here (the pod is then paused, not
        running)."""
        pid = self.hypervisor.pid
        vm = self.record.vm
        if pid is not None and vm is not None and vm.pid == pid and hostproc.stopped(vm):
            raise HypervisorError(
                f"cannot {operation} pod {self.id!r}: its VM's process (pid {pid}) is "
                f"stopped (by SIGSTOP or a debugger); continue it (kill -CONT {pid})"
            )
        if self.hypervisor.running and not self.hypervisor.vcpus_running:
            raise HypervisorError(
                f"cannot {operation} pod {self.id!r}: its VM is paused, frozen outside "
                "virtcontainers (by QMP stop, say); resume it the same way (QMP cont)"
            )

    def _require(self, operation: str, *allowed: PodState) -> None:
        """The pod is in one of ``allowed``, and not on its way down."""
        if self.stopping:
            what = f"pod {self.id!r}"
            raise StateError(what, operation, "stopping", [s.value for s in allowed])
        self.state.require(self.id, operation, *allowed)

    # --- network (interfaces.py) ------------------------------------------------------

    async def add_interface(self, name: str) -> InterfaceStatus:
        try:
            return await self.interfaces.add(name)
        finally:
            self.persist()  # which NIC carries what, for a daemon that reattaches

    async def remove_interface(self, name: str) -> None:
        try:
            await self.interfaces.remove(name)
        finally:
            self.persist()

    def list_interfaces(self) -> list[InterfaceStatus]:
        return self.interfaces.list()

    # --- containers ---------------------------------------------------------------------

    def _log(self, container_id: str) -> ContainerLog:
        cap = self.config.resources.log_mib << 20
        return ContainerLog(self.paths.root / "logs", container_id, cap, self.executor)

    async def create_container(self, config: ContainerConfig, stdio: Stdio | None) -> Container:
        async with self._exclusive(config.id):
            self._require_running("create a container in")
            if config.id in self.containers:
                raise ExistsError("container", config.id)
            resources = self.config.resources
            config.limits.check_fits(config.id, resources.vcpus, resources.memory_mib)
            container = Container(config, logged=stdio is None)
            self.containers[config.id] = container
            try:
                await self._create_in_guest(container, stdio)
            except BaseException:
                self.containers.pop(config.id, None)
                raise
            try:
                self._save(f"container {config.id!r} was not created")
            except DaemonError:
                # Undone, or the next record saved would show a container whose
                # create was answered with an error.
                await self._undo_create(container)
                raise
            return container

    async def _undo_create(self, container: Container) -> None:
        try:
            await self._discard(container)
        except (VcError, OSError) as exc:
            self.log.warning("undoing the create of container %s: %s", container.id, exc)
            self.containers.pop(container.id, None)

    async def _create_in_guest(self, container: Container, stdio: Stdio | None) -> None:
        """Without ``stdio`` the container's output goes to its log."""
        log = None
        if stdio is None:
            log = self._log(container.id)
            stdio = log.stdio()
        io = ProcessIO(self.agent, stdio, self.executor, log=log)
        attached = False
        try:
            self.shared.share(container.config)
            await self.volumes.attach(container.config)  # undoes itself when it fails
            attached = True
            bundle = spec.container_spec(
                container.config, self.config.hostname or self.id, self._guest_pid
            )
            streams = io.open()
            container.pid = await self.agent.create_container(container.id, bundle, streams)
        except BaseException:
            await io.close()
            if attached:
                await self.volumes.detach(container.config)
            self.shared.unshare(container.id)
            raise
        container.in_guest = True
        io.start()
        container.init = GuestProcess(container.id, None, io, pid=container.pid)
        self._spawn(self._watch_process(container, container.init))

    def _guest_pid(self, container_id: str) -> int:
        """The guest pid of a container whose namespaces another one joins."""
        other = self.container(container_id)
        if not other.in_guest or other.pid is None or other.state is ContainerState.STOPPED:
            raise StateError(
                f"container {container_id!r}", "share namespaces of", other.state.value, ["running"]
            )
        return other.pid

    async def start_container(self, container_id: str) -> None:
        async with self._exclusive(container_id):
            self._require_running("start a container in")
            container = self.container(container_id)
            container.state.require(container_id, "start", ContainerState.CREATED)
            # Recorded before it is done: a record that cannot be saved leaves the
            # container unstarted, as its status says.
            container.move_to(ContainerState.RUNNING)
            try:
                self._save(f"container {container_id!r} was not started")
                await self.agent.start_container(container_id)
            except BaseException:
                if container.state is ContainerState.RUNNING:
                    container.state = ContainerState.CREATED
                with contextlib.suppress(OSError):
                    self.persist()
                raise
            self.events.emit("start", container_id)

    async def _start_in_guest(self, container: Container) -> None:
        await self.agent.start_container(container.id)
        if container.state is ContainerState.CREATED:
            container.move_to(ContainerState.RUNNING)
        self.events.emit("start", container.id)

    async def _reap(self, process: GuestProcess) -> None:
        """Wait for the process's exit and the end of its output; record its status."""
        try:
            status = await self.agent.wait_process(process.container_id, process.exec_id)
        except (AgentError, OSError) as exc:
            name = f"{process.container_id or 'vm'}/{process.exec_id or 'init'}"
            self.log.warning("lost %s: %s", name, exc)
            # A dying VM drops the agent first: let the teardown say why it ended.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.done.wait(), VM_EXIT_GRACE)
            if process.done.is_set():
                return
            status = ExitStatus(KILLED.exit_code, KILLED.signal, f"the agent was lost: {exc}")
        await process.io.drained()
        await process.io.close()
        process.status = status
        process.done.set()

    async def _watch_process(self, container: Container, process: GuestProcess) -> None:
        await self._reap(process)
        if process.exec_id is None and not self.stopping:
            container.exit = process.status
            if container.state is not ContainerState.STOPPED:
                container.move_to(ContainerState.STOPPED)
            self.persist()
            status = process.status
            if status is not None:
                self.events.emit(
                    "exit", container.id, exit_code=status.exit_code, signal=status.signal
                )
        container.forget_finished_execs()

    async def stop_container(self, container_id: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to every process after ``timeout`` seconds."""
        async with self._exclusive(container_id):
            self._require_running("stop a container in")
            container = self.container(container_id)
            container.state.require(container_id, "stop", ContainerState.CREATED, *LIVE_STATES)
            if container.state is ContainerState.PAUSED:
                await self.agent.resume_container(container_id)
                container.move_to(ContainerState.RUNNING)
                self.events.emit("resumed", container_id)
            init = container.process(None)
            if init.status is None:
                with contextlib.suppress(AgentError):
                    await self.agent.signal_process(container_id, None, signal.SIGTERM)
                try:
                    await asyncio.wait_for(init.done.wait(), timeout)
                except TimeoutError:
                    with contextlib.suppress(AgentError):
                        await self.agent.signal_process(container_id, None, signal.SIGKILL, True)
                    await init.done.wait()
            container.exit = init.status
            if container.state is not ContainerState.STOPPED:
                container.move_to(ContainerState.STOPPED)
            self.persist()

    async def delete_container(self, container_id: str) -> None:
        async with self._exclusive(container_id):
            container = self.container(container_id)
            container.state.require(
                container_id, "delete", ContainerState.CREATED, ContainerState.STOPPED
            )
            await self._discard(container)
            self.persist()

    async def _discard(self, container: Container) -> None:
        """Remove a container from the guest and the host, not from the record."""
        if container.in_guest:
            await self.agent.remove_container(container.id)
            container.in_guest = False
        await self._end_processes(container)
        await self.volumes.detach(container.config)
        self.shared.unshare(container.id)
        self.shared.remove_layer(container.id)
        del self.containers[container.id]

    async def pause_container(self, container_id: str) -> None:
        await self._set_paused(container_id, True)

    async def resume_container(self, container_id: str) -> None:
        await self._set_paused(container_id, False)

    async def _set_paused(self, container_id: str, paused: bool) -> None:
        async with self._exclusive(container_id):
            container = self.container(container_id)
            if paused:
                container.state.require(container_id, "pause", ContainerState.RUNNING)
                await self.agent.pause_container(container_id)
                container.move_to(ContainerState.PAUSED)
                self.events.emit("paused", container_id)
            else:
                container.state.require(container_id, "resume", ContainerState.PAUSED)
                await self.agent.resume_container(container_id)
                container.move_to(ContainerState.RUNNING)
                self.events.emit("resumed", container_id)
            self.persist()

    # --- processes ----------------------------------------------------------------------

    async def exec_process(
        self, container_id: str, cmd: Cmd, stdio: Stdio, exec_id: str | None = None
    ) -> GuestProcess:
        self._require_running("exec in")
        container = self.container(container_id)
        container.state.require(container_id, "exec in", ContainerState.RUNNING)
        self._require_awake("exec in")
        exec_id = validate_id("exec", exec_id) if exec_id else container.new_exec_id()
        if exec_id in container.execs:
            raise ExistsError("exec", f"{container_id}/{exec_id}")
        process_spec = spec.process_spec(container.config, cmd)
        io, pid = await self._launch(
            ProcessIO(self.agent, stdio, self.executor),
            lambda streams: self.agent.exec_process(container_id, exec_id, process_spec, streams),
        )
        process = GuestProcess(container_id, exec_id, io, pid=pid)
        container.execs[exec_id] = process
        self._spawn(self._watch_process(container, process))
        return process

    async def exec_guest(self, cmd: Cmd, stdio: Stdio) -> GuestProcess:
        """Run ``cmd`` in the VM itself, outside every container."""
        self._require_running("enter")
        self._require_awake("enter")
        exec_id = f"guest-{next(self._guest_exec_numbers)}"
        io, pid = await self._launch(
            ProcessIO(self.agent, stdio, self.executor),
            lambda streams: self.agent.exec_guest(exec_id, spec.oci_process(cmd), streams),
        )
        process = GuestProcess(None, exec_id, io, pid=pid)
        self.guest_execs[exec_id] = process
        self._spawn(self._reap(process))
        return process

    async def _launch(
        self, io: ProcessIO, start: Callable[[StdioStreams], Awaitable[int]]
    ) -> tuple[ProcessIO, int]:
        """Start a process in the guest with its stdio relayed; returns the relay and pid."""
        try:
            pid = await start(io.open())
        except BaseException:
            await io.close()
            raise
        io.start()
        return io, pid

    def process(self, container_id: str | None, exec_id: str | None) -> GuestProcess:
        if container_id is not None:
            return self.container(container_id).process(exec_id)
        if exec_id is None or exec_id not in self.guest_execs:
            raise NotFoundError("process", f"{self.id}/{exec_id}", "in the pod's VM")
        return self.guest_execs[exec_id]

    async def signal_process(
        self, container_id: str | None, exec_id: str | None, signum: int, all_processes: bool
    ) -> None:
        self._require_running("signal a process in")
        process = self.process(container_id, exec_id)
        if process.status is not None:
            raise StateError(
                f"process {container_id}/{exec_id or 'init'}", "signal", "stopped", ["running"]
            )
        await self.agent.signal_process(container_id, exec_id, signum, all_processes)

    async def wait_process(self, container_id: str | None, exec_id: str | None) -> ExitStatus:
        if container_id is not None:
            container = self.container(container_id)
            if exec_id is None and container.init is None and container.exit is not None:
                return container.exit
        return await self.process(container_id, exec_id).wait()

    def attach(self, container_id: str | None, exec_id: str | None, stdio: Stdio) -> None:
        """Copy a running process's output to more fds, from now on.

        On success the output fds are the process's; on failure they stay the caller's.
        """
        process = self.process(container_id, exec_id)
        if process.status is not None:
            name = f"process {container_id}/{exec_id or 'init'}"
            raise StateError(name, "attach to", "stopped", ["running"])
        if stdio.stdin is not None:
            os.close(stdio.stdin)
        process.io.attach(stdio.stdout, stdio.stderr)

    async def resize_terminal(
        self, container_id: str | None, exec_id: str | None, rows: int, cols: int
    ) -> None:
        self._require_running("resize a terminal in")
        self.process(container_id, exec_id)
        await self.agent.resize_terminal(container_id, exec_id, rows, cols)

    async def list_processes(self, container_id: str) -> list[ProcessInfo]:
        self._require_running("list processes in")
        self.container(container_id).state.require(container_id, "list processes of", *LIVE_STATES)
        return await self.agent.list_processes(container_id)

    async def update_container(self, container_id: str, limits: Limits) -> None:
        """Change a container's limits, in the guest and in its record.

        The fields of ``limits`` that are None stay as they were.
        """
        async with self._exclusive(container_id):
            self._require_running("update a container in")
            container = self.container(container_id)
            container.state.require(container_id, "update", ContainerState.CREATED, *LIVE_STATES)
            merged = container.config.limits.merged(limits)
            resources = self.config.resources
            merged.check_fits(container_id, resources.vcpus, resources.memory_mib)
            oci: dict[str, Any] = {}
            limits.apply_to(oci)
            await self.agent.update_container(container_id, cast(OciResources, oci))
            container.config = dataclasses.replace(container.config, limits=merged)
            self.persist()

    async def container_stats(self, container_id: str) -> ContainerStats:
        self._require_running("read the usage of a container in")
        self.container(container_id).state.require(
            container_id, "read the usage of", ContainerState.CREATED, *LIVE_STATES
        )
        return await self.agent.container_stats(container_id)

    # --- plumbing -----------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        task.add_done_callback(self._report_crash)

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed", exc_info=task.exception())

    def _on_agent_event(self, name: str, fields: Mapping[str, object]) -> None:
        if name == "oom":
            container = self.containers.get(str(fields.get("container_id")))
            if container is not None:
                container.oom_killed = True
                self.events.emit("oom", container.id)
                self.guest_log.warning("oom", "container %s: OOM kill", container.id)
