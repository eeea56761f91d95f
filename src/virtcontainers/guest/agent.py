"""The virtcontainers guest agent.

Runs inside the VM as PID 1 (``python3.11 -S /opt/vc/agent/agent.py``) after the
initrd has mounted /proc, /sys, /dev, cgroup2 and the shared directory.  It
speaks the frame protocol of ``protocol.py`` (see docs/protocol.md) over one
byte stream, drives an OCI runtime (crun in the guest, runc in host tests) and
relays container process I/O with per-stream credit flow control.

Design constraints:

* standard library only, and few start-up imports: Python under TCG is slow
  to import (no asyncio, subprocess, argparse, re, shutil or traceback here);
* one thread and one ``selectors`` loop: the channel, process pipes, pty
  masters, console sockets and a self-pipe woken by SIGCHLD
  (``signal.set_wakeup_fd``);
* as PID 1 it reaps every child and never exits; otherwise it becomes a child
  subreaper so processes the runtime daemonizes are reparented to it.

Usage::

    agent.py [--fd N | --connect PATH] [--runtime PATH] [--state-dir DIR]
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from typing import Any, ClassVar

try:
    from virtcontainers.agent import protocol
except ImportError:  # in the guest the module sits beside the agent
    import vc_protocol as protocol  # type: ignore[import-not-found,no-redef]

AGENT_VERSION = "0.1.0"
WINDOW = protocol.STREAM_WINDOW
CHUNK = protocol.DATA_CHUNK
ERROR_LIMIT = 4096
"""Runtime error text sent to the host is bounded to this many bytes."""
CAPTURE_LIMIT = 4 << 20
"""Bound on a runtime command's captured stdout (e.g. ``ps --format json``)."""
EXIT_DRAIN_DELAY = 0.2
"""After a process exits, wait this long for its output EOFs before reporting."""
HUP_DELAY = 0.05
"""Pause before polling a hung-up virtio-serial port again."""
UNCLAIMED_LIMIT = 4096
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")
_STATUSES = ("created", "running", "paused", "stopped")

Handler = Callable[[], None]


# --------------------------------------------------------------------------- logging

_log_fd = 2


def log(message: str) -> None:
    line = f"vc-agent[{os.getpid()}]: {message}\n".encode(errors="replace")
    try:
        os.write(_log_fd, line)
    except OSError:
        return


