"""An in-memory agent for unit tests: no VM, a few scripted commands.

Processes understand ``echo ARGS...`` (prints them), ``cat`` (copies stdin
to stdout), ``spew N`` (prints N bytes), ``sleep`` (runs until signalled),
``fail N`` (exits N), and anything else exits 0.  Every call is recorded in ``calls``.

An exec of ``raise ERROR`` fails with ERROR (an error in the JSON form of
:func:`virtcontainers.errors.error_to_dict`), and ``crash`` with a KeyError, so
tests can send any error through a real pod daemon.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import signal as signals
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from virtcontainers.agent.base import EventHandler, StdioStreams
from virtcontainers.agent.messages import NetInterface, NetRoute, OciProcess, OciResources
from virtcontainers.agent.results import (
    CloneInit,
    ContainerStats,
    ExitStatus,
    GuestDetails,
    GuestTable,
    ProcessInfo,
)
from virtcontainers.errors import AgentError, error_from_dict


def _argv(op: str, process: object) -> list[str]:
    """The args of an OCI process object, which the guest agent would refuse without."""
    args = process.get("args") if isinstance(process, Mapping) else None
    if not isinstance(args, list) or not args:
        raise AgentError(op, "invalid", "process.args must be a non-empty list of strings")
    return [str(arg) for arg in args]


def _raise_on_request(args: list[str]) -> None:
    if args[:1] == ["raise"] and len(args) == 2:
        raise error_from_dict(json.loads(args[1]))
    if args == ["crash"]:
        raise KeyError("crash")


class MockStream:
    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.to_host: asyncio.Queue[bytes] = asyncio.Queue()
        self.to_guest: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self) -> bytes:
        return await self.to_host.get()

    async def write(self, data: bytes) -> None:
        await self.to_guest.put(data)

    async def close(self) -> None:
        await self.to_guest.put(b"")


@dataclass
class MockProcess:
    args: list[str]
    pid: int
    stdio: StdioStreams
    started: asyncio.Event = field(default_factory=asyncio.Event)
    killed: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    status: asyncio.Future[ExitStatus] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: asyncio.Task[None] | None = None


class MockAgent:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.streams: dict[int, MockStream] = {}
        self.processes: dict[tuple[str, str | None], MockProcess] = {}
        self.paused: set[str] = set()
        self._ids = itertools.count(1)
        self._pids = itertools.count(100)
        self._handlers: list[EventHandler] = []
        self.connected = False
        self.listening: set[int] = set()
        """Guest ports connect_port reaches: each connection echoes what it gets."""
        self._echoes: set[asyncio.Task[None]] = set()

    def _record(self, op: str, **args: object) -> None:
        self.calls.append((op, args))

    async def connect(self, socket_path: Path, timeout: float) -> None:
        self._record("connect", socket_path=str(socket_path))
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        for task in self._echoes:
            task.cancel()
        for process in self.processes.values():
            if process.task is not None:
                process.task.cancel()

    def on_event(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    def send_event(self, name: str, fields: dict[str, object]) -> None:
        """An event from the guest, as the agent would send it (or forge it)."""
        for handler in self._handlers:
            handler(name, fields)

    def open_stream(self) -> MockStream:
        stream = MockStream(next(self._ids))
        self.streams[stream.stream_id] = stream
        return stream

    def release_stream(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    async def guest_details(self) -> GuestDetails:
        return GuestDetails("mock", "mock", "3.11", 1, 524288, "mock")

    def _spawn(self, key: tuple[str, str | None], args: list[str], stdio: StdioStreams) -> int:
        if key in self.processes and not self.processes[key].status.done():
            raise AgentError("exec", "exists", f"{key} exists")
        process = MockProcess(args, next(self._pids), stdio)
        process.task = asyncio.ensure_future(self._run(process))
        self.processes[key] = process
        return process.pid

    async def _emit(self, stream_id: int | None, data: bytes) -> None:
        if stream_id is not None and stream_id in self.streams:
            await self.streams[stream_id].to_host.put(data)

    async def _run(self, process: MockProcess) -> None:
        await process.started.wait()
        args = process.args
        out = process.stdio.stdout
        code = 0
        if args[0] == "echo":
            await self._emit(out, (" ".join(args[1:]) + "\n").encode())
        elif args[0] == "cat" and process.stdio.stdin is not None:
            source = self.streams[process.stdio.stdin].to_guest
            while chunk := await source.get():
                await self._emit(out, chunk)
        elif args[0] == "spew":
            for offset in range(0, int(args[1]), 65536):
                await self._emit(out, b"x" * min(65536, int(args[1]) - offset))
        elif args[0] == "sleep":
            code = 128 + await process.killed
        elif args[0] == "fail":
            code = int(args[1])
        for stream_id in (process.stdio.stdout, process.stdio.stderr):
            await self._emit(stream_id, b"")
        signum = code - 128 if code > 128 else None
        process.status.set_result(ExitStatus(code, signum))

    def _process(self, container_id: str | None, exec_id: str | None) -> MockProcess:
        try:
            return self.processes[(container_id or "", exec_id)]
        except KeyError:
            raise AgentError("process", "not_found", f"{container_id}/{exec_id}") from None

    async def create_container(
        self, container_id: str, bundle: Mapping[str, object], stdio: StdioStreams
    ) -> int:
        self._record("create_container", container_id=container_id, bundle=bundle)
        argv = _argv("create_container", bundle.get("process"))
        return self._spawn((container_id, None), argv, stdio)

    async def start_container(self, container_id: str) -> None:
        self._record("start_container", container_id=container_id)
        self._process(container_id, None).started.set()

    async def exec_process(
        self, container_id: str, exec_id: str, process: Mapping[str, object], stdio: StdioStreams
    ) -> int:
        self._record("exec_process", container_id=container_id, exec_id=exec_id)
        argv = _argv("exec_process", process)
        _raise_on_request(argv)
        pid = self._spawn((container_id, exec_id), argv, stdio)
        self.processes[(container_id, exec_id)].started.set()
        return pid

    async def signal_process(
        self, container_id: str | None, exec_id: str | None, sig: int, all_processes: bool = False
    ) -> None:
        self._record("signal_process", container_id=container_id, exec_id=exec_id, signal=sig)
        process = self._process(container_id, exec_id)
        if process.status.done():
            raise AgentError("signal_process", "state", "process has exited")
        if not process.killed.done() and sig in (signals.SIGTERM, signals.SIGKILL):
            process.killed.set_result(sig)
            process.started.set()

    async def wait_process(self, container_id: str | None, exec_id: str | None) -> ExitStatus:
        return await asyncio.shield(self._process(container_id, exec_id).status)

    async def resize_terminal(
        self, container_id: str | None, exec_id: str | None, rows: int, cols: int
    ) -> None:
        self._record("resize_terminal", container_id=container_id, rows=rows, cols=cols)

    async def close_output(self, stream_id: int) -> None:
        self._record("close_output", stream=stream_id)
        for process in self.processes.values():
            if stream_id in (process.stdio.stdout, process.stdio.stderr):
                if not process.killed.done():
                    process.killed.set_result(signals.SIGPIPE)
                process.started.set()

    async def list_processes(self, container_id: str) -> list[ProcessInfo]:
        return [
            ProcessInfo(p.pid, tuple(p.args))
            for (cid, _), p in self.processes.items()
            if cid == container_id and not p.status.done()
        ]

    async def mount_block(self, volume_id: str, serial: str, fstype: str, read_only: bool) -> None:
        self._record(
            "mount_block", volume_id=volume_id, serial=serial, fstype=fstype, read_only=read_only
        )

    async def unmount_block(self, volume_id: str) -> None:
        self._record("unmount_block", volume_id=volume_id)

    async def update_container(self, container_id: str, resources: OciResources) -> None:
        self._record("update_container", container_id=container_id, resources=dict(resources))

    async def container_stats(self, container_id: str) -> ContainerStats:
        self._record("container_stats", container_id=container_id)
        mine = [p for (cid, _), p in self.processes.items() if cid == container_id]
        stats = dict.fromkeys(ContainerStats.__dataclass_fields__, 0)
        stats["pids"] = sum(1 for p in mine if not p.status.done())
        return ContainerStats(**stats)

    async def pause_container(self, container_id: str) -> None:
        self._record("pause_container", container_id=container_id)
        self.paused.add(container_id)

    async def resume_container(self, container_id: str) -> None:
        self._record("resume_container", container_id=container_id)
        self.paused.discard(container_id)

    async def remove_container(self, container_id: str) -> None:
        self._record("remove_container", container_id=container_id)
        for key in [k for k in self.processes if k[0] == container_id]:
            del self.processes[key]

    async def exec_guest(self, exec_id: str, process: OciProcess, stdio: StdioStreams) -> int:
        self._record("exec_guest", exec_id=exec_id)
        pid = self._spawn(("", exec_id), list(process["args"]), stdio)
        self.processes[("", exec_id)].started.set()
        return pid

    async def configure_network(
        self, interfaces: Sequence[NetInterface], routes: Sequence[NetRoute], wait: float = 0.0
    ) -> None:
        self._record(
            "configure_network", interfaces=list(interfaces), routes=list(routes), wait=wait
        )

    async def init_clone(
        self, hostname: str, seed: bytes, time_ns: int, shared_fs: str | None
    ) -> CloneInit:
        self._record(
            "init_clone", hostname=hostname, seed=seed, time_ns=time_ns, shared_fs=shared_fs
        )
        return CloneInit(True, secrets.token_bytes(CloneInit.RANDOM_BYTES))

    async def connect_port(self, stream_id: int, port: int, family: int) -> None:
        self._record("connect_port", stream=stream_id, port=port, family=family)
        if port not in self.listening:
            raise AgentError("connect_port", "refused", f"nothing listens on port {port}")
        stream = self.streams[stream_id]
        task = asyncio.create_task(self._echo(stream))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    @staticmethod
    async def _echo(stream: MockStream) -> None:
        while chunk := await stream.to_guest.get():
            await stream.to_host.put(chunk)
        await stream.to_host.put(b"")

    async def shutdown(self) -> None:
        self._record("shutdown")

    async def process_table(self) -> GuestTable:
        """The mock's processes live in its daemon: none outlives it."""
        self._record("process_table")
        return GuestTable({}, ())

    async def resume_output(self, stream_ids: Sequence[int]) -> dict[int, MockStream]:
        self._record("resume_output", streams=list(stream_ids))
        return {}
