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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor

from virtcontainers.host.fdwait import wait_writable


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
