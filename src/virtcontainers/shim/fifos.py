"""A process's stdio from containerd's fifos, as the api's Stdio takes it.

containerd names a fifo per stream (none for a stream it does not want; no
stderr with a terminal: the guest's terminal carries both).  The shim opens
them and hands the fds to the pod daemon, which relays them to the process in
the VM; the daemon keeps its own duplicates, so the shim closes its copies,
except one: a write end of stdin, held until containerd's CloseIO.  Without it
the relay would read end-of-file before containerd's writer opens, and a
stdin that containerd closes would never end.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from virtcontainers.api import Stdio


@dataclass
class Fifos:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass
class StdinHold:
    """The shim's write end of a process's stdin fifo (see the module docstring)."""

    fd: int | None = None

    def release(self) -> None:
        """Let the process see end-of-file once containerd's writer closes too."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _blocking(fd: int) -> int:
    os.set_blocking(fd, True)
    return fd


def open_fifos(fifos: Fifos) -> tuple[Stdio, StdinHold]:
    """The fifos opened (blocking until containerd reads stdout and stderr).

    Raises OSError when one cannot be opened; nothing stays open then.
    """
    stdio, hold = Stdio(), StdinHold()
    try:
        if fifos.stdin:
            # Non-blocking, so the open does not wait for containerd's writer;
            # the relay then reads it blocking.
            stdio.stdin = os.open(fifos.stdin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            hold.fd = os.open(fifos.stdin, os.O_WRONLY | os.O_CLOEXEC)
            _blocking(stdio.stdin)
        if fifos.stdout:
            stdio.stdout = os.open(fifos.stdout, os.O_WRONLY | os.O_CLOEXEC)
        if fifos.stderr and not fifos.terminal:
            stdio.stderr = os.open(fifos.stderr, os.O_WRONLY | os.O_CLOEXEC)
    except BaseException:
        stdio.close()
        hold.release()
        raise
    return stdio, hold
