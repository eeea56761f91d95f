"""Calls of the OCI runtime binary (crun in the guest, runc in host tests).

A call runs as a child of the agent and completes from the event loop; a
``create`` or ``exec`` also sets up the new process's stdio and adopts it.
"""

from __future__ import annotations

import json
import os
import socket
import struct

from .args import AgentError
from .log import log
from .osutil import close_fd, exit_status, read_text, spawn, unlink_quiet
from .wire import ERROR_LIMIT, bounded

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from .loop import Handler, Loop, Timer
    from .model import Process, Reply

    class CallOwner(Protocol):
        """What a runtime call needs of the agent: its loop, and the table of
        calls by pid that its reaper completes them from."""

        loop: Loop
        calls: dict[int, RuntimeCall]

    class LaunchOwner(CallOwner, Protocol):
        """What a launch needs of the agent besides: the runtime's command
        line, a console socket's path, the release of the process's stream ids
        if it fails, the connection the request came on, and the exits reaped
        before the process's pid was known."""

        generation: int
        pids: dict[int, Process]
        unclaimed: dict[int, int]

        def runtime_argv(self, *args: str, log_file: str | None = None) -> list[str]: ...

        def console_path(self, bundle_dir: str) -> str: ...

        def release_streams(self, streams: tuple[int | None, int | None, int | None]) -> None: ...


CAPTURE_LIMIT = 4 << 20
"""Bound on a runtime command's captured stdout (e.g. ``ps --format json``)."""


def log_errors(text: str) -> str:
    """The error messages of a runtime log (logrus text format), else its tail."""
    messages = []
    for line in text.splitlines():
        if "level=error" not in line and "level=fatal" not in line:
            continue
        _, found, value = line.partition(" msg=")
        if not found:
            continue
        if value.startswith('"'):
            try:
                value = str(json.loads(value))
            except ValueError:
                value = value.strip('"')
        messages.append(value)
    return "\n".join(messages) if messages else text[-ERROR_LIMIT:]


class RuntimeCall:
    """One run of the OCI runtime binary, completed from the event loop.

    With ``stdio`` the child gets those fds as 0, 1 and 2 (the container's own
    pipes: runc/crun pass them through); otherwise stdin is /dev/null and
    stdout/stderr are captured.
    """

    def __init__(
        self,
        agent: CallOwner,
        argv: list[str],
        done: Callable[[RuntimeCall], None],
        stdio: tuple[int, int, int] | None = None,
    ) -> None:
        self.agent = agent
        self.argv = argv
        self.done = done
        self.out = bytearray()
        self.err = bytearray()
        self.status: int | None = None
        self.open: dict[int, bytearray] = {}
        self.finished = False
        self.timer: Timer | None = None
        child_fds: list[int] = []
        try:
            if stdio is None:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                child_fds.append(null)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                child_fds += [out_w, err_w]
                self.open = {out_r: self.out, err_r: self.err}
                stdio = (null, out_w, err_w)
            self.pid = spawn(argv, stdio)
        except OSError as exc:
            for fd in list(self.open) + child_fds:
                close_fd(fd)
            raise AgentError("runtime", f"cannot run {argv[0]}: {exc}") from None
        finally:
            for fd in child_fds:
                close_fd(fd)
        agent.calls[self.pid] = self
        for fd in self.open:
            os.set_blocking(fd, False)
            agent.loop.set_reader(fd, self._reader(fd))

    def _reader(self, fd: int) -> Handler:
        def on_readable() -> None:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close(fd)
                self._maybe_done()
                return
            buf = self.open[fd]
            limit = CAPTURE_LIMIT if buf is self.out else ERROR_LIMIT
            if len(buf) < limit:
                buf += data[: limit - len(buf)]

        return on_readable

    def _close(self, fd: int) -> None:
        if fd in self.open:
            self.agent.loop.forget(fd)
            close_fd(fd)
            del self.open[fd]

    def exited(self, wait_status: int) -> None:
        self.status = exit_status(wait_status)[0]
        if self.open:  # a daemonized child may hold the pipes: do not wait long
            self.timer = self.agent.loop.call_later(1.0, self._finish)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.status is not None and not self.open:
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        for fd in list(self.open):
            self._close(fd)
        self.done(self)

    @property
    def ok(self) -> bool:
        return self.status == 0

    def error_text(self, extra: str = "") -> str:
        text = self.err.decode(errors="replace").strip() or extra.strip()
        return bounded(f"{os.path.basename(self.argv[0])} exited with {self.status}: {text}")


