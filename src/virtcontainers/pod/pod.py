"""A running pod, as its daemon holds it: VM, agent, shared files, containers.

The Pod composes a :class:`Hypervisor`, an :class:`Agent` and the pod's
:class:`Store` record, and writes the record on every state transition.
Every failure path unwinds what was set up: the VM is stopped, the agent
connection closed, relays closed, and bind mounts removed.

The Pod keeps the pod's own life here (start, reattach, stop, pause) and hands
the rest to its parts, which it gives a :class:`PodVM` and not itself: its
containers' lifecycle (:mod:`virtcontainers.pod.containers`), the processes
in its guest (:mod:`virtcontainers.pod.execs`), hot-plugged interfaces and
volumes (:mod:`virtcontainers.pod.interfaces`, :mod:`virtcontainers.pod.volumes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor

from virtcontainers.agent.base import Agent
from virtcontainers.agent.results import ContainerStats, ExitStatus, ProcessInfo
from virtcontainers.config import Cmd, ContainerConfig
from virtcontainers.errors import AgentError, DaemonError, HypervisorError, StateError, VcError
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cleanup import release_run_files
from virtcontainers.hypervisor.base import Hypervisor
from virtcontainers.hypervisor.devices import Device
from virtcontainers.limits import Limits
from virtcontainers.pod.boot import PodBoot
from virtcontainers.pod.container import Container
from virtcontainers.pod.containers import PodContainers, PodHooks
from virtcontainers.pod.eventlog import EventLog, RateLimitedLog
from virtcontainers.pod.execs import PodExecs
from virtcontainers.pod.interfaces import PodInterfaces
from virtcontainers.pod.nics import PodNics
from virtcontainers.pod.portforward import LoopbackForwarder
from virtcontainers.pod.process import GuestProcess
from virtcontainers.pod.reattach import PodReattach
from virtcontainers.pod.vm import PodVM
from virtcontainers.pod.volumes import PodVolumes
from virtcontainers.records import PodRecord, end_with_vm
from virtcontainers.states import ContainerState, PodState
from virtcontainers.status import InterfaceStatus
from virtcontainers.stdio import Stdio
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.store import PodPaths, Store

SHUTDOWN_TIMEOUT = 5.0


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
        self.forwarder: LoopbackForwarder | None = None
        hooks = PodHooks(
            persist=self.persist,
            save=self._save,
            require=self._require,
            stopping=lambda: self.stopping,
            spawn=self._spawn,
            error=lambda: self.record.error,
        )
        self.lifecycle = PodContainers(
            self.vm,
            self.containers,
            self.config,
            logs=self.paths.root / "logs",
            shared=self.shared,
            volumes=self.volumes,
            events=self.events,
            executor=self.executor,
            hooks=hooks,
        )
        self.execs = PodExecs(self.vm, self.lifecycle, self.executor, self._require_awake)
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
                await self.lifecycle.create_in_guest(container, None)
                await self.lifecycle.start_in_guest(container)
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
            await self.execs.take_over(table)
            await self._forward_loopback()
            if self.state is PodState.PAUSED:
                await self.hypervisor.pause()
        except BaseException:
            self.log.exception("reattach failed; cleaning up")
            await self._teardown()
            raise
        self.persist()
        self.events.emit("reattach", step="serving")

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
        await self.execs.abandon_guest_execs()
        for container in self.containers.values():
            await self.lifecycle.end_processes(container)
            container.in_guest = False
        end_with_vm(self.containers.values())
        for task in list(self._watchers):
            if task is not asyncio.current_task():
                task.cancel()
        try:
            release_run_files(self.paths, keep_socket=True)  # the daemon still answers on it
        except VcError as exc:
            self.log.warning("releasing the pod's files: %s", exc)

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

    # --- containers (containers.py) -----------------------------------------------------

    def container(self, container_id: str) -> Container:
        return self.lifecycle.container(container_id)

    async def create_container(self, config: ContainerConfig, stdio: Stdio | None) -> Container:
        return await self.lifecycle.create(config, stdio)

    async def start_container(self, container_id: str) -> None:
        await self.lifecycle.start(container_id)

    async def stop_container(self, container_id: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to every process after ``timeout`` seconds."""
        await self.lifecycle.stop(container_id, timeout)

    async def delete_container(self, container_id: str) -> None:
        await self.lifecycle.delete(container_id)

    async def pause_container(self, container_id: str) -> None:
        await self.lifecycle.set_paused(container_id, True)

    async def resume_container(self, container_id: str) -> None:
        await self.lifecycle.set_paused(container_id, False)

    async def update_container(self, container_id: str, limits: Limits) -> None:
        """Change a container's limits; the fields of ``limits`` that are None stay."""
        await self.lifecycle.update(container_id, limits)

    async def container_stats(self, container_id: str) -> ContainerStats:
        return await self.lifecycle.stats(container_id)

    # --- processes (execs.py) -----------------------------------------------------------

    async def exec_process(
        self, container_id: str, cmd: Cmd, stdio: Stdio, exec_id: str | None = None
    ) -> GuestProcess:
        return await self.execs.exec_process(container_id, cmd, stdio, exec_id)

    async def exec_guest(self, cmd: Cmd, stdio: Stdio) -> GuestProcess:
        """Run ``cmd`` in the VM itself, outside every container."""
        return await self.execs.exec_guest(cmd, stdio)

    def process(self, container_id: str | None, exec_id: str | None) -> GuestProcess:
        return self.execs.process(container_id, exec_id)

    async def signal_process(
        self, container_id: str | None, exec_id: str | None, signum: int, all_processes: bool
    ) -> None:
        await self.execs.signal_process(container_id, exec_id, signum, all_processes)

    async def wait_process(self, container_id: str | None, exec_id: str | None) -> ExitStatus:
        return await self.execs.wait_process(container_id, exec_id)

    def attach(self, container_id: str | None, exec_id: str | None, stdio: Stdio) -> None:
        """Copy a running process's output to more fds, from now on.

        On success the output fds are the process's; on failure they stay the caller's.
        """
        self.execs.attach(container_id, exec_id, stdio)

    async def resize_terminal(
        self, container_id: str | None, exec_id: str | None, rows: int, cols: int
    ) -> None:
        await self.execs.resize_terminal(container_id, exec_id, rows, cols)

    async def list_processes(self, container_id: str) -> list[ProcessInfo]:
        return await self.execs.list_processes(container_id)

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
