"""A pod's containers from create to delete: made in the guest, started,
stopped, paused and resumed, updated, removed again, and the reaping of the
processes they run.

Used by :class:`virtcontainers.pod.pod.Pod`, which hands over its VM, what the
containers are made of (its config, shared directory, volumes, log folder)
and :class:`PodHooks`, the few things that stay the Pod's own: its record, its
state and its background tasks.  One change at a time to a container: each
takes that container's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from virtcontainers import spec
from virtcontainers.agent.messages import OciResources
from virtcontainers.agent.results import ContainerStats, ExitStatus
from virtcontainers.config import ContainerConfig, PodConfig
from virtcontainers.errors import (
    AgentError,
    DaemonError,
    ExistsError,
    NotFoundError,
    StateError,
    VcError,
)
from virtcontainers.ids import validate_id
from virtcontainers.limits import Limits
from virtcontainers.pod.boot import VM_EXIT_GRACE
from virtcontainers.pod.container import Container
from virtcontainers.pod.eventlog import EventLog
from virtcontainers.pod.interfaces import StateCheck
from virtcontainers.pod.process import GuestProcess, ProcessIO
from virtcontainers.pod.sinks import ContainerLog
from virtcontainers.pod.vm import PodVM
from virtcontainers.pod.volumes import PodVolumes
from virtcontainers.records import KILLED
from virtcontainers.states import ContainerState, PodState
from virtcontainers.stdio import Stdio
from virtcontainers.storage.shareddir import SharedDir

LIVE_STATES = (ContainerState.RUNNING, ContainerState.PAUSED)


@dataclasses.dataclass(frozen=True)
class PodHooks:
    """What a pod's containers and processes ask of the Pod that holds them."""

    persist: Callable[[], None]
    """Write the pod's record."""
    save: Callable[[str], None]
    """Write it, or raise DaemonError saying that it could not and what was undone."""
    require: StateCheck
    """The pod is in one of the states allowed, and not on its way down."""
    stopping: Callable[[], bool]
    """Whether the pod is on its way down."""
    spawn: Callable[[Awaitable[None]], None]
    """Run a background task that the pod's teardown cancels."""
    error: Callable[[], str | None]
    """Why the pod ended, if it ended of itself: what a process it took with it ends with."""


async def reap(vm: PodVM, process: GuestProcess) -> None:
    """Wait for the process's exit and the end of its output; record its status."""
    try:
        status = await vm.agent.wait_process(process.container_id, process.exec_id)
    except (AgentError, OSError) as exc:
        name = f"{process.container_id or 'vm'}/{process.exec_id or 'init'}"
        vm.log.warning("lost %s: %s", name, exc)
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


async def abandon(process: GuestProcess, error: str | None) -> None:
    """Release a process's waiters and relays without its agent (VM gone or going)."""
    if process.status is None:
        process.status = ExitStatus(KILLED.exit_code, KILLED.signal, error or "the pod was stopped")
    process.done.set()
    await process.io.close()


