"""Host-side client of our guest agent.

The guest is untrusted: every frame is size-bounded by the decoder, every
response is checked against what its request expects, and a guest that
breaks the protocol (bad frame, unknown request id, data beyond its credit)
makes the connection fail with :class:`AgentProtocolError` for every caller,
without crashing or hanging the daemon; so does anything else that goes
wrong in the reader, with its traceback logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from virtcontainers.agent import contract, protocol
from virtcontainers.agent.base import EventHandler, StdioStreams
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
from virtcontainers.agent.protocol import Frame, FrameType
from virtcontainers.agent.results import (
    CloneInit,
    ContainerStats,
    ExitStatus,
    GuestDetails,
    GuestTable,
    KeptProcess,
    ProcessInfo,
)
from virtcontainers.errors import AgentError, AgentProtocolError
from virtcontainers.ids import ID_PATTERN

READ_SIZE = 256 * 1024
REQUEST_TIMEOUT = 120.0
"""A guest that does not answer within this long has failed the request (crun
under TCG takes well under a second; waits for process exit are unbounded)."""
CONNECT_PORT_TIMEOUT = 30.0
"""Beyond the guest's own connect timeout (10 s), for a loaded guest under TCG."""
MAX_PROCESSES = 65536
MAX_ERROR_TEXT = 4096
MAX_CONTAINERS = 4096
MAX_STREAM_ID = 0xFFFFFFFF
MAX_DRAINING_STREAMS = 1024
"""Released streams whose late frames are still taken (and dropped); the oldest
is forgotten past this, and a frame for it then fails the connection."""
T = TypeVar("T")
A = TypeVar("A", bound=Mapping[str, object])


def _field(result: Mapping[str, object], name: str, kind: type[T], op: str) -> T:
    value = result.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AgentProtocolError(f"{op} answer has {name}={value!r}, expected {kind.__name__}")
    return value


def _bounded(text: object) -> str:
    return str(text)[:MAX_ERROR_TEXT]


class AgentStream:
    """One I/O stream id, both directions, with credit-based flow control.

    A chunk read is credited back to the guest when the next one is asked
    for, that is once the reader has written it on: the guest keeps what it
    sent until then, and sends it again to a host that reattaches after this
    one died (at least once; nothing lost).
    """

    def __init__(self, client: AgentClient, stream_id: int) -> None:
        self.stream_id = stream_id
        self._client = client
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._inbound_unacked = 0
        self._held = 0
        """The size of the last chunk read, credited at the next read."""
        self._eof = False
        self._send_credit = protocol.STREAM_WINDOW
        self._credit_changed = asyncio.Event()
        self._closed = False
        self.draining = False
        """Released by the host: what the guest still sends is dropped, within the window."""

    def _deliver(self, frame: Frame) -> None:
        if self._eof:
            raise AgentProtocolError(f"data on stream {self.stream_id} after its end")
        self._inbound_unacked += len(frame.payload)
        if self._inbound_unacked > protocol.STREAM_WINDOW:
            raise AgentProtocolError(f"guest overran the window on stream {self.stream_id}")
        if frame.payload and not self.draining:
            self._chunks.put_nowait(frame.payload)
        if frame.eof:
            self._eof = True
            self._chunks.put_nowait(b"")

    def _drain(self) -> None:
        """The host is done with this stream; output the guest had in flight may
        still arrive (no more than the credit it holds, as no more is granted)."""
        self.draining = True
        while not self._chunks.empty():
            self._chunks.get_nowait()

    def _grant(self, count: int) -> None:
        self._send_credit += count
        if self._send_credit > protocol.STREAM_WINDOW:
            raise AgentProtocolError(f"guest granted too much credit on stream {self.stream_id}")
        self._credit_changed.set()

    def _fail(self) -> None:
        self._chunks.put_nowait(b"")
        self._credit_changed.set()

    async def read(self) -> bytes:
        if self._held:
            held, self._held = self._held, 0
            self._inbound_unacked -= held
            await self._client.send_raw(protocol.encode_credit(self.stream_id, held))
        chunk = await self._chunks.get()
        if chunk:
            self._held = len(chunk)
        elif self._client.failure is not None:
            raise self._client.failure
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while self._send_credit == 0:
                if self._client.failure is not None:
                    raise self._client.failure
                self._credit_changed.clear()
                await self._credit_changed.wait()
            size = min(len(view), self._send_credit, protocol.DATA_CHUNK)
            self._send_credit -= size
            await self._client.send_raw(protocol.data(self.stream_id, bytes(view[:size])))
            view = view[size:]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.send_raw(protocol.data(self.stream_id, b"", eof=True))


