"""A process in the guest as the pod daemon sees it: stdio relays and exit status.

The caller's stdio file descriptors arrive in the daemon over the RPC socket.
They are shared with the caller, so the daemon never makes them non-blocking
(that would leak into the caller's terminal): reads wait for readiness in the
event loop (or in a thread, for regular files, which epoll refuses) and
writes run in worker threads.  Backpressure is end to end: a slow reader of
stdout stops the daemon from reading the agent stream, which withholds the
guest's credit, which stops the agent from reading the container's pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from virtcontainers.agent.base import Agent, StdioStreams, Stream
from virtcontainers.agent.results import ExitStatus
from virtcontainers.errors import VcError
from virtcontainers.host.fdwait import wait_readable
from virtcontainers.pod.sinks import ContainerLog, Sink
from virtcontainers.stdio import Stdio

READ_CHUNK = 64 * 1024
DRAIN_IDLE_SECONDS = 5.0

log = logging.getLogger(__name__)


async def _read_fd(fd: int, executor: ThreadPoolExecutor) -> bytes:
    try:
        await wait_readable(fd)
    except (ValueError, OSError):
        # Regular files cannot be polled; a blocking read in a thread is fine for them.
        return await asyncio.get_running_loop().run_in_executor(executor, os.read, fd, READ_CHUNK)
    return os.read(fd, READ_CHUNK)


@dataclass
class ProcessIO:
    """Pumps bytes between host fds and the agent's streams for one process."""

    agent: Agent
    stdio: Stdio
    executor: ThreadPoolExecutor
    streams: StdioStreams = field(default_factory=StdioStreams)
    moved: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _outputs: list[asyncio.Task[None]] = field(default_factory=list)
    _agent_streams: list[Stream] = field(default_factory=list)
    _attached: dict[str, list[Sink]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    _writing: int = 0
    """Output writes waiting on a slow reader: the output is not idle then."""
    log: ContainerLog | None = None
    """Where the output goes when the caller gave no fds (``stdio`` is its fd)."""
    _reader_came: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def resumed(
        cls,
        agent: Agent,
        executor: ThreadPoolExecutor,
        streams: dict[str, Stream],
        stdio: Stdio,
        log: ContainerLog | None = None,
    ) -> ProcessIO:
        """The relay of a process a previous daemon started, over its resumed
        output ``streams`` (by name).  An output without an fd in ``stdio`` is
        held in the guest (its writer blocks once the pipe is full) until a
        caller attaches to it; with ``log``, output goes there."""
        io = cls(agent, stdio, executor, log=log)
        io._agent_streams = list(streams.values())
        io.streams = StdioStreams(
            None,
            streams["stdout"].stream_id if "stdout" in streams else None,
            streams["stderr"].stream_id if "stderr" in streams else None,
        )
        return io

    def open(self) -> StdioStreams:
        """Allocate agent streams for the fds given; None fds stay /dev/null."""
        ids: dict[str, int | None] = {}
        for name in ("stdin", "stdout", "stderr"):
            if getattr(self.stdio, name) is None:
                ids[name] = None
                continue
            stream = self.agent.open_stream()
            self._agent_streams.append(stream)
            ids[name] = stream.stream_id
        self.streams = StdioStreams(**ids)
        return self.streams

    def start(self) -> None:
        by_id = {s.stream_id: s for s in self._agent_streams}
        if self.stdio.stdin is not None and self.streams.stdin is not None:
            task = asyncio.create_task(self._pump_in(self.stdio.stdin, by_id[self.streams.stdin]))
            self._tasks.append(task)
        for name, fd, sid in (
            ("stdout", self.stdio.stdout, self.streams.stdout),
            ("stderr", self.stdio.stderr, self.streams.stderr),
        ):
            if sid is not None:  # without an fd: held until a caller attaches
                task = asyncio.create_task(self._pump_out(by_id[sid], fd, self._attached[name]))
                self._outputs.append(task)
                self._tasks.append(task)

    def attach(self, stdout: int | None, stderr: int | None) -> None:
        """Also copy the process's output, from now on, to these fds (owned from here).

        Output the process writes to the terminal goes to ``stdout``.
        """
        for name, fd in (("stdout", stdout), ("stderr", stderr)):
            if fd is None:
                continue
            if getattr(self.streams, name) is None or all(t.done() for t in self._outputs):
                os.close(fd)
                continue
            self._attached[name].append(Sink(fd, self.executor))
            self._reader_came.set()

    async def _pump_in(self, fd: int, stream: Stream) -> None:
        try:
            while chunk := await _read_fd(fd, self.executor):
                await stream.write(chunk)
            await stream.close()
        except OSError as exc:
            log.debug("stdin relay stopped: %s", exc)
            try:
                await stream.close()
            except (VcError, OSError) as close_error:
                log.warning("closing stdin stream %d: %s", stream.stream_id, close_error)

    async def _pump_out(self, stream: Stream, fd: int | None, attached: list[Sink]) -> None:
        sink: Sink | ContainerLog | None = self.log
        if sink is None and fd is not None:
            sink = Sink(fd, self.executor)
        broken = False
        try:
            while sink is None and not attached:
                self._reader_came.clear()
                await self._reader_came.wait()
            while chunk := await stream.read():
                self.moved += len(chunk)
                for extra in list(attached):
                    try:
                        await self._write(extra, chunk)
                    except OSError:
                        attached.remove(extra)  # that attached caller went away
                        extra.close()
                        os.close(extra.fd)
                if broken or sink is None:
                    continue  # keep draining so the guest process is never stuck on a full pipe
                try:
                    await self._write(sink, chunk)
                except OSError as exc:
                    log.debug("output relay to fd %d broke: %s", fd, exc)
                    broken = True
                    if exc.errno == errno.EPIPE:
                        # As SIGPIPE ends a local writer: the guest closes its pipe.
                        await self._close_output(stream)
        finally:
            if isinstance(sink, Sink):
                sink.close()

    async def _write(self, sink: Sink | ContainerLog, chunk: bytes) -> None:
        self._writing += 1
        try:
            await sink.write(chunk)
        finally:
            self._writing -= 1

    async def _close_output(self, stream: Stream) -> None:
        try:
            await self.agent.close_output(stream.stream_id)
        except (VcError, OSError) as exc:
            log.debug("closing output stream %d in the guest: %s", stream.stream_id, exc)

    async def drained(self) -> None:
        """Wait until output streams end, or stop coming for a while after exit.

        A process that exits while a background child still holds its stdout
        would otherwise keep its waiter forever.  Output that waits on a slow
        reader is not idle: it is delivered, never dropped.
        """
        if not self._outputs:
            return
        while True:
            before = self.moved
            done, _ = await asyncio.wait(self._outputs, timeout=DRAIN_IDLE_SECONDS)
            if len(done) == len(self._outputs):
                return
            if self.moved == before and not self._writing:
                return

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("a stdio relay failed")
        for sinks in self._attached.values():
            while sinks:
                extra = sinks.pop()
                extra.close()
                with contextlib.suppress(OSError):
                    os.close(extra.fd)
        release = getattr(self.agent, "release_stream", None)
        for stream in self._agent_streams:
            if release is not None:
                release(stream.stream_id)
        self.stdio.close()


@dataclass
class GuestProcess:
    """A container's init or exec'd process (exec_id None is the init)."""

    container_id: str | None
    exec_id: str | None
    io: ProcessIO
    pid: int = 0
    status: ExitStatus | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> ExitStatus:
        await self.done.wait()
        assert self.status is not None
        return self.status