def describe_exception(exc: BaseException) -> str:
    """A short traceback without importing traceback (keeps start-up lean)."""
    parts = [f"{type(exc).__name__}: {exc}"]
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        parts.append(f"  {code.co_filename}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    return "\n".join(parts)


# --------------------------------------------------------------------------- errors / args


class AgentError(Exception):
    """Answered to the host as ``{"ok": false, "error": {"kind", "message"}}``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def invalid(message: str) -> AgentError:
    return AgentError("invalid", message)


def valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 64
        and value[0] in _ID_FIRST
        and all(c in _ID_REST for c in value)
    )


def check_keys(args: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise invalid(f"unknown argument(s): {', '.join(unknown)}")
    missing = sorted(required - set(args))
    if missing:
        raise invalid(f"missing argument(s): {', '.join(missing)}")


def arg_id(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not valid_id(value):
        raise invalid(f"{name} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$")
    assert isinstance(value, str)
    return value


def arg_opt_id(args: dict[str, Any], name: str) -> str | None:
    if args.get(name) is None:
        return None
    return arg_id(args, name)


def arg_int(args: dict[str, Any], name: str, low: int, high: int) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"{name} must be an integer in {low}..{high}")
    return value


def arg_bool(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean")
    return value


def arg_streams(args: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    ids: list[int | None] = []
    for name in ("stdin", "stdout", "stderr"):
        value = args.get(name)
        if value is None:
            ids.append(None)
            continue
        ids.append(arg_int(args, name, 1, 0xFFFFFFFF))
    present = [i for i in ids if i is not None]
    if len(present) != len(set(present)):
        raise invalid("stdin, stdout and stderr must be distinct stream ids")
    return ids[0], ids[1], ids[2]


def check_process(process: object, what: str) -> dict[str, Any]:
    """Validate the parts of an OCI process object the agent relies on."""
    if not isinstance(process, dict):
        raise invalid(f"{what} must be an object")
    argv = process.get("args")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise invalid(f"{what}.args must be a non-empty list of strings")
    if not isinstance(process.get("terminal", False), bool):
        raise invalid(f"{what}.terminal must be a boolean")
    env = process.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise invalid(f"{what}.env must be a list of strings")
    cwd = process.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise invalid(f"{what}.cwd must be an absolute path")
    user = process.get("user", {})
    if not isinstance(user, dict):
        raise invalid(f"{what}.user must be an object")
    return process


def exit_status(status: int) -> tuple[int, int | None]:
    """Wait status -> (exit_code, signal); killed by signal N is 128+N."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, sig
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return 255, None


def rmtree(path: str) -> None:
    """shutil.rmtree without importing shutil; never follows symlinks."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            rmtree(entry.path)
        else:
            unlink_quiet(entry.path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        return


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        return


def read_text(path: str, limit: int = 1 << 20) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


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


def bounded(text: str, limit: int = ERROR_LIMIT) -> str:
    raw = text.strip().encode(errors="replace")
    if len(raw) <= limit:
        return raw.decode(errors="replace")
    return raw[: limit - 3].decode(errors="ignore") + "..."


# --------------------------------------------------------------------------- event loop


class Timer:
    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Handler) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """A minimal selectors loop: one reader and one writer callback per fd."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.handlers: dict[int, list[Handler | None]] = {}
        self.timers: list[Timer] = []
        self.stopped = False

    def _update(self, fd: int) -> None:
        pair = self.handlers.get(fd, [None, None])
        mask = (selectors.EVENT_READ if pair[0] else 0) | (selectors.EVENT_WRITE if pair[1] else 0)
        registered = fd in self.selector.get_map()
        if not mask:
            self.handlers.pop(fd, None)
            if registered:
                self.selector.unregister(fd)
        elif registered:
            self.selector.modify(fd, mask)
        else:
            self.selector.register(fd, mask)

    def set_reader(self, fd: int, callback: Handler | None) -> None:
        self.handlers.setdefault(fd, [None, None])[0] = callback
        self._update(fd)

    def set_writer(self, fd: int, callback: Handler | None) -> None:
        self.handlers.setdefault(fd, [None, None])[1] = callback
        self._update(fd)

    def forget(self, fd: int) -> None:
        """Drop every callback of fd; call before closing it."""
        if fd in self.handlers:
            self.handlers[fd] = [None, None]
            self._update(fd)

    def call_later(self, delay: float, callback: Handler) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        self.timers.append(timer)
        return timer

    @staticmethod
    def guarded(callback: Handler) -> None:
        try:
            callback()
        except Exception as exc:  # the agent must keep serving
            log(f"error in event handler: {describe_exception(exc)}")

    def run_once(self) -> None:
        self.timers = [t for t in self.timers if not t.cancelled]
        timeout: float | None = None
        if self.timers:
            timeout = max(0.0, min(t.deadline for t in self.timers) - time.monotonic())
        for key, mask in self.selector.select(timeout):
            pair = self.handlers.get(key.fd)
            if pair and mask & selectors.EVENT_READ and pair[0]:
                self.guarded(pair[0])
            pair = self.handlers.get(key.fd)
            if pair and mask & selectors.EVENT_WRITE and pair[1]:
                self.guarded(pair[1])
        now = time.monotonic()
        due = [t for t in self.timers if not t.cancelled and t.deadline <= now]
        for timer in due:
            timer.cancelled = True
            self.guarded(timer.callback)

    def run(self) -> None:
        while not self.stopped:
            self.run_once()


# --------------------------------------------------------------------------- channel


class Channel:
    """The byte stream to the host: a virtio-serial port or a socket."""

    def __init__(self, agent: Agent, fd: int, is_port: bool) -> None:
        self.agent = agent
        self.loop = agent.loop
        self.fd = fd
        self.is_port = is_port
        self.decoder = protocol.FrameDecoder(resync=True)
        self.queue: deque[bytes] = deque()
        self.partial: memoryview | None = None
        self.hung_up = False
        os.set_blocking(fd, False)
        self.loop.set_reader(fd, self.on_readable)

    # writing
    def send(self, frame: bytes) -> None:
        self.queue.append(frame)
        if not self.hung_up and self.partial is None and len(self.queue) == 1:
            self.flush()

    def flush(self) -> None:
        while True:
            if self.partial is None:
                if not self.queue:
                    break
                self.partial = memoryview(self.queue.popleft())
            try:
                written = os.write(self.fd, self.partial)
            except BlockingIOError:
                break
            except OSError as exc:
                self.hangup(f"write: {exc}")
                return
            self.partial = self.partial[written:] if written < len(self.partial) else None
        pending = self.partial is not None or bool(self.queue)
        self.loop.set_writer(self.fd, self.flush if pending else None)

    def drop_queued(self) -> None:
        """New host connection: unsent frames belonged to the previous one.

        The remainder of a frame already partly written is kept so that framing
        stays intact on a connection that is still the same byte stream.
        """
        self.queue.clear()

    # reading
    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            self.hangup(f"read: {exc}")
            return
        if not data:
            self.hangup("end of stream")
            return
        try:
            frames = self.decoder.feed(data)
        except protocol.ProtocolError as exc:  # cannot happen with resync, but be safe
            log(f"protocol error: {exc}")
            self.decoder = protocol.FrameDecoder(resync=True)
            return
        for frame in frames:
            try:
                self.agent.on_frame(frame)
            except Exception as exc:
                log(f"error handling {frame.type.name} frame: {describe_exception(exc)}")

    def hangup(self, reason: str) -> None:
        if self.hung_up or self.loop.stopped:
            return
        if not self.is_port and not self.agent.pid1:
            log(f"host connection closed ({reason}); exiting")
            self.loop.stopped = True
            self.loop.forget(self.fd)
            return
        # virtio-serial: the host went away; keep the fd and poll again later.
        self.hung_up = True
        self.loop.forget(self.fd)
        self.decoder = protocol.FrameDecoder(resync=True)
        self.loop.call_later(HUP_DELAY, self.resume)

    def resume(self) -> None:
        self.hung_up = False
        self.loop.set_reader(self.fd, self.on_readable)
        if self.partial is not None or self.queue:
            self.loop.set_writer(self.fd, self.flush)


# --------------------------------------------------------------------------- streams


class OutStream:
    """A process output fd (pipe or pty master) relayed as DATA frames.

    stream_id 0 means "nobody listens": output is read and discarded (a
    terminal whose host passed stdout=null must still be drained).
    """

    def __init__(self, agent: Agent, stream_id: int, fd: int, proc: Process) -> None:
        self.agent = agent
        self.stream_id = stream_id
        self.fd = fd
        self.proc = proc
        self.credit = WINDOW
        self.paused = False
        os.set_blocking(fd, False)
        if stream_id:
            agent.outs[stream_id] = self
        agent.loop.set_reader(fd, self.on_readable)

    @property
    def done(self) -> bool:
        return self.fd < 0

    def on_readable(self) -> None:
        self.pump(drain=False)

    def pump(self, drain: bool) -> None:
        while self.fd >= 0:
            size = min(CHUNK, self.credit) if self.stream_id else CHUNK
            if size <= 0:
                self.pause()
                return
            try:
                data = os.read(self.fd, size)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: pty master after the slave closed
                    log(f"read from stream {self.stream_id}: {exc}")
                data = b""
            if not data:
                self.finish()
                return
            if self.stream_id:
                self.credit -= len(data)
                self.agent.send(protocol.data(self.stream_id, data))
            if not drain:
                return

    def pause(self) -> None:
        if not self.paused and self.fd >= 0:
            self.paused = True
            self.agent.loop.set_reader(self.fd, None)

    def add_credit(self, count: int) -> None:
        self.credit += count
        if self.credit > WINDOW:
            log(f"host granted too much credit on stream {self.stream_id}; clamped")
            self.credit = WINDOW
        if self.paused and self.fd >= 0 and self.credit > 0:
            self.paused = False
            self.agent.loop.set_reader(self.fd, self.on_readable)

    def orphan(self) -> None:
        """New host connection: the id is unknown to it; read and discard."""
        if self.agent.outs.get(self.stream_id) is self:
            del self.agent.outs[self.stream_id]
            self.agent.busy_streams.discard(self.stream_id)
        self.stream_id = 0
        if self.paused and self.fd >= 0:
            self.paused = False
            self.agent.loop.set_reader(self.fd, self.on_readable)

    def finish(self) -> None:
        """EOF (or the container is removed): close and tell the host."""
        if self.fd < 0:
            return
        self.agent.loop.forget(self.fd)
        close_fd(self.fd)
        self.fd = -1
        if self.stream_id:
            self.agent.send(protocol.data(self.stream_id, b"", eof=True))
            if self.agent.outs.get(self.stream_id) is self:
                del self.agent.outs[self.stream_id]
            self.agent.busy_streams.discard(self.stream_id)
        self.proc.on_stream_done()


class InStream:
    """Host DATA on a stdin stream, written to a pipe or pty master.

    CREDIT goes back for every byte written (or discarded once the process
    cannot read any more), so the host never blocks on a dead process.
    """

    def __init__(self, agent: Agent, stream_id: int, fd: int) -> None:
        self.agent = agent
        self.stream_id = stream_id
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False
        self.orphaned = stream_id == 0  # 0: nobody writes (kept only to hold the fd)
        os.set_blocking(fd, False)
        if stream_id:
            agent.ins[stream_id] = self

    def on_data(self, frame: protocol.Frame) -> None:
        if self.eof:
            return  # nothing may follow EOF
        if self.fd < 0:
            self.grant(len(frame.payload))
        else:
            self.buffer += frame.payload
            if len(self.buffer) > WINDOW:
                log(f"host overran the stdin window on stream {self.stream_id}")
        if frame.eof:
            self.eof = True
        self.flush()

    def grant(self, count: int) -> None:
        if self.eof or self.orphaned:
            return  # the host sends no more: no CREDIT after its EOF
        while count > 0:
            step = min(count, WINDOW)
            self.agent.send(protocol.encode_credit(self.stream_id, step))
            count -= step

    def flush(self) -> None:
        while self.fd >= 0 and self.buffer:
            try:
                written = os.write(self.fd, self.buffer[:CHUNK])
            except BlockingIOError:
                self.agent.loop.set_writer(self.fd, self.flush)
                return
            except OSError as exc:  # EPIPE/EIO: the reader is gone
                if exc.errno not in (errno.EPIPE, errno.EIO):
                    log(f"write to stdin stream {self.stream_id}: {exc}")
                self.grant(len(self.buffer))
                self.buffer.clear()
                self.close_fd()
                break
            del self.buffer[:written]
            self.grant(written)
        if self.fd >= 0:
            self.agent.loop.set_writer(self.fd, None)
            if self.eof and not self.buffer:
                self.close_fd()
        if self.eof and not self.buffer:
            self.release()

    def orphan(self) -> None:
        """New host connection: unbind the stream id, drop unwritten bytes.

        The pipe stays open (the process does not see EOF) until the process
        is removed: the new host knows nothing of this stream.
        """
        self.buffer.clear()
        if self.fd >= 0:
            self.agent.loop.set_writer(self.fd, None)
        if self.orphaned:
            return
        self.orphaned = True
        if self.agent.ins.get(self.stream_id) is self:
            del self.agent.ins[self.stream_id]
        self.agent.busy_streams.discard(self.stream_id)

    def close_fd(self) -> None:
        if self.fd >= 0:
            self.agent.loop.forget(self.fd)
            close_fd(self.fd)
            self.fd = -1

    def release(self) -> None:
        self.close_fd()
        if self.orphaned:
            return  # the id may already belong to the new connection
        self.orphaned = True
        if self.agent.ins.get(self.stream_id) is self:
            del self.agent.ins[self.stream_id]
        self.agent.busy_streams.discard(self.stream_id)


# --------------------------------------------------------------------------- model


class Reply:
    """Answers one request exactly once, and only on the connection it came on."""

    def __init__(self, agent: Agent, request_id: int) -> None:
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

    def ok(self, result: dict[str, Any] | None = None) -> None:
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
        agent: Agent,
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
            self.agent.send(protocol.event("oom", {"container_id": container.id}))
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
        self.agent.send(
            protocol.event(
                "exit",
                {
                    "container_id": self.container.id or None,  # "": the guest itself
                    "exec_id": self.exec_id,
                    "pid": self.pid,
                    "exit_code": code,
                    "signal": sig,
                },
            )
        )
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


class RuntimeCall:
    """One run of the OCI runtime binary, completed from the event loop.

    With ``stdio`` the child gets those fds as 0, 1 and 2 (the container's own
    pipes: runc/crun pass them through); otherwise stdin is /dev/null and
    stdout/stderr are captured.
    """

    def __init__(
        self,
        agent: Agent,
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


def spawn(argv: list[str], stdio: tuple[int, int, int]) -> int:
    """posix_spawn with stdio on 0-2; Python's ignored signals reset to default."""
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    resets = [signal.SIGPIPE, signal.SIGXFSZ]
    if argv[0].startswith("/"):
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsigdef=resets)
    return os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions, setsigdef=resets)


