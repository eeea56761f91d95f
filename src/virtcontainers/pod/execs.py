"""The processes a pod runs in its guest, as callers see them: execs into a
container or into the VM itself, then signalled, waited for, attached to,
their terminal resized; and, after a reattach, the processes the guest kept,
taken over with their output.

Used by :class:`virtcontainers.pod.pod.Pod`, which hands over its VM, its
containers (:class:`~virtcontainers.pod.containers.PodContainers`, which reap
what runs in them) and a check that its VM is awake.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from virtcontainers import spec
from virtcontainers.agent.base import StdioStreams, Stream
from virtcontainers.agent.results import ExitStatus, GuestTable, KeptProcess, ProcessInfo
from virtcontainers.config import Cmd
from virtcontainers.errors import ExistsError, NotFoundError, StateError
from virtcontainers.ids import validate_id
from virtcontainers.pod.containers import LIVE_STATES, PodContainers, abandon, reap
from virtcontainers.pod.process import GuestProcess, ProcessIO
from virtcontainers.pod.reattach import GUEST_STATES, kept_processes
from virtcontainers.pod.vm import PodVM
from virtcontainers.records import end_with_vm
from virtcontainers.states import ContainerState, PodState
from virtcontainers.stdio import Stdio


class PodExecs:
    """The processes of one pod: those of its containers, and those run in its VM."""

    def __init__(
        self,
        vm: PodVM,
        containers: PodContainers,
        executor: ThreadPoolExecutor,
        require_awake: Callable[[str], None],
    ) -> None:
        self.vm = vm
        self.containers = containers
        self.hooks = containers.hooks
        self.executor = executor
        self.require_awake = require_awake
        """Raises HypervisorError when the VM is frozen behind the pod's back."""
        self.guest_execs: dict[str, GuestProcess] = {}
        """Processes run in the VM itself, outside every container, by exec id."""
        self._guest_exec_numbers = itertools.count(1)

    def _require_running(self, operation: str) -> None:
        self.hooks.require(operation, PodState.RUNNING)

    # --- exec ---------------------------------------------------------------------------

    async def exec_process(
        self, container_id: str, cmd: Cmd, stdio: Stdio, exec_id: str | None = None
    ) -> GuestProcess:
        self._require_running("exec in")
        container = self.containers.container(container_id)
        container.state.require(container_id, "exec in", ContainerState.RUNNING)
        self.require_awake("exec in")
        exec_id = validate_id("exec", exec_id) if exec_id else container.new_exec_id()
        if exec_id in container.execs:
            raise ExistsError("exec", f"{container_id}/{exec_id}")
        process_spec = spec.process_spec(container.config, cmd)
        agent = self.vm.agent
        io, pid = await self._launch(
            ProcessIO(agent, stdio, self.executor),
            lambda streams: agent.exec_process(container_id, exec_id, process_spec, streams),
        )
        process = GuestProcess(container_id, exec_id, io, pid=pid)
        container.execs[exec_id] = process
        self.hooks.spawn(self.containers.watch(container, process))
        return process

    async def exec_guest(self, cmd: Cmd, stdio: Stdio) -> GuestProcess:
        """Run ``cmd`` in the VM itself, outside every container."""
        self._require_running("enter")
        self.require_awake("enter")
        exec_id = f"guest-{next(self._guest_exec_numbers)}"
        agent = self.vm.agent
        io, pid = await self._launch(
            ProcessIO(agent, stdio, self.executor),
            lambda streams: agent.exec_guest(exec_id, spec.oci_process(cmd), streams),
        )
        process = GuestProcess(None, exec_id, io, pid=pid)
        self.guest_execs[exec_id] = process
        self.hooks.spawn(reap(self.vm, process))
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

    # --- any process --------------------------------------------------------------------

    def process(self, container_id: str | None, exec_id: str | None) -> GuestProcess:
        if container_id is not None:
            return self.containers.container(container_id).process(exec_id)
        if exec_id is None or exec_id not in self.guest_execs:
            raise NotFoundError("process", f"{self.vm.pod_id}/{exec_id}", "in the pod's VM")
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
        await self.vm.agent.signal_process(container_id, exec_id, signum, all_processes)

    async def wait_process(self, container_id: str | None, exec_id: str | None) -> ExitStatus:
        if container_id is not None:
            container = self.containers.container(container_id)
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
        await self.vm.agent.resize_terminal(container_id, exec_id, rows, cols)

    async def list_processes(self, container_id: str) -> list[ProcessInfo]:
        self._require_running("list processes in")
        self.containers.container(container_id).state.require(
            container_id, "list processes of", *LIVE_STATES
        )
        return await self.vm.agent.list_processes(container_id)

    async def abandon_guest_execs(self) -> None:
        """Release the VM's own processes without its agent (VM gone or going)."""
        for process in self.guest_execs.values():
            await abandon(process, self.hooks.error())

    # --- after a reattach ---------------------------------------------------------------

    async def take_over(self, table: GuestTable) -> None:
        """Rebuild the containers' states and the processes from what the guest kept."""
        containers = self.containers.containers
        kept = kept_processes(table, set(containers))
        resumed = await self.vm.agent.resume_output([s for p in kept for s in p.streams])
        for container in containers.values():
            status = GUEST_STATES.get(table.containers.get(container.id, ""))
            if status is None:
                self.vm.log.warning("container %s is gone from the guest", container.id)
                end_with_vm([container])
                continue
            container.in_guest = True
            container.state = status
        for process in kept:
            logged = process.exec_id is None and containers[str(process.container_id)].logged
            io = self._resumed_io(process, resumed, logged)
            guest_process = GuestProcess(process.container_id, process.exec_id, io, pid=process.pid)
            if process.container_id is None:
                self.guest_execs[str(process.exec_id)] = guest_process
                self.hooks.spawn(reap(self.vm, guest_process))
                continue
            container = containers[process.container_id]
            if process.exec_id is None:
                container.init = guest_process
            else:
                container.execs[process.exec_id] = guest_process
            self.hooks.spawn(self.containers.watch(container, guest_process))

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
            log = self.containers.log_of(process.container_id)
            sinks = log.stdio()
        io = ProcessIO.resumed(self.vm.agent, self.executor, outputs, sinks, log)
        io.start()
        return io
