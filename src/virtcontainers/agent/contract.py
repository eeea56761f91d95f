"""The agent's operations, each declared once: its name, its arguments, its result.

An op's name is a :class:`~virtcontainers.agent.protocol.Op`, shared with the
guest agent, whose dispatch table is keyed by the same constants; its argument
and result types are the TypedDicts of :mod:`~virtcontainers.agent.messages`,
which only the host imports at run time.  The client sends a request only
through an :class:`AgentOp` of this table, so mypy holds its arguments to the
op's; a unit test holds this table and the guest's to the same ops.  The guest
is untrusted: a result of type ``R`` is what a guest that keeps the contract
answers, and the client still checks every field of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from virtcontainers.agent.messages import (
    CloseOutputArgs,
    ConfigureNetworkArgs,
    ConnectPortArgs,
    ContainerArgs,
    ContainerStateResult,
    ContainerStatsResult,
    CreateContainerArgs,
    Empty,
    ExecGuestArgs,
    ExecProcessArgs,
    ExitResult,
    GuestDetailsResult,
    InitCloneArgs,
    InitCloneResult,
    MountBlockArgs,
    PidResult,
    ProcessArgs,
    ProcessListResult,
    ProcessTableResult,
    ResizeTerminalArgs,
    ResumeOutputArgs,
    SignalProcessArgs,
    UpdateContainerArgs,
    VolumeArgs,
)
from virtcontainers.agent.protocol import Op

A = TypeVar("A", bound=Mapping[str, object])
R = TypeVar("R", bound=Mapping[str, object])


@dataclass(frozen=True)
class AgentOp(Generic[A, R]):
    """One operation: a request named ``name`` carries an ``A`` and is answered
    with an ``R``."""

    name: str
    args: type[A]
    result: type[R]


PING = AgentOp(Op.PING, Empty, Empty)
GUEST_DETAILS = AgentOp(Op.GUEST_DETAILS, Empty, GuestDetailsResult)
CREATE_CONTAINER = AgentOp(Op.CREATE_CONTAINER, CreateContainerArgs, PidResult)
START_CONTAINER = AgentOp(Op.START_CONTAINER, ContainerArgs, Empty)
EXEC_PROCESS = AgentOp(Op.EXEC_PROCESS, ExecProcessArgs, PidResult)
EXEC_GUEST = AgentOp(Op.EXEC_GUEST, ExecGuestArgs, PidResult)
SIGNAL_PROCESS = AgentOp(Op.SIGNAL_PROCESS, SignalProcessArgs, Empty)
WAIT_PROCESS = AgentOp(Op.WAIT_PROCESS, ProcessArgs, ExitResult)
RESIZE_TERMINAL = AgentOp(Op.RESIZE_TERMINAL, ResizeTerminalArgs, Empty)
CLOSE_OUTPUT = AgentOp(Op.CLOSE_OUTPUT, CloseOutputArgs, Empty)
LIST_PROCESSES = AgentOp(Op.LIST_PROCESSES, ContainerArgs, ProcessListResult)
PAUSE_CONTAINER = AgentOp(Op.PAUSE_CONTAINER, ContainerArgs, Empty)
RESUME_CONTAINER = AgentOp(Op.RESUME_CONTAINER, ContainerArgs, Empty)
CONTAINER_STATE = AgentOp(Op.CONTAINER_STATE, ContainerArgs, ContainerStateResult)
REMOVE_CONTAINER = AgentOp(Op.REMOVE_CONTAINER, ContainerArgs, Empty)
CONFIGURE_NETWORK = AgentOp(Op.CONFIGURE_NETWORK, ConfigureNetworkArgs, Empty)
UPDATE_CONTAINER = AgentOp(Op.UPDATE_CONTAINER, UpdateContainerArgs, Empty)
CONTAINER_STATS = AgentOp(Op.CONTAINER_STATS, ContainerArgs, ContainerStatsResult)
MOUNT_BLOCK = AgentOp(Op.MOUNT_BLOCK, MountBlockArgs, Empty)
UNMOUNT_BLOCK = AgentOp(Op.UNMOUNT_BLOCK, VolumeArgs, Empty)
INIT_CLONE = AgentOp(Op.INIT_CLONE, InitCloneArgs, InitCloneResult)
CONNECT_PORT = AgentOp(Op.CONNECT_PORT, ConnectPortArgs, Empty)
SHUTDOWN = AgentOp(Op.SHUTDOWN, Empty, Empty)
PROCESS_TABLE = AgentOp(Op.PROCESS_TABLE, Empty, ProcessTableResult)
RESUME_OUTPUT = AgentOp(Op.RESUME_OUTPUT, ResumeOutputArgs, Empty)

CONTRACT: dict[str, AgentOp[Any, Any]] = {
    op.name: op
    for op in (
        PING,
        GUEST_DETAILS,
        CREATE_CONTAINER,
        START_CONTAINER,
        EXEC_PROCESS,
        EXEC_GUEST,
        SIGNAL_PROCESS,
        WAIT_PROCESS,
        RESIZE_TERMINAL,
        CLOSE_OUTPUT,
        LIST_PROCESSES,
        PAUSE_CONTAINER,
        RESUME_CONTAINER,
        CONTAINER_STATE,
        REMOVE_CONTAINER,
        CONFIGURE_NETWORK,
        UPDATE_CONTAINER,
        CONTAINER_STATS,
        MOUNT_BLOCK,
        UNMOUNT_BLOCK,
        INIT_CLONE,
        CONNECT_PORT,
        SHUTDOWN,
        PROCESS_TABLE,
        RESUME_OUTPUT,
    )
}
"""Every operation, by name."""
