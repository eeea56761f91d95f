"""Writing a process's output to the caller's fds without blocking the daemon.

The caller's fds are shared with the caller (a pipe, a socket, its terminal):
making them non-blocking would change them under the caller too.  So a
:class:`Sink` writes without blocking in its own way for each kind of fd:

- a pipe, FIFO or terminal is opened again through ``/proc/self/fd``, which
  gives an open file of our own, set non-blocking;
- a socket is written with ``MSG_DONTWAIT``, a per-call flag;
- a regular file (which cannot be polled, and whose writes do not wait on a
  reader) is written by a worker thread.

A slow reader then holds up only its own process's output: no thread waits
on it, so however many readers stall, every other relay keeps moving.

A container created without fds writes to a :class:`ContainerLog`, a file
of the daemon's own that is rotated at a set size: the guest decides how
much it writes, the host how much of it is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from virtcontainers.host.fdwait import wait_writable
from virtcontainers.stdio import Stdio


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reopen_nonblocking(fd: int) -> int | None:
    """An open file of our own on the same pipe or terminal, or None."""
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        return os.open(f"/proc/self/fd/{fd}", flags)
    except OSError:
        return None  # a pipe with no reader left (ENXIO): writes will fail anyway


class Sink:
    """One output fd (``close`` releases what the sink opened, not ``fd``)."""

    def __init__(self, fd: int, executor: ThreadPoolExecutor) -> None:
        self.fd = fd
        self.executor = executor
        mode = os.fstat(fd).st_mode
        self._own: int | None = None
        self._socket: socket.socket | None = None
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            self._own = _reopen_nonblocking(fd)
        elif stat.S_ISSOCK(mode):
            self._socket = socket.socket(fileno=os.dup(fd))

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; raises OSError (EPIPE when the reader is gone)."""
        if self._own is not None:
            await self._write_nonblocking(self._own, data)
        elif self._socket is not None:
            await self._send(self._socket, data)
        else:
            await asyncio.get_running_loop().run_in_executor(
                self.executor, _write_all, self.fd, data
            )

    @staticmethod
    async def _write_nonblocking(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await wait_writable(fd)

    @staticmethod
    async def _send(sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view, socket.MSG_DONTWAIT) :]
            except BlockingIOError:
                await wait_writable(sock.fileno())

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._own is not None:
            with contextlib.suppress(OSError):
                os.close(self._own)
            self._own = None


class ContainerLog:
    """``<logs>/<container>.log``, rotated to ``<container>.log.1`` when the next
    write would take it past ``cap`` bytes (one rotated file is kept).

    Its stdout and stderr share one fd, which :meth:`stdio` hands to the
    relay (and the relay closes); a rotation puts the new file on that fd.
    """

    def __init__(
        self, directory: Path, container_id: str, cap: int, executor: ThreadPoolExecutor
    ) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{container_id}.log"
        self.rotated = directory / f"{container_id}.log.1"
        self.cap = cap
        self.executor = executor
        self.fd = self._open(os.O_APPEND)
        self.size = os.fstat(self.fd).st_size
        self._lock = threading.Lock()

    def _open(self, mode: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | mode
        return os.open(self.path, flags, 0o600)

    def stdio(self) -> Stdio:
        return Stdio(stdin=None, stdout=self.fd, stderr=self.fd)

    async def write(self, data: bytes) -> None:
        """Append ``data``, rotating first if it would not fit; raises OSError."""
        await asyncio.get_running_loop().run_in_executor(self.executor, self._append, data)

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self.size and self.size + len(data) > self.cap:
                self._rotate()
            _write_all(self.fd, data)
            self.size += len(data)

    def _rotate(self) -> None:
        os.replace(self.path, self.rotated)
        fresh = self._open(os.O_APPEND | os.O_TRUNC)
        try:
            os.dup2(fresh, self.fd, inheritable=False)
        finally:
            os.close(fresh)
        self.size = 0
