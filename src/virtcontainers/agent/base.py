"""The Agent interface: what the pod daemon asks of the agent in the VM.

Implementations: :class:`~virtcontainers.agent.client.AgentClient` (our guest
agent, over a virtio-serial port or vsock) and
:class:`~virtcontainers.agent.mock.MockAgent` (unit tests, no VM).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from virtcontainers.agent.messages import (
    NetInterface,
    NetRoute,
    OciProcess,
    OciResources,
    StdioArgs,
)
from virtcontainers.agent.results import (
    CloneInit,
    ContainerStats,
    ExitStatus,
    GuestDetails,
    GuestTable,
    ProcessInfo,
)


@dataclass(frozen=True)
class StdioStreams:
    """Stream ids of one process's stdio; None means /dev/null."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None

    def to_args(self) -> StdioArgs:
        return {"stdin": self.stdin, "stdout": self.stdout, "stderr": self.stderr}


class Stream(Protocol):
    """One direction of one process's I/O through the agent."""

    stream_id: int

    async def read(self) -> bytes:
        """Next chunk from the guest; b"" at end of stream."""
        ...

    async def write(self, data: bytes) -> None:
        """Send to the guest, waiting for flow-control credit."""
        ...

    async def close(self) -> None:
        """Send end-of-stream to the guest."""
        ...


EventHandler = Callable[[str, Mapping[str, object]], None]
"""Called with an event's name and its other fields, as the guest sent them (unchecked)."""


class Agent(Protocol):
    async def connect(self, socket_path: Path, timeout: float) -> None: ...

    async def close(self) -> None: ...

    def on_event(self, handler: EventHandler) -> None: ...

    def open_stream(self) -> Stream: ...

    async def guest_details(self) -> GuestDetails: ...

    async def create_container(
        self, container_id: str, bundle: Mapping[str, object], stdio: StdioStreams
    ) -> int: ...

    async def start_container(self, container_id: str) -> None: ...

    async def exec_process(
        self,
        container_id: str,
        exec_id: str,
        process: Mapping[str, object],
        stdio: StdioStreams,
    ) -> int: ...

    async def signal_process(
        self, container_id: str | None, exec_id: str | None, sig: int, all_processes: bool = False
    ) -> None: ...

    async def wait_process(self, container_id: str | None, exec_id: str | None) -> ExitStatus: ...

    async def resize_terminal(
        self, container_id: str | None, exec_id: str | None, rows: int, cols: int
    ) -> None: ...

    async def close_output(self, stream_id: int) -> None:
        """The reader of this output stream is gone: the process's pipe is closed,
        so its next write fails (SIGPIPE), as it would without a VM."""

    async def list_processes(self, container_id: str) -> list[ProcessInfo]: ...

    async def pause_container(self, container_id: str) -> None: ...

    async def resume_container(self, container_id: str) -> None: ...

    async def remove_container(self, container_id: str) -> None: ...

    async def exec_guest(self, exec_id: str, process: OciProcess, stdio: StdioStreams) -> int: ...

    async def configure_network(
        self, interfaces: Sequence[NetInterface], routes: Sequence[NetRoute], wait: float = 0.0
    ) -> None:
        """Set up the VM's NICs (each found by its MAC): MTU, addresses, link up;
        then add the routes, in order.  Applying the same configuration again
        succeeds.  With ``wait``, NICs not there yet (just hot-plugged) are
        waited for, up to that many seconds.  Raises AgentError: "invalid",
        "not_found" (no NIC with a MAC), "network" (an ``ip`` command failed:
        its stderr)."""

    async def update_container(self, container_id: str, resources: OciResources) -> None:
        """Change a container's limits (``crun update``).  Raises AgentError:
        "invalid", "state", "runtime" (crun refused: its message)."""

    async def container_stats(self, container_id: str) -> ContainerStats:
        """What the container uses now, from its cgroup in the guest."""

    async def mount_block(self, volume_id: str, serial: str, fstype: str, read_only: bool) -> None:
        """Mount the hot-plugged disk with ``serial`` at the guest's
        ``/run/vc/volumes/<volume_id>``, once the guest sees it.  Raises
        AgentError: "invalid", "exists", "not_found" (no such disk appeared),
        "mount" (mount failed: its message)."""

    async def unmount_block(self, volume_id: str) -> None:
        """Unmount a volume before its disk is unplugged; nothing if it is not mounted."""

    async def init_clone(
        self, hostname: str, seed: bytes, time_ns: int, shared_fs: str | None
    ) -> CloneInit:
        """Make a VM cloned from a template this pod's: its hostname, the clock
        (CLOCK_REALTIME from *time_ns*), a random state reseeded from *seed*, a
        machine id of its own, and the shared directory mounted over
        *shared_fs* (a ``SharedFsKind`` value).  Says whether the random state
        was reseeded (else the seed was only mixed in) and what the clone read
        from /dev/urandom before the seed.  Raises AgentError: "invalid",
        "state", "clone" (a step failed); AgentProtocolError for a malformed answer."""

    async def connect_port(self, stream_id: int, port: int, family: int) -> None:
        """Connect, in the guest, to ``port`` on loopback (``family`` 4: 127.0.0.1
        first, 6: ::1 first, then the other) and carry the connection on the
        stream ``stream_id`` (from :meth:`open_stream`), both ways; its EOF is
        the connection's half-close.  Raises AgentError: "invalid", "busy"
        (too many connections), "refused", "timeout", "network"."""

    async def shutdown(self) -> None: ...

    async def process_table(self) -> GuestTable:
        """The containers and processes the guest kept while no host was attached;
        the ids of their detached output streams are not reused from then on."""
        ...

    async def resume_output(self, stream_ids: Sequence[int]) -> Mapping[int, Stream]:
        """Take detached output streams again (see :meth:`process_table`)."""
        ...