class ConsoleSocket:
    """A listening unix socket for ``--console-socket``: receives the pty master."""

    def __init__(self, loop: Loop, path: str) -> None:
        self.loop = loop
        self.path = path
        self.master = -1
        unlink_quiet(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.setblocking(False)
        loop.set_reader(self.sock.fileno(), self.poll)

    def poll(self) -> None:
        if self.master >= 0 or self.sock.fileno() < 0:
            return
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
            except OSError as exc:
                log(f"console socket: {exc}")
                return
            fds: list[int] = []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    count = len(payload) // 4
                    fds += struct.unpack(f"{count}i", payload[: count * 4])
            for extra in fds[1:]:
                close_fd(extra)
            if fds:
                self.master = fds[0]
                os.set_inheritable(self.master, False)

    def take(self) -> int:
        self.poll()
        master, self.master = self.master, -1
        self.close()
        return master

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.forget(self.sock.fileno())
            self.sock.close()
        unlink_quiet(self.path)
        if self.master >= 0:
            close_fd(self.master)
            self.master = -1


class Launch:
    """One ``create`` or ``exec``: the process's stdio, the runtime call, then adoption.

    Non-terminal processes get pipes (or /dev/null for null streams) as the
    runtime's own stdio, which runc/crun pass through to the process.  A
    terminal process gets a console socket instead; the runtime sends the pty
    master over it (SCM_RIGHTS).

    A launch that cannot start its runtime call undoes itself (the process's
    streams released, ``on_fail`` run) and raises.
    """

    def __init__(
        self,
        agent: LaunchOwner,
        reply: Reply,
        proc: Process,
        *,
        args: list[str],
        pid_file: str,
        log_file: str,
        on_ok: Callable[[int], None],
        on_fail: Handler,
    ) -> None:
        self.agent = agent
        self.reply, self.proc = reply, proc
        self.pid_file, self.log_file = pid_file, log_file
        self.on_ok, self.on_fail = on_ok, on_fail
        self.console: ConsoleSocket | None = None
        self.ours: list[int] = []  # our ends: stdin writer, stdout reader, stderr reader
        child: list[int] = []
        try:
            stdio: tuple[int, int, int] | None = None
            if proc.terminal:
                bundle_dir = os.path.dirname(pid_file)
                self.console = ConsoleSocket(agent.loop, agent.console_path(bundle_dir))
                args = [*args[:-1], "--console-socket", self.console.path, args[-1]]
            else:
                stdio = self._pipes(child)
            unlink_quiet(pid_file)
            argv = agent.runtime_argv(*args, log_file=log_file)
            RuntimeCall(agent, argv, self.done, stdio)  # done() runs later, from the loop
        except BaseException:
            self.close_ours()
            if self.console is not None:
                self.console.close()
            agent.release_streams(proc.streams)
            on_fail()
            raise
        finally:
            for fd in child:
                close_fd(fd)

    def _pipes(self, child: list[int]) -> tuple[int, int, int]:
        """The runtime's stdio: a pipe per stream (/dev/null for none), the
        child's ends appended to *child*, ours kept in ``ours``."""
        for index, stream_id in enumerate(self.proc.streams):
            if stream_id is None:
                child.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
                self.ours.append(-1)
                continue
            rfd, wfd = os.pipe()
            child.append(rfd if index == 0 else wfd)
            self.ours.append(wfd if index == 0 else rfd)
            os.set_blocking(self.ours[-1], False)
        return (child[0], child[1], child[2])

    def close_ours(self) -> None:
        for fd in self.ours:
            if fd >= 0:
                close_fd(fd)
        self.ours = []

    def done(self, call: RuntimeCall) -> None:
        master = self.console.take() if self.console is not None else -1
        pid = 0
        if call.ok:
            try:
                pid = int(read_text(self.pid_file, 64).strip())
            except (OSError, ValueError):
                pid = 0
        if call.ok and pid > 0 and (self.console is None or master >= 0):
            self.adopt(pid, master)
            return
        if master >= 0:
            close_fd(master)
        if not call.ok:
            message = call.error_text(self.failure_text())
        else:
            message = f"the runtime gave no {'pid' if pid <= 0 else 'console'}"
        self.close_ours()
        if self.reply.generation == self.agent.generation:  # else: a new host's ids now
            self.agent.release_streams(self.proc.streams)
        self.on_fail()
        self.reply.error("runtime", message)

    def failure_text(self) -> str:
        """What the runtime said: its stderr (the process's stderr pipe) or its log."""
        text = ""
        if len(self.ours) == 3 and self.ours[2] >= 0:
            try:
                text = os.read(self.ours[2], ERROR_LIMIT).decode(errors="replace")
            except OSError:
                text = ""
        if not text.strip():
            try:
                text = log_errors(read_text(self.log_file, 1 << 16))
            except OSError:
                text = ""
        return text

    def adopt(self, pid: int, master: int) -> None:
        agent, proc = self.agent, self.proc
        stale = self.reply.generation != agent.generation  # a new host meanwhile
        proc.pid = pid
        agent.pids[pid] = proc
        proc.bind(self.ours, master, stale)
        self.ours = []
        self.on_ok(pid)
        self.reply.ok({"pid": pid})
        status = agent.unclaimed.pop(pid, None)
        if status is not None:  # it exited before we read its pid file
            proc.exited(status)
