"""Host-side client of our guest agent: each operation of the contract
(:mod:`virtcontainers.agent.contract`) as a method, its answer checked
(:mod:`virtcontainers.agent.answers`), over the connection of
:mod:`virtcontainers.agent.channel`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from virtcontainers.agent import contract
from virtcontainers.agent.answers import MAX_PROCESSES, bounded, field, guest_table
from virtcontainers.agent.base import StdioStreams
from virtcontainers.agent.channel import AgentChannel
from virtcontainers.agent.contract import AgentOp
from virtcontainers.agent.messages import (
    CloseOutputArgs,
    ConfigureNetworkArgs,
    ConnectPortArgs,
    ContainerArgs,
    CreateContainerArgs,
    Empty,
    ExecGuestArgs,
    ExecProcessArgs,
    InitCloneArgs,
    MountBlockArgs,
    NetInterface,
    NetRoute,
    OciProcess,
    OciResources,
    ProcessArgs,
    ResizeTerminalArgs,
    ResumeOutputArgs,
    SignalProcessArgs,
    UpdateContainerArgs,
    VolumeArgs,
)
from virtcontainers.agent.results import (
    CloneInit,
    ContainerStats,
    ExitStatus,
    GuestDetails,
    GuestTable,
    ProcessInfo,
)
from virtcontainers.agent.stream import AgentStream
from virtcontainers.errors import AgentError, AgentProtocolError

CONNECT_PORT_TIMEOUT = 30.0
"""Beyond the guest's own connect timeout (10 s), for a loaded guest under TCG."""
A = TypeVar("A", bound=Mapping[str, object])