class PodContainers:
    """The containers of one pod, kept in the Pod's ``containers``."""

    def __init__(
        self,
        vm: PodVM,
        containers: dict[str, Container],
        config: PodConfig,
        *,
        logs: Path,
        shared: SharedDir,
        volumes: PodVolumes,
        events: EventLog,
        executor: ThreadPoolExecutor,
        hooks: PodHooks,
    ) -> None:
        self.vm = vm
        self.containers = containers
        self.config = config
        self.logs = logs
        self.shared = shared
        self.volumes = volumes
        self.events = events
        self.executor = executor
        self.hooks = hooks
        self._locks: dict[str, asyncio.Lock] = {}

    def container(self, container_id: str) -> Container:
        validate_id("container", container_id)
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFoundError("container", container_id, f"in pod {self.vm.pod_id!r}") from None

    @contextlib.asynccontextmanager
    async def _exclusive(self, container_id: str) -> AsyncIterator[None]:
        """One change at a time to a container: a create, start, stop, pause or
        delete that races another on the same container waits for it."""
        lock = self._locks.setdefault(container_id, asyncio.Lock())
        async with lock:
            yield

    def _require_running(self, operation: str) -> None:
        self.hooks.require(operation, PodState.RUNNING)

    def log_of(self, container_id: str) -> ContainerLog:
        cap = self.config.resources.log_mib << 20
        return ContainerLog(self.logs, container_id, cap, self.executor)

    # --- create -------------------------------------------------------------------------

    async def create(self, config: ContainerConfig, stdio: Stdio | None) -> Container:
        async with self._exclusive(config.id):
            self._require_running("create a container in")
            if config.id in self.containers:
                raise ExistsError("container", config.id)
            resources = self.config.resources
            config.limits.check_fits(config.id, resources.vcpus, resources.memory_mib)
            container = Container(config, logged=stdio is None)
            self.containers[config.id] = container
            try:
                await self.create_in_guest(container, stdio)
            except BaseException:
                self.containers.pop(config.id, None)
                raise
            try:
                self.hooks.save(f"container {config.id!r} was not created")
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
            self.vm.log.warning("undoing the create of container %s: %s", container.id, exc)
            self.containers.pop(container.id, None)

    async def create_in_guest(self, container: Container, stdio: Stdio | None) -> None:
        """Without ``stdio`` the container's output goes to its log."""
        log = None
        if stdio is None:
            log = self.log_of(container.id)
            stdio = log.stdio()
        io = ProcessIO(self.vm.agent, stdio, self.executor, log=log)
        attached = False
        try:
            self.shared.share(container.config)
            await self.volumes.attach(container.config)  # undoes itself when it fails
            attached = True
            bundle = spec.container_spec(
                container.config, self.config.hostname or self.vm.pod_id, self._guest_pid
            )
            streams = io.open()
            container.pid = await self.vm.agent.create_container(container.id, bundle, streams)
        except BaseException:
            await io.close()
            if attached:
                await self.volumes.detach(container.config)
            self.shared.unshare(container.id)
            raise
        container.in_guest = True
        io.start()
        container.init = GuestProcess(container.id, None, io, pid=container.pid)
        self.hooks.spawn(self.watch(container, container.init))

    def _guest_pid(self, container_id: str) -> int:
        """The guest pid of a container whose namespaces another one joins."""
        other = self.container(container_id)
        if not other.in_guest or other.pid is None or other.state is ContainerState.STOPPED:
            raise StateError(
                f"container {container_id!r}", "share namespaces of", other.state.value, ["running"]
            )
        return other.pid

    # --- start, and the end of what runs --------------------------------------------------

    async def start(self, container_id: str) -> None:
        async with self._exclusive(container_id):
            self._require_running("start a container in")
            container = self.container(container_id)
            container.state.require(container_id, "start", ContainerState.CREATED)
            # Recorded before it is done: a record that cannot be saved leaves the
            # container unstarted, as its status says.
            container.move_to(ContainerState.RUNNING)
            try:
                self.hooks.save(f"container {container_id!r} was not started")
                await self.vm.agent.start_container(container_id)
            except BaseException:
                if container.state is ContainerState.RUNNING:
                    container.state = ContainerState.CREATED
                with contextlib.suppress(OSError):
                    self.hooks.persist()
                raise
            self.events.emit("start", container_id)

    async def start_in_guest(self, container: Container) -> None:
        await self.vm.agent.start_container(container.id)
        if container.state is ContainerState.CREATED:
            container.move_to(ContainerState.RUNNING)
        self.events.emit("start", container.id)

    async def watch(self, container: Container, process: GuestProcess) -> None:
        """Reap a process of the container; its init's exit stops the container."""
        await reap(self.vm, process)
        if process.exec_id is None and not self.hooks.stopping():
            container.exit = process.status
            if container.state is not ContainerState.STOPPED:
                container.move_to(ContainerState.STOPPED)
            self.hooks.persist()
            status = process.status
            if status is not None:
                self.events.emit(
                    "exit", container.id, exit_code=status.exit_code, signal=status.signal
                )
        container.forget_finished_execs()

    async def end_processes(self, container: Container) -> None:
        """Abandon the container's processes (its VM is gone or going)."""
        for process in (container.init, *container.execs.values()):
            if process is not None:
                await abandon(process, self.hooks.error())

    # --- stop, delete, pause ------------------------------------------------------------

    async def stop(self, container_id: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to every process after ``timeout`` seconds."""
        async with self._exclusive(container_id):
            self._require_running("stop a container in")
            container = self.container(container_id)
            container.state.require(container_id, "stop", ContainerState.CREATED, *LIVE_STATES)
            if container.state is ContainerState.PAUSED:
                await self.vm.agent.resume_container(container_id)
                container.move_to(ContainerState.RUNNING)
                self.events.emit("resumed", container_id)
            init = container.process(None)
            if init.status is None:
                with contextlib.suppress(AgentError):
                    await self.vm.agent.signal_process(container_id, None, signal.SIGTERM)
                try:
                    await asyncio.wait_for(init.done.wait(), timeout)
                except TimeoutError:
                    with contextlib.suppress(AgentError):
                        await self.vm.agent.signal_process(container_id, None, signal.SIGKILL, True)
                    await init.done.wait()
            container.exit = init.status
            if container.state is not ContainerState.STOPPED:
                container.move_to(ContainerState.STOPPED)
            self.hooks.persist()

    async def delete(self, container_id: str) -> None:
        async with self._exclusive(container_id):
            container = self.container(container_id)
            container.state.require(
                container_id, "delete", ContainerState.CREATED, ContainerState.STOPPED
            )
            await self._discard(container)
            self.hooks.persist()

    async def _discard(self, container: Container) -> None:
        """Remove a container from the guest and the host, not from the record."""
        if container.in_guest:
            await self.vm.agent.remove_container(container.id)
            container.in_guest = False
        await self.end_processes(container)
        await self.volumes.detach(container.config)
        self.shared.unshare(container.id)
        self.shared.remove_layer(container.id)
        del self.containers[container.id]

    async def set_paused(self, container_id: str, paused: bool) -> None:
        async with self._exclusive(container_id):
            container = self.container(container_id)
            if paused:
                container.state.require(container_id, "pause", ContainerState.RUNNING)
                await self.vm.agent.pause_container(container_id)
                container.move_to(ContainerState.PAUSED)
                self.events.emit("paused", container_id)
            else:
                container.state.require(container_id, "resume", ContainerState.PAUSED)
                await self.vm.agent.resume_container(container_id)
                container.move_to(ContainerState.RUNNING)
                self.events.emit("resumed", container_id)
            self.hooks.persist()

    # --- limits and usage ---------------------------------------------------------------

    async def update(self, container_id: str, limits: Limits) -> None:
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
            await self.vm.agent.update_container(container_id, cast(OciResources, oci))
            container.config = dataclasses.replace(container.config, limits=merged)
            self.hooks.persist()

    async def stats(self, container_id: str) -> ContainerStats:
        self._require_running("read the usage of a container in")
        self.container(container_id).state.require(
            container_id, "read the usage of", ContainerState.CREATED, *LIVE_STATES
        )
        return await self.vm.agent.container_stats(container_id)
