"""The process a container engine watches for a vc-runtime container.

``create`` and ``exec --detach`` start :mod:`virtcontainers.cli.runtime.pidshim` with the
engine's stdio, or with a new terminal whose master goes to the engine over
``--console-socket`` (as runc sends it); the shim's pid goes in ``--pid-file``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from virtcontainers.cli.runtime.pidshim import ShimRequest
from virtcontainers.cli.runtime.state import RuntimeCommandError
from virtcontainers.errors import error_from_dict
from virtcontainers.host.pythonenv import package_env


def write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(str(pid))
    os.replace(tmp, path)


def _send_console(console_socket: Path, master: int) -> None:
    """Give the terminal's master end to the engine, as runc does (SCM_RIGHTS)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(console_socket))
        socket.send_fds(sock, [b"/dev/ptmx"], [master])


@contextlib.contextmanager
def _terminal(console_socket: Path | None) -> Iterator[tuple[int, int, int, int | None]]:
    """The stdio for the shim: ours, or a new terminal whose master goes to the engine."""
    if console_socket is None:
        yield 0, 1, 2, None
        return
    master, slave = os.openpty()
    try:
        _send_console(console_socket, master)
    finally:
        os.close(master)
    try:
        yield slave, slave, slave, slave
    finally:
        os.close(slave)


def start_shim(request: ShimRequest, console_socket: Path | None) -> subprocess.Popen[bytes]:
    """Start the pid-file process; returns it once the process exists in the VM."""
    request_r, request_w = os.pipe()
    ready_r, ready_w = os.pipe()
    with _terminal(console_socket) as (stdin, stdout, stderr, tty):
        pass_fds = [request_r, ready_w] + ([tty] if tty is not None else [])
        argv = [sys.executable, "-S", "-m", "virtcontainers.cli.runtime.pidshim"]
        argv += [str(request_r), str(ready_w)] + ([str(tty)] if tty is not None else [])
        shim = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=pass_fds,
            env=package_env(),
        )
    os.close(request_r)
    os.close(ready_w)
    with os.fdopen(request_w, "w") as out:
        json.dump(request, out)
    with os.fdopen(ready_r, "rb") as ready:
        answer = ready.read()
    try:
        message = json.loads(answer)
    except ValueError:
        shim.kill()
        shim.wait()
        raise RuntimeCommandError("the container process exited before it was created") from None
    if message.get("ok") is not True:
        shim.wait()
        raise error_from_dict(message.get("error"))
    return shim


def check_console(terminal: bool, console_socket: Path | None) -> None:
    """A terminal needs a console socket to hand it over, and only a terminal does
    (runc's own messages)."""
    if terminal and console_socket is None:
        raise RuntimeCommandError(
            "cannot allocate tty if runc will detach without setting console socket"
        )
    if not terminal and console_socket is not None:
        raise RuntimeCommandError(
            "cannot use console socket if runc will not detach or allocate tty"
        )
