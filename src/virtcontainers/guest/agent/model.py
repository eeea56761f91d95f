"""What the agent keeps track of: replies owed, containers and their processes."""

from __future__ import annotations

import os

from .osutil import close_fd, exit_status, read_text
from .streams import InStream, OutStream
from .wire import bounded, protocol

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from typing import Protocol

    from virtcontainers.agent.messages import ExitEvent, OomEvent, Result

    from .loop import Handler, Timer
    from .streams import StreamOwner

    class ProcessOwner(StreamOwner, Protocol):
        """What replies and processes need of the agent: the connection a
        request came on, and the table of processes by pid."""

        generation: int
        pids: dict[int, Process]


EXIT_DRAIN_DELAY = 0.2
"""After a process exits, wait this long for its output EOFs before reporting."""


class Reply:
    """Answers one request exactly once, and only on the connection it came on."""

    def __init__(self, agent: ProcessOwner, request_id: int) -> None:
        self.agent = agent
        self.request_id = request_id
        self.generation = agent.generation
        self.done = False

    def _send(self, frame: bytes) -> None:
        if self.done:
            return
        self.done = True
        if self.generation == self.agent.generation:
            self.agent.send(frame)

    def ok(self, result: Result | None = None) -> None:
        try:
            frame = protocol.response_ok(self.request_id, result or {})
        except protocol.ProtocolError as exc:  # larger than a frame may be
            frame = protocol.response_error(self.request_id, "internal", bounded(str(exc)))
        self._send(frame)

    def error(self, kind: str, message: str) -> None:
        self._send(protocol.response_error(self.request_id, kind, bounded(message)))


class Container:
    def __init__(self, container_id: str, bundle_dir: str) -> None:
        self.id = container_id
        self.bundle_dir = bundle_dir
        self.status = "creating"
        self.init: Process | None = None
        self.execs: dict[str, Process] = {}
        self.memory_events: str | None = None
        self.oom_kills = 0
        self.busy = False
        self.after_exits: list[Handler] = []
        self.env: list[str] = []  # the init's env: the default for execs

    def processes(self) -> list[Process]:
        procs = list(self.execs.values())
        if self.init is not None:
            procs.insert(0, self.init)
        return procs

    def read_oom_kills(self) -> int:
        if self.memory_events is None:
            return 0
        try:
            for line in read_text(self.memory_events).splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return self.oom_kills


class Process:
    def __init__(
        self,
        agent: ProcessOwner,
        container: Container,
        exec_id: str | None,
        terminal: bool,
        streams: tuple[int | None, int | None, int | None],
    ) -> None:
        self.agent = agent
        self.container = container
        self.exec_id = exec_id
        self.terminal = terminal
        self.streams = streams
        self.pid: int | None = None
        self.outs: list[OutStream] = []
        self.stdin: InStream | None = None
        self.console: int = -1  # a dup of the pty master, for TIOCSWINSZ
        self.status: tuple[int, int | None] | None = None
        self.reported = False
        self.waiters: list[Reply] = []
        self.report_timer: Timer | None = None

    def bind(self, ours: list[int], master: int, stale: bool) -> None:
        """Relay the process's stdio: pipe ends ``ours`` (stdin writer, stdout
        and stderr readers; -1 for none) or, for a terminal, the pty master.
        stale: a new host connected meanwhile, so the ids are not ours to use."""
        agent = self.agent
        stdin_id, stdout_id, stderr_id = self.streams
        if self.terminal:
            self.console = os.dup(master)
            # stdout=null: the pty must still be drained (stream id 0 discards).
            self.outs.append(OutStream(agent, 0 if stale else stdout_id or 0, master, self))
            if stdin_id is not None:
                self.stdin = InStream(agent, 0 if stale else stdin_id, os.dup(self.console))
            if stderr_id is not None and not stale:  # a terminal has no separate stderr
                agent.send(protocol.data(stderr_id, b"", eof=True))
                agent.busy_streams.discard(stderr_id)
            return
        if ours[0] >= 0:
            self.stdin = InStream(agent, 0 if stale else stdin_id or 0, ours[0])
        for index in (1, 2):
            stream_id = self.streams[index]
            if ours[index] >= 0 and stream_id is not None:
                self.outs.append(OutStream(agent, 0 if stale else stream_id, ours[index], self))

    def exited(self, wait_status: int) -> None:
        self.status = exit_status(wait_status)
        container = self.container
        if self is container.init:
            container.status = "stopped"
        kills = container.read_oom_kills()
        if kills > container.oom_kills:
            container.oom_kills = kills
            oom: OomEvent = {"container_id": container.id}
            self.agent.send(protocol.event("oom", oom))
        for out in list(self.outs):
            out.pump(drain=True)
        if all(out.done for out in self.outs):
            self.report()
        else:
            self.report_timer = self.agent.loop.call_later(EXIT_DRAIN_DELAY, self.report)

    def on_stream_done(self) -> None:
        if self.status is not None and all(out.done for out in self.outs):
            self.report()

    def report(self) -> None:
        if self.reported or self.status is None:
            return
        self.reported = True
        if self.report_timer is not None:
            self.report_timer.cancel()
        code, sig = self.status
        exit_event: ExitEvent = {
            "container_id": self.container.id or None,  # "": the guest itself
            "exec_id": self.exec_id,
            "pid": self.pid,
            "exit_code": code,
            "signal": sig,
        }
        self.agent.send(protocol.event("exit", exit_event))
        waiters, self.waiters = self.waiters, []
        for reply in waiters:
            reply.ok({"exit_code": code, "signal": sig})
        if self.agent.pids.get(self.pid or 0) is self:
            del self.agent.pids[self.pid or 0]
        hooks, self.container.after_exits = self.container.after_exits, []
        for hook in hooks:
            hook()

    def close(self) -> None:
        """Drop every fd; the host gets EOF on streams still open."""
        for out in list(self.outs):
            out.finish()
        if self.stdin is not None:
            self.stdin.release()
        if self.console >= 0:
            close_fd(self.console)
            self.console = -1
        if self.agent.pids.get(self.pid or 0) is self:
            del self.agent.pids[self.pid or 0]