class AgentClient:
    """Talks to the guest agent over a unix socket (QEMU's chardev)."""

    def __init__(self, name: str = "agent") -> None:
        self.log = logging.getLogger(__name__).getChild(name)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._request_ids = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, object]]]] = {}
        self._streams: dict[int, AgentStream] = {}
        self._draining: list[int] = []
        self._handlers: list[EventHandler] = []
        self._read_task: asyncio.Task[None] | None = None
        self.failure: AgentProtocolError | None = None

    # --- connection -----------------------------------------------------------

    async def connect(self, socket_path: Path, timeout: float) -> None:
        """Connect and handshake; stale bytes before our HELLO's answer are dropped."""
        reader, writer = await asyncio.open_unix_connection(str(socket_path), limit=READ_SIZE)
        self._reader, self._writer = reader, writer
        nonce = secrets.token_hex(16)
        writer.write(protocol.hello(nonce))
        await writer.drain()
        try:
            early, pending = await asyncio.wait_for(self._await_hello(reader, nonce), timeout)
        except TimeoutError:
            await self.close()
            raise AgentError(
                "connect", "timeout", f"no HELLO from the agent in {timeout:.0f}s"
            ) from None
        except BaseException:
            await self.close()
            raise
        self._read_task = asyncio.create_task(
            self._read_loop(reader, early, pending), name="agent-reader"
        )

    async def _await_hello(
        self, reader: asyncio.StreamReader, nonce: str
    ) -> tuple[list[Frame], bytes]:
        """Skip stale bytes up to our HELLO's answer; return what came after it."""
        decoder = protocol.FrameDecoder(resync=True)
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise AgentError(
                    "connect", "closed", "the agent channel closed during the handshake"
                )
            frames = decoder.feed(data)
            for index, frame in enumerate(frames):
                if frame.type is FrameType.HELLO and self._hello_matches(frame, nonce):
                    return frames[index + 1 :], decoder.take_pending()

    def _hello_matches(self, frame: Frame, nonce: str) -> bool:
        try:
            message = frame.json()
        except protocol.ProtocolError:
            return False
        if message.get("nonce") != nonce:
            return False
        if message.get("version") != protocol.PROTOCOL_VERSION:
            raise AgentProtocolError(f"agent speaks protocol {message.get('version')!r}")
        self.log.debug("handshake done: %s", message)
        return True

    async def close(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
            self._read_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None
        closed = AgentProtocolError("the agent connection is closed")
        self.failure = self.failure or closed  # asked for: not worth a warning
        self._fail_all(closed)

    def on_event(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    # --- frames -------------------------------------------------------------------

    async def send_raw(self, frame: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        if self._writer is None:
            raise AgentProtocolError("the agent is not connected")
        async with self._write_lock:
            self._writer.write(frame)
            await self._writer.drain()

    async def _read_loop(
        self, reader: asyncio.StreamReader, early: list[Frame], pending: bytes
    ) -> None:
        decoder = protocol.FrameDecoder()
        try:
            for frame in early + decoder.feed(pending):
                self._dispatch(frame)
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise AgentProtocolError("the agent channel closed")
                for frame in decoder.feed(data):
                    self._dispatch(frame)
        except protocol.ProtocolError as exc:
            self._fail_all(AgentProtocolError(str(exc)))
        except AgentProtocolError as exc:
            self._fail_all(exc)
        except OSError as exc:
            self._fail_all(AgentProtocolError(f"agent channel error: {exc}"))
        except Exception as exc:
            # Input no check foresaw, or a bug of ours: either way the stream can no
            # longer be trusted, and a reader that died quietly would leave every
            # waiter hanging.
            error = AgentProtocolError(f"agent reader failed: {type(exc).__name__}: {exc}")
            self._fail_all(error, cause=exc)

    def _fail_all(self, error: AgentProtocolError, cause: Exception | None = None) -> None:
        if self.failure is None:
            self.failure = error
            self.log.warning("agent connection failed: %s", error, exc_info=cause)
        for _op, future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for stream in self._streams.values():
            stream._fail()

    def _dispatch(self, frame: Frame) -> None:
        if frame.type is FrameType.RESPONSE:
            self._on_response(frame)
        elif frame.type is FrameType.EVENT:
            self._on_event(frame.json())
        elif frame.type is FrameType.DATA:
            stream = self._stream_for(frame)
            stream._deliver(frame)
            if stream.draining and stream._eof:
                self._forget(stream.stream_id)
        elif frame.type is FrameType.CREDIT:
            self._stream_for(frame)._grant(frame.credit())
        else:
            raise AgentProtocolError(f"unexpected {frame.type.name} frame from the agent")

    def _stream_for(self, frame: Frame) -> AgentStream:
        stream = self._streams.get(frame.stream)
        if stream is None:
            raise AgentProtocolError(f"{frame.type.name} frame for unknown stream {frame.stream}")
        return stream

    def _on_response(self, frame: Frame) -> None:
        message = frame.json()  # before the pop: a bad answer must fail its caller too
        entry = self._pending.pop(frame.stream, None)
        if entry is None:
            raise AgentProtocolError(f"response to unknown request {frame.stream}")
        op, future = entry
        result = message.get("result")
        if message.get("ok") is True and isinstance(result, dict):
            if not future.done():
                future.set_result(result)
            return
        error = message.get("error")
        if message.get("ok") is not False or not isinstance(error, dict):
            failure = AgentProtocolError(f"malformed response to {op}")
            future.set_exception(failure)
            raise failure
        if not future.done():
            future.set_exception(
                AgentError(op, _bounded(error.get("kind")), _bounded(error.get("message")))
            )

    def _on_event(self, message: dict[str, object]) -> None:
        name = message.pop("event", None)
        if not isinstance(name, str):
            raise AgentProtocolError("event without a name")
        self.log.debug("event %s %s", name, message)
        for handler in self._handlers:
            handler(name, message)

    async def call(
        self, agent_op: AgentOp[A, Any], args: A, timeout: float | None = REQUEST_TIMEOUT
    ) -> dict[str, object]:
        """Send one request; its result is unchecked.  Raises AgentError if the
        guest refuses it or stays silent."""
        if self.failure is not None:
            raise self.failure
        op = agent_op.name
        request_id = next(self._request_ids)
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (op, future)
        self.log.debug("request %d %s %s", request_id, op, args)
        try:
            await self.send_raw(protocol.request(request_id, op, args))
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        try:
            result = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise AgentError(op, "timeout", f"no answer from the agent in {timeout:.0f}s") from None
        self.log.debug("response %d %s %s", request_id, op, result)
        return result

    async def _start(self, agent_op: AgentOp[A, Any], args: A) -> int:
        """Send a request that starts a process; the process's pid in the guest."""
        result = await self.call(agent_op, args)
        return _field(result, "pid", int, agent_op.name)

    # --- streams ------------------------------------------------------------------

    def open_stream(self) -> AgentStream:
        stream = AgentStream(self, next(self._stream_ids))
        self._streams[stream.stream_id] = stream
        if self.failure is not None:
            stream._fail()
        return stream

    def release_stream(self, stream_id: int) -> None:
        """The host is done with this stream.  It is kept, draining, until the
        guest ends it: the process's last output may still be on its way."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.draining:
            return
        if stream._eof:
            self._forget(stream_id)
            return
        stream._drain()
        self._draining.append(stream_id)
        if len(self._draining) > MAX_DRAINING_STREAMS:
            self._forget(self._draining[0])

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        with contextlib.suppress(ValueError):
            self._draining.remove(stream_id)

    # --- operations -----------------------------------------------------------------

    async def ping(self) -> None:
        await self.call(contract.PING, Empty())

    async def guest_details(self) -> GuestDetails:
        result = await self.call(contract.GUEST_DETAILS, Empty())
        op = contract.GUEST_DETAILS.name
        return GuestDetails(
            kernel=_bounded(_field(result, "kernel", str, op)),
            agent_version=_bounded(_field(result, "agent_version", str, op)),
            python=_bounded(_field(result, "python", str, op)),
            cpus=_field(result, "cpus", int, op),
            memory_kib=_field(result, "memory_kib", int, op),
            runtime=_bounded(result.get("runtime", "")),
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
        code = _field(result, "exit_code", int, contract.WAIT_PROCESS.name)
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
        entries = _field(result, "processes", list, op)
        if len(entries) > MAX_PROCESSES:
            raise AgentProtocolError(f"{op} returned {len(entries)} processes")
        processes = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise AgentProtocolError(f"{op} entry is not an object")
            pid = _field(entry, "pid", int, op)
            args = _field(entry, "args", list, op)
            processes.append(ProcessInfo(pid, tuple(_bounded(a) for a in args)))
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
        op = contract.PROCESS_TABLE.name
        containers = _field(result, "containers", list, op)
        entries = _field(result, "processes", list, op)
        if len(containers) > MAX_CONTAINERS or len(entries) > MAX_PROCESSES:
            raise AgentProtocolError(f"{op} answer lists too many containers or processes")
        table = GuestTable(
            {_table_id(c, "id", op): _bounded(_field(c, "status", str, op)) for c in containers},
            tuple(_kept_process(entry, op) for entry in entries),
        )
        ids = [s for process in table.processes for s in process.streams]
        if len(ids) != len(set(ids)):
            raise AgentProtocolError(f"{op} answer gives one stream to two processes")
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


def _table_id(entry: object, name: str, op: str) -> str:
    if not isinstance(entry, dict):
        raise AgentProtocolError(f"{op} entry is not an object")
    value = _field(entry, name, str, op)
    if not ID_PATTERN.match(value):
        raise AgentProtocolError(f"{op} answer has a malformed {name}")
    return value


def _optional_id(entry: Mapping[str, object], name: str, op: str) -> str | None:
    return None if entry.get(name) is None else _table_id(entry, name, op)


def _optional(entry: Mapping[str, object], name: str, kind: type[T], op: str) -> T | None:
    return None if entry.get(name) is None else _field(entry, name, kind, op)


def _stream_id(entry: Mapping[str, object], name: str, op: str) -> int | None:
    value = _optional(entry, name, int, op)
    if value is not None and not 0 < value <= MAX_STREAM_ID:
        raise AgentProtocolError(f"{op} answer has {name}={value}")
    return value


def _kept_process(entry: object, op: str) -> KeptProcess:
    if not isinstance(entry, dict):
        raise AgentProtocolError(f"{op} entry is not an object")
    container_id = (
        None if entry.get("container_id") is None else _table_id(entry, "container_id", op)
    )
    exec_id = None if entry.get("exec_id") is None else _table_id(entry, "exec_id", op)
    if container_id is None and exec_id is None:
        raise AgentProtocolError(f"{op} answer has a process with neither container nor exec")
    code = _optional(entry, "exit_code", int, op)
    signal = _optional(entry, "signal", int, op)
    if (code is not None and not 0 <= code <= 255) or (signal is not None and not 0 < signal < 128):
        raise AgentProtocolError(f"{op} answer has an exit status out of range")
    return KeptProcess(
        container_id,
        exec_id,
        _optional(entry, "pid", int, op) or 0,
        None if code is None else ExitStatus(code, signal),
        _stream_id(entry, "stdout", op),
        _stream_id(entry, "stderr", op),
    )