class AgentClient(AgentChannel):
    """Our guest agent's operations, over one connection to it."""

    def __init__(self, name: str = "agent") -> None:
        super().__init__(logging.getLogger(__name__).getChild(name))

    async def _start(self, agent_op: AgentOp[A, Any], args: A) -> int:
        """Send a request that starts a process; the process's pid in the guest."""
        result = await self.call(agent_op, args)
        return field(result, "pid", int, agent_op.name)

    # --- operations -----------------------------------------------------------------

    async def ping(self) -> None:
        await self.call(contract.PING, Empty())

    async def guest_details(self) -> GuestDetails:
        result = await self.call(contract.GUEST_DETAILS, Empty())
        op = contract.GUEST_DETAILS.name
        return GuestDetails(
            kernel=bounded(field(result, "kernel", str, op)),
            agent_version=bounded(field(result, "agent_version", str, op)),
            python=bounded(field(result, "python", str, op)),
            cpus=field(result, "cpus", int, op),
            memory_kib=field(result, "memory_kib", int, op),
            runtime=bounded(result.get("runtime", "")),
        )

    async def create_container(
        self, container_id: str, bundle: Mapping[str, object], stdio: StdioStreams
    ) -> int:
        args = CreateContainerArgs(container_id=container_id, bundle=bundle, **stdio.to_args())
        return await self._start(contract.CREATE_CONTAINER, args)

    async def start_container(self, container_id: str) -> None:
        await self.call(contract.START_CONTAINER, ContainerArgs(container_id=container_id))

    async def exec_process(
        self, container_id: str, exec_id: str, process: Mapping[str, object], stdio: StdioStreams
    ) -> int:
        args = ExecProcessArgs(
            container_id=container_id, exec_id=exec_id, process=process, **stdio.to_args()
        )
        return await self._start(contract.EXEC_PROCESS, args)

    async def signal_process(
        self, container_id: str | None, exec_id: str | None, sig: int, all_processes: bool = False
    ) -> None:
        args = SignalProcessArgs(
            container_id=container_id, exec_id=exec_id, signal=sig, all=all_processes
        )
        await self.call(contract.SIGNAL_PROCESS, args)

    async def wait_process(self, container_id: str | None, exec_id: str | None) -> ExitStatus:
        args = ProcessArgs(container_id=container_id, exec_id=exec_id)
        result = await self.call(contract.WAIT_PROCESS, args, timeout=None)
        code = field(result, "exit_code", int, contract.WAIT_PROCESS.name)
        signal = result.get("signal")
        if not 0 <= code <= 255 or not (
            signal is None or (isinstance(signal, int) and 0 < signal < 128)
        ):
            raise AgentProtocolError(
                f"{contract.WAIT_PROCESS.name} answer out of range: {result!r}"
            )
        return ExitStatus(code, signal)

    async def resize_terminal(
        self, container_id: str | None, exec_id: str | None, rows: int, cols: int
    ) -> None:
        args = ResizeTerminalArgs(container_id=container_id, exec_id=exec_id, rows=rows, cols=cols)
        await self.call(contract.RESIZE_TERMINAL, args)

    async def close_output(self, stream_id: int) -> None:
        await self.call(contract.CLOSE_OUTPUT, CloseOutputArgs(stream=stream_id))

    async def list_processes(self, container_id: str) -> list[ProcessInfo]:
        result = await self.call(contract.LIST_PROCESSES, ContainerArgs(container_id=container_id))
        op = contract.LIST_PROCESSES.name
        entries = field(result, "processes", list, op)
        if len(entries) > MAX_PROCESSES:
            raise AgentProtocolError(f"{op} returned {len(entries)} processes")
        processes = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise AgentProtocolError(f"{op} entry is not an object")
            pid = field(entry, "pid", int, op)
            args = field(entry, "args", list, op)
            processes.append(ProcessInfo(pid, tuple(bounded(a) for a in args)))
        return processes

    async def pause_container(self, container_id: str) -> None:
        await self.call(contract.PAUSE_CONTAINER, ContainerArgs(container_id=container_id))

    async def resume_container(self, container_id: str) -> None:
        await self.call(contract.RESUME_CONTAINER, ContainerArgs(container_id=container_id))

    async def remove_container(self, container_id: str) -> None:
        await self.call(contract.REMOVE_CONTAINER, ContainerArgs(container_id=container_id))

    async def exec_guest(self, exec_id: str, process: OciProcess, stdio: StdioStreams) -> int:
        """Run a process in the VM itself, outside every container."""
        args = ExecGuestArgs(exec_id=exec_id, process=process, **stdio.to_args())
        return await self._start(contract.EXEC_GUEST, args)

    async def configure_network(
        self, interfaces: Sequence[NetInterface], routes: Sequence[NetRoute], wait: float = 0.0
    ) -> None:
        args = ConfigureNetworkArgs(interfaces=list(interfaces), routes=list(routes))
        if wait:
            args["wait"] = wait
        await self.call(contract.CONFIGURE_NETWORK, args)

    async def update_container(self, container_id: str, resources: OciResources) -> None:
        args = UpdateContainerArgs(container_id=container_id, resources=resources)
        await self.call(contract.UPDATE_CONTAINER, args)

    async def container_stats(self, container_id: str) -> ContainerStats:
        result = await self.call(contract.CONTAINER_STATS, ContainerArgs(container_id=container_id))
        try:
            return ContainerStats.parse(result)
        except ValueError as exc:
            raise AgentProtocolError(f"{contract.CONTAINER_STATS.name} answer has {exc}") from None

    async def mount_block(self, volume_id: str, serial: str, fstype: str, read_only: bool) -> None:
        args = MountBlockArgs(
            volume_id=volume_id, serial=serial, fstype=fstype, read_only=read_only
        )
        await self.call(contract.MOUNT_BLOCK, args)

    async def unmount_block(self, volume_id: str) -> None:
        await self.call(contract.UNMOUNT_BLOCK, VolumeArgs(volume_id=volume_id))

    async def init_clone(
        self, hostname: str, seed: bytes, time_ns: int, shared_fs: str | None
    ) -> CloneInit:
        args = InitCloneArgs(
            hostname=hostname, seed=seed.hex(), time_ns=time_ns, shared_fs=shared_fs
        )
        result = await self.call(contract.INIT_CLONE, args)
        try:
            return CloneInit.parse(result)
        except ValueError as exc:
            raise AgentProtocolError(f"{contract.INIT_CLONE.name} answer has {exc}") from None

    async def connect_port(self, stream_id: int, port: int, family: int) -> None:
        args = ConnectPortArgs(stream=stream_id, port=port, family=family)
        await self.call(contract.CONNECT_PORT, args, timeout=CONNECT_PORT_TIMEOUT)

    async def shutdown(self) -> None:
        await self.call(contract.SHUTDOWN, Empty())

    # --- reattaching ----------------------------------------------------------------

    async def process_table(self) -> GuestTable:
        """What the guest kept while no host was attached.  The ids of its detached
        streams are reserved: streams opened from now on are numbered above them."""
        result = await self.call(contract.PROCESS_TABLE, Empty())
        table = guest_table(result, contract.PROCESS_TABLE.name)
        ids = [s for process in table.processes for s in process.streams]
        self._stream_ids = itertools.count(max([*ids, next(self._stream_ids) - 1]) + 1)
        return table

    async def resume_output(self, stream_ids: Sequence[int]) -> dict[int, AgentStream]:
        """Take the guest's detached output streams again; their output follows."""
        streams = {stream_id: AgentStream(self, stream_id) for stream_id in stream_ids}
        taken = [stream_id for stream_id in streams if stream_id in self._streams]
        if taken:
            raise AgentError(contract.RESUME_OUTPUT.name, "exists", f"streams {taken} are in use")
        self._streams.update(streams)  # before the answer: the output comes right after it
        try:
            await self.call(contract.RESUME_OUTPUT, ResumeOutputArgs(streams=list(streams)))
        except BaseException:
            for stream_id in streams:
                self._forget(stream_id)
            raise
        return streams