def fork_exec(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stdio: tuple[int, int, int],
    *,
    terminal: bool,
    ids: tuple[int, int],
) -> int:
    """Start a process in the guest itself (exec_guest): its own session, the
    given stdio (for a terminal, the pty slave becomes its controlling tty).
    A failure before exec comes back as OSError through a close-on-exec pipe.
    """
    if terminal:  # imported before fork(): the child only execs
        import fcntl
        import termios
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe-ish work, then exec
        try:
            os.close(err_r)
            os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            if terminal:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.chdir(cwd)
            if ids[1]:
                os.setgroups([])
                os.setgid(ids[1])
            if ids[0]:
                os.setuid(ids[0])
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(err_w, f"{exc.errno}:{exc.strerror}".encode())
        finally:
            os._exit(127)
    os.close(err_w)
    try:
        message = b""
        while chunk := os.read(err_r, 512):
            message += chunk
    finally:
        os.close(err_r)
    if message:
        code, _, text = message.decode(errors="replace").partition(":")
        raise OSError(int(code) if code.isdigit() else errno.EIO, text)
    return pid


class ConsoleSocket:
    """A listening unix socket for ``--console-socket``: receives the pty master."""

    def __init__(self, agent: Agent, path: str) -> None:
        self.agent = agent
        self.path = path
        self.master = -1
        unlink_quiet(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.setblocking(False)
        agent.loop.set_reader(self.sock.fileno(), self.poll)

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
            self.agent.loop.forget(self.sock.fileno())
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
    """

    def __init__(
        self,
        agent: Agent,
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
        self.reply = reply
        self.proc = proc
        self.pid_file = pid_file
        self.log_file = log_file
        self.on_ok = on_ok
        self.on_fail = on_fail
        self.console: ConsoleSocket | None = None
        self.ours: list[int] = []  # our ends: stdin writer, stdout reader, stderr reader
        child: list[int] = []
        try:
            stdio: tuple[int, int, int] | None = None
            if proc.terminal:
                bundle_dir = os.path.dirname(pid_file)
                self.console = ConsoleSocket(agent, agent.console_path(bundle_dir))
                args = [*args[:-1], "--console-socket", self.console.path, args[-1]]
            else:
                for index, stream_id in enumerate(proc.streams):
                    if stream_id is None:
                        child.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
                        self.ours.append(-1)
                        continue
                    rfd, wfd = os.pipe()
                    child.append(rfd if index == 0 else wfd)
                    self.ours.append(wfd if index == 0 else rfd)
                    os.set_blocking(self.ours[-1], False)
                stdio = (child[0], child[1], child[2])
            unlink_quiet(pid_file)
            argv = agent.runtime_argv(*args, log_file=log_file)
            RuntimeCall(agent, argv, self.done, stdio)  # done() runs later, from the loop
        except BaseException:
            self.close_ours()
            if self.console is not None:
                self.console.close()
            raise
        finally:
            for fd in child:
                close_fd(fd)

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


# --------------------------------------------------------------------------- agent


class Agent:
    def __init__(self, runtime: str, state_dir: str, pid1: bool) -> None:
        self.runtime = runtime
        self.state_dir = state_dir
        self.bundles = os.path.join(state_dir, "bundles")
        self.runtime_root = os.path.join(state_dir, "runtime")
        self.pid1 = pid1
        self.loop = Loop()
        self.channel: Channel | None = None
        self.generation = 0
        self.containers: dict[str, Container] = {}
        self.pids: dict[int, Process] = {}
        self.calls: dict[int, RuntimeCall] = {}
        self.unclaimed: dict[int, int] = {}
        self.outs: dict[int, OutStream] = {}
        self.ins: dict[int, InStream] = {}
        self.busy_streams: set[int] = set()
        self.runtime_version: str | None = None
        self.console_seq = 0
        self.keepalive: object = None
        self.guest = Container("", state_dir)  # exec_guest processes: not a container
        self.guest.status = "running"
        os.makedirs(self.bundles, exist_ok=True)
        os.makedirs(self.runtime_root, exist_ok=True)
        self._setup_sigchld()

    # ---------------------------------------------------------------- plumbing

    def _setup_sigchld(self) -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self.wakeup_fd = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.loop.set_reader(rfd, self.on_wakeup)

    def on_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            call = self.calls.pop(pid, None)
            if call is not None:
                call.exited(status)
                continue
            proc = self.pids.get(pid)
            if proc is not None and proc.status is None:
                proc.exited(status)
                continue
            self.unclaimed[pid] = status  # its pid-file may not be read yet
            while len(self.unclaimed) > UNCLAIMED_LIMIT:
                del self.unclaimed[next(iter(self.unclaimed))]

    def attach(self, channel: Channel) -> None:
        self.channel = channel

    def send(self, frame: bytes) -> None:
        if self.channel is not None:
            self.channel.send(frame)

    def run(self) -> None:
        self.reap()
        self.loop.run()

    def runtime_argv(self, *args: str, log_file: str | None = None) -> list[str]:
        argv = [self.runtime, "--root", self.runtime_root]
        if log_file:
            argv += ["--log", log_file]
        return argv + list(args)

    def run_runtime(
        self,
        reply: Reply,
        args: list[str],
        on_ok: Callable[[RuntimeCall], None],
        settle: Handler | None = None,
    ) -> None:
        """Run ``<runtime> args``; on failure answer a "runtime" error.

        settle (if any) runs first when the command has finished, either way.
        """

        def done(call: RuntimeCall) -> None:
            if settle is not None:
                settle()
            if not call.ok:
                reply.error("runtime", call.error_text())
                return
            try:
                on_ok(call)
            except AgentError as exc:
                reply.error(exc.kind, exc.message)
            except Exception as exc:
                log(describe_exception(exc))
                reply.error("internal", f"{type(exc).__name__}: {exc}")

        RuntimeCall(self, self.runtime_argv(*args), done)

    # ---------------------------------------------------------------- frames

    def on_frame(self, frame: protocol.Frame) -> None:
        ftype = frame.type
        if ftype is protocol.FrameType.HELLO:
            self.on_hello(frame)
        elif self.generation == 0:
            log(f"ignoring {ftype.name} frame before HELLO")
        elif ftype is protocol.FrameType.REQUEST:
            self.on_request(frame)
        elif ftype is protocol.FrameType.DATA:
            stdin = self.ins.get(frame.stream)
            if stdin is not None:
                stdin.on_data(frame)
        elif ftype is protocol.FrameType.CREDIT:
            try:
                count = frame.credit()
            except protocol.ProtocolError as exc:
                log(f"bad CREDIT on stream {frame.stream}: {exc}")
                return
            out = self.outs.get(frame.stream)
            if out is not None:
                out.add_credit(count)
        else:
            log(f"ignoring unexpected {ftype.name} frame from the host")

    def on_hello(self, frame: protocol.Frame) -> None:
        try:
            message = frame.json()
        except protocol.ProtocolError as exc:
            log(f"bad HELLO: {exc}")
            return
        nonce = message.get("nonce")
        if not isinstance(nonce, str):
            log("HELLO without a string nonce ignored")
            return
        # A new connection: forget what belonged to the previous one.
        self.generation += 1
        if self.channel is not None:
            self.channel.drop_queued()
        for container in self.containers.values():
            for proc in container.processes():
                proc.waiters.clear()
        for stdin in list(self.ins.values()):
            stdin.orphan()
        for out in list(self.outs.values()):
            out.orphan()
        self.busy_streams.clear()
        self.send(
            protocol.encode_json(
                protocol.FrameType.HELLO,
                0,
                {
                    "version": protocol.PROTOCOL_VERSION,
                    "nonce": nonce,
                    "agent_version": AGENT_VERSION,
                },
            )
        )

    def on_request(self, frame: protocol.Frame) -> None:
        reply = Reply(self, frame.stream)
        try:
            message = frame.json()
            op = message.get("op")
            args = message.get("args", {})
            if not isinstance(op, str):
                raise invalid("op must be a string")
            if not isinstance(args, dict):
                raise invalid("args must be an object")
            handler = self.OPS.get(op)
            if handler is None:
                raise invalid(f"unknown op {op!r}")
            handler(self, reply, args)
        except protocol.ProtocolError as exc:
            reply.error("invalid", str(exc))
        except AgentError as exc:
            reply.error(exc.kind, exc.message)
        except Exception as exc:
            log(describe_exception(exc))
            reply.error("internal", f"{type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- lookups

    def container(self, args: dict[str, Any]) -> Container:
        cid = arg_id(args, "container_id")
        container = self.containers.get(cid)
        if container is None:
            raise AgentError("not_found", f"no container {cid!r}")
        return container

    def process(self, args: dict[str, Any]) -> Process:
        exec_id = arg_opt_id(args, "exec_id")
        if args.get("container_id") is None:  # exec_guest processes
            if exec_id is None:
                raise invalid("exec_id is required when container_id is null")
            proc = self.guest.execs.get(exec_id)
            if proc is None:
                raise AgentError("not_found", f"no guest exec {exec_id!r}")
            return proc
        container = self.container(args)
        proc = container.init if exec_id is None else container.execs.get(exec_id)
        if proc is None:
            if exec_id is None:
                raise AgentError("state", f"container {container.id!r} is still being created")
            raise AgentError("not_found", f"no exec {exec_id!r} in container {container.id!r}")
        return proc

    def claim_streams(self, streams: tuple[int | None, int | None, int | None]) -> None:
        for stream_id in streams:
            if stream_id is not None and stream_id in self.busy_streams:
                raise AgentError("exists", f"stream {stream_id} is already in use")
        self.busy_streams.update(s for s in streams if s is not None)

    def release_streams(self, streams: tuple[int | None, int | None, int | None]) -> None:
        for stream_id in streams:
            if stream_id is not None:
                self.busy_streams.discard(stream_id)

    def console_path(self, bundle_dir: str) -> str:
        self.console_seq += 1
        path = os.path.join(bundle_dir, f"console-{self.console_seq}.sock")
        if len(path.encode()) >= 100:  # sun_path limit
            path = f"/tmp/vc-agent-{os.getpid()}-{self.console_seq}.sock"
        return path

    # ---------------------------------------------------------------- launching

    # ---------------------------------------------------------------- ops

    def op_ping(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, set(), set())
        reply.ok({})

    def op_guest_details(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, set(), set())
        memory = 0
        try:
            for line in read_text("/proc/meminfo").splitlines():
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            pass
        details: dict[str, Any] = {
            "kernel": os.uname().release,
            "agent_version": AGENT_VERSION,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count() or 1,
            "memory_kib": memory,
        }
        if self.runtime_version is not None:
            reply.ok(dict(details, runtime=self.runtime_version))
            return

        def done(call: RuntimeCall) -> None:
            text = call.out.decode(errors="replace").strip()
            first = text.splitlines()[0] if text else ""
            if call.ok:
                self.runtime_version = first
            reply.ok(dict(details, runtime=first if call.ok else ""))

        try:
            RuntimeCall(self, [self.runtime, "--version"], done)
        except AgentError:
            reply.ok(dict(details, runtime=""))

    def op_create_container(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(
            args,
            {"container_id", "bundle", "rootfs", "stdin", "stdout", "stderr"},
            {"container_id", "bundle", "rootfs"},
        )
        cid = arg_id(args, "container_id")
        bundle = args["bundle"]
        if not isinstance(bundle, dict):
            raise invalid("bundle must be an OCI runtime-spec object")
        rootfs = args["rootfs"]
        if not isinstance(rootfs, str) or not rootfs.startswith("/") or "\0" in rootfs:
            raise invalid("rootfs must be an absolute path")
        process = check_process(bundle.get("process"), "bundle.process")
        root = bundle.get("root", {})
        if not isinstance(root, dict):
            raise invalid("bundle.root must be an object")
        streams = arg_streams(args)
        if cid in self.containers:
            raise AgentError("exists", f"container {cid!r} already exists")
        if not os.path.isdir(rootfs):
            raise invalid(f"rootfs {rootfs} is not a directory")
        self.claim_streams(streams)
        bundle_dir = os.path.join(self.bundles, cid)
        try:
            rmtree(bundle_dir)  # a leftover of an earlier agent run
            os.makedirs(bundle_dir, mode=0o700)
            config = dict(bundle, root=dict(root, path=rootfs))
            write_file(os.path.join(bundle_dir, "config.json"), json.dumps(config).encode())
        except OSError as exc:
            self.release_streams(streams)
            rmtree(bundle_dir)
            raise AgentError("internal", f"cannot write bundle: {exc}") from None
        container = Container(cid, bundle_dir)
        container.env = list(process.get("env", []))
        proc = Process(self, container, None, bool(process.get("terminal", False)), streams)
        self.containers[cid] = container
        pid_file = os.path.join(bundle_dir, "init.pid")

        def on_ok(pid: int) -> None:
            container.init = proc
            container.status = "created"
            self.find_cgroup(container, pid)

        def on_fail() -> None:
            self.containers.pop(cid, None)
            rmtree(bundle_dir)

        try:
            Launch(
                self,
                reply,
                proc,
                args=["create", "--bundle", bundle_dir, "--pid-file", pid_file, cid],
                pid_file=pid_file,
                log_file=os.path.join(bundle_dir, "runtime.log"),
                on_ok=on_ok,
                on_fail=on_fail,
            )
        except BaseException:
            self.release_streams(streams)
            on_fail()
            raise

    def find_cgroup(self, container: Container, pid: int) -> None:
        try:
            for line in read_text(f"/proc/{pid}/cgroup").splitlines():
                if line.startswith("0::"):
                    path = "/sys/fs/cgroup" + line[3:].rstrip("/") + "/memory.events"
                    if os.path.exists(path):
                        container.memory_events = path
                        container.oom_kills = container.read_oom_kills()
                    return
        except OSError:
            pass

    def op_start_container(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, {"container_id"}, {"container_id"})
        container = self.container(args)
        if container.status != "created" or container.busy:
            raise AgentError("state", f"container {container.id!r} is {container.status}")

        def on_ok(call: RuntimeCall) -> None:
            if container.status == "created":
                container.status = "running"
            reply.ok({})

        self.run_busy(container, reply, ["start", container.id], on_ok)

    def run_busy(
        self,
        container: Container,
        reply: Reply,
        args: list[str],
        on_ok: Callable[[RuntimeCall], None],
    ) -> None:
        """A runtime call during which no other state change may start."""
        container.busy = True

        def settle() -> None:
            container.busy = False

        try:
            self.run_runtime(reply, args, on_ok, settle)
        except BaseException:
            container.busy = False
            raise

    def op_exec_process(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(
            args,
            {"container_id", "exec_id", "process", "stdin", "stdout", "stderr"},
            {"container_id", "exec_id", "process"},
        )
        arg_id(args, "container_id")
        exec_id = arg_id(args, "exec_id")
        process = dict(check_process(args["process"], "process"))
        streams = arg_streams(args)
        container = self.container(args)
        old = container.execs.get(exec_id)
        if old is not None and not old.reported:
            raise AgentError("exists", f"exec {exec_id!r} already exists")
        if container.status != "running":
            raise AgentError("state", f"container {container.id!r} is {container.status}")
        self.claim_streams(streams)
        if old is not None:
            old.close()
            del container.execs[exec_id]
        process.setdefault("cwd", "/")
        process.setdefault("user", {"uid": 0, "gid": 0})
        process.setdefault("env", list(container.env))
        terminal = bool(process.get("terminal", False))
        process_file = os.path.join(container.bundle_dir, f"exec-{exec_id}.json")
        pid_file = os.path.join(container.bundle_dir, f"exec-{exec_id}.pid")
        try:
            write_file(process_file, json.dumps(process).encode())
        except OSError as exc:
            self.release_streams(streams)
            raise AgentError("internal", f"cannot write process file: {exc}") from None
        proc = Process(self, container, exec_id, terminal, streams)
        container.execs[exec_id] = proc
        argv = ["exec", "--process", process_file, "--detach", "--pid-file", pid_file]
        if terminal:
            argv.append("--tty")

        def on_fail() -> None:
            if container.execs.get(exec_id) is proc:
                del container.execs[exec_id]

        try:
            Launch(
                self,
                reply,
                proc,
                args=[*argv, container.id],
                pid_file=pid_file,
                log_file=os.path.join(container.bundle_dir, f"exec-{exec_id}.log"),
                on_ok=lambda pid: None,
                on_fail=on_fail,
            )
        except BaseException:
            self.release_streams(streams)
            on_fail()
            raise

    def op_exec_guest(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(
            args, {"exec_id", "process", "stdin", "stdout", "stderr"}, {"exec_id", "process"}
        )
        exec_id = arg_id(args, "exec_id")
        process = check_process(args["process"], "process")
        streams = arg_streams(args)
        user = process.get("user", {})
        uid, gid = user.get("uid", 0), user.get("gid", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (uid, gid)):
            raise invalid("process.user.uid and gid must be non-negative integers")
        old = self.guest.execs.get(exec_id)
        if old is not None and not old.reported:
            raise AgentError("exists", f"guest exec {exec_id!r} already exists")
        self.claim_streams(streams)
        terminal = bool(process.get("terminal", False))
        proc = Process(self, self.guest, exec_id, terminal, streams)
        ours: list[int] = []
        child: list[int] = []
        master = -1
        try:
            if terminal:
                master, slave = os.openpty()
                child = [slave, slave, slave]
            else:
                for index, stream_id in enumerate(streams):
                    if stream_id is None:
                        child.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
                        ours.append(-1)
                        continue
                    rfd, wfd = os.pipe()
                    child.append(rfd if index == 0 else wfd)
                    ours.append(wfd if index == 0 else rfd)
            env = dict(e.partition("=")[::2] for e in process.get("env", []))
            env.setdefault("PATH", DEFAULT_PATH)
            pid = fork_exec(
                process["args"],
                env,
                process.get("cwd", "/"),
                (child[0], child[1], child[2]),
                terminal=terminal,
                ids=(uid, gid),
            )
        except BaseException as exc:
            for fd in [*ours, master]:
                if fd >= 0:
                    close_fd(fd)
            self.release_streams(streams)
            if isinstance(exc, OSError):
                raise AgentError("runtime", f"cannot run {process['args'][0]}: {exc}") from None
            raise
        finally:
            for fd in set(child):
                close_fd(fd)
        if old is not None:
            old.close()
        self.guest.execs[exec_id] = proc
        proc.pid = pid
        self.pids[pid] = proc
        proc.bind(ours, master, stale=False)
        reply.ok({"pid": pid})

    def op_signal_process(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, {"container_id", "exec_id", "signal", "all"}, {"container_id", "signal"})
        signum = arg_int(args, "signal", 1, 64)
        every = arg_bool(args, "all", False)
        proc = self.process(args)
        if proc.pid is None:
            raise AgentError("state", "the process has not started yet")
        if proc.status is not None:
            raise AgentError("state", f"process {proc.pid} has already exited")
        if every:
            container = proc.container
            self.run_runtime(
                reply, ["kill", "--all", container.id, str(signum)], lambda call: reply.ok({})
            )
            return
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            raise AgentError("state", f"process {proc.pid} has already exited") from None
        except OSError as exc:
            raise AgentError("internal", f"kill {proc.pid}: {exc}") from None
        reply.ok({})

    def op_wait_process(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, {"container_id", "exec_id"}, {"container_id"})
        proc = self.process(args)
        if proc.reported and proc.status is not None:
            reply.ok({"exit_code": proc.status[0], "signal": proc.status[1]})
        else:
            proc.waiters.append(reply)

    def op_resize_terminal(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(
            args, {"container_id", "exec_id", "rows", "cols"}, {"container_id", "rows", "cols"}
        )
        rows = arg_int(args, "rows", 0, 0xFFFF)
        cols = arg_int(args, "cols", 0, 0xFFFF)
        proc = self.process(args)
        if not proc.terminal:
            raise AgentError("state", "the process has no terminal")
        if proc.console < 0:
            raise AgentError("state", "the terminal is not open")
        import fcntl
        import termios

        fcntl.ioctl(proc.console, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        reply.ok({})

    def op_list_processes(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, {"container_id"}, {"container_id"})
        container = self.container(args)
        if container.status == "creating":
            raise AgentError("state", f"container {container.id!r} is being created")

        def on_ok(call: RuntimeCall) -> None:
            try:
                pids = json.loads(call.out.decode() or "[]")
            except ValueError:
                raise AgentError("runtime", "runtime ps printed invalid JSON") from None
            if not isinstance(pids, list):
                raise AgentError("runtime", "runtime ps did not print a list")
            processes = []
            budget = protocol.MAX_PAYLOAD // 2  # keep the answer within one frame
            for pid in pids:
                if not isinstance(pid, int) or isinstance(pid, bool):
                    continue
                try:
                    cmdline = read_text(f"/proc/{pid}/cmdline", ERROR_LIMIT)
                except OSError:
                    continue  # exited meanwhile
                budget -= len(cmdline) + 32
                if budget < 0:
                    break
                args = cmdline.rstrip("\0").split("\0") if cmdline else []
                processes.append({"pid": pid, "args": args})
            reply.ok({"processes": processes})

        self.run_runtime(reply, ["ps", "--format", "json", container.id], on_ok)

    def op_pause_container(self, reply: Reply, args: dict[str, Any]) -> None:
        self._pause_resume(reply, args, "pause", "running", "paused")

    def op_resume_container(self, reply: Reply, args: dict[str, Any]) -> None:
        self._pause_resume(reply, args, "resume", "paused", "running")

    def _pause_resume(
        self, reply: Reply, args: dict[str, Any], command: str, before: str, after: str
    ) -> None:
        check_keys(args, {"container_id"}, {"container_id"})
        container = self.container(args)
        if container.status != before or container.busy:
            raise AgentError("state", f"container {container.id!r} is {container.status}")

        def on_ok(call: RuntimeCall) -> None:
            if container.status == before:
                container.status = after
            reply.ok({})

        self.run_busy(container, reply, [command, container.id], on_ok)

    def op_container_state(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, {"container_id"}, {"container_id"})
        container = self.container(args)
        if container.status not in _STATUSES:
            raise AgentError("state", f"container {container.id!r} is being created")
        pid = container.init.pid if container.init is not None else None
        reply.ok({"status": container.status, "pid": pid})

    def op_remove_container(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, {"container_id"}, {"container_id"})
        container = self.container(args)
        if container.status == "creating" or container.busy:
            raise AgentError("state", f"container {container.id!r} is busy")

        def finish() -> None:
            if self.containers.get(container.id) is not container:
                return
            for proc in container.processes():
                waiters, proc.waiters = proc.waiters, []
                for waiter in waiters:
                    waiter.error("not_found", f"container {container.id!r} was removed")
                proc.close()
            del self.containers[container.id]
            rmtree(container.bundle_dir)
            reply.ok({})

        def on_deleted(call: RuntimeCall) -> None:
            # delete --force killed the processes: report their exits first.
            if all(proc.reported or proc.pid is None for proc in container.processes()):
                finish()
                return
            container.after_exits.append(check)
            self.loop.call_later(2.0, finish)

        def check() -> None:
            if all(proc.reported or proc.pid is None for proc in container.processes()):
                finish()
            else:
                container.after_exits.append(check)

        self.run_busy(container, reply, ["delete", "--force", container.id], on_deleted)

    def op_shutdown(self, reply: Reply, args: dict[str, Any]) -> None:
        check_keys(args, set(), set())
        reply.ok({})
        if self.channel is not None and not self.channel.hung_up:
            self.channel.flush()
        os.sync()

    OPS: ClassVar[dict[str, Callable[[Agent, Reply, dict[str, Any]], None]]] = {
        "ping": op_ping,
        "guest_details": op_guest_details,
        "create_container": op_create_container,
        "start_container": op_start_container,
        "exec_process": op_exec_process,
        "exec_guest": op_exec_guest,
        "signal_process": op_signal_process,
        "wait_process": op_wait_process,
        "resize_terminal": op_resize_terminal,
        "list_processes": op_list_processes,
        "pause_container": op_pause_container,
        "resume_container": op_resume_container,
        "container_state": op_container_state,
        "remove_container": op_remove_container,
        "shutdown": op_shutdown,
    }


# --------------------------------------------------------------------------- start-up

USAGE = """usage: agent.py [--fd N | --connect PATH] [--runtime PATH] [--state-dir DIR]

  --fd N           use the inherited file descriptor N (a socket) as the channel
  --connect PATH   connect to the unix socket PATH as the channel
  --runtime PATH   OCI runtime binary (default: $VC_AGENT_RUNTIME or crun)
  --state-dir DIR  bundles and runtime state (default: /run/vc)

Without --fd/--connect the agent opens the virtio-serial port named "agent".
"""


class Options:
    def __init__(self) -> None:
        self.fd: int | None = None
        self.connect: str | None = None
        self.runtime = os.environ.get("VC_AGENT_RUNTIME") or "crun"
        self.state_dir = "/run/vc"


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    items = list(argv)
    while items:
        item = items.pop(0)
        if item in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        name, eq, value = item.partition("=")
        if name not in ("--fd", "--connect", "--runtime", "--state-dir"):
            raise SystemExit(f"agent: unknown option {item!r}\n{USAGE}")
        if not eq:
            if not items:
                raise SystemExit(f"agent: {name} needs a value")
            value = items.pop(0)
        if name == "--fd":
            try:
                opts.fd = int(value)
            except ValueError:
                raise SystemExit("agent: --fd needs an integer") from None
        elif name == "--connect":
            opts.connect = value
        elif name == "--runtime":
            opts.runtime = value
        else:
            opts.state_dir = value
    if opts.fd is not None and opts.connect is not None:
        raise SystemExit("agent: --fd and --connect are exclusive")
    return opts


def find_port(name: str = "agent") -> str | None:
    base = "/sys/class/virtio-ports"
    try:
        ports = sorted(os.listdir(base))
    except OSError:
        return None
    for port in ports:
        try:
            if read_text(os.path.join(base, port, "name")).strip() == name:
                return "/dev/" + port
        except OSError:
            continue
    return None


def open_channel(opts: Options) -> tuple[int, bool, socket.socket | None]:
    """(fd, is_port, socket object to keep alive)."""
    if opts.fd is not None:
        return opts.fd, False, None
    if opts.connect is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(opts.connect)
        return sock.fileno(), False, sock
    while True:
        path = find_port()
        if path is not None:
            try:
                return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC), True, None
            except OSError as exc:
                log(f"cannot open {path}: {exc}")
        time.sleep(0.1)  # the port may not be probed yet


def become_subreaper() -> None:
    import ctypes  # only off PID 1: the guest image need not ship ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        log(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")


def ensure_stdio() -> None:
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def main(argv: list[str] | None = None) -> int:
    global _log_fd
    pid1 = os.getpid() == 1
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        if not pid1:
            raise
        log(f"bad command line ({exc.code}); using the defaults")  # PID 1 must not exit
        opts = Options()
    ensure_stdio()
    if pid1:
        try:
            _log_fd = os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            _log_fd = 2
    else:
        become_subreaper()
    if "PATH" not in os.environ:
        os.environ["PATH"] = DEFAULT_PATH
    while True:
        agent: Agent | None = None
        try:
            agent = Agent(opts.runtime, opts.state_dir, pid1)
            fd, is_port, sock = open_channel(opts)
            agent.attach(Channel(agent, fd, is_port))
            agent.keepalive = sock
            agent.run()
            if not pid1:
                return 0
            log("event loop ended; restarting")
        except BaseException as exc:
            if not pid1:
                raise
            log(f"agent failed, restarting: {describe_exception(exc)}")
            if agent is not None:
                agent.loop.selector.close()
            time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
