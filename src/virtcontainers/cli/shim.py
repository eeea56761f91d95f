"""The process a container engine watches: vc-runtime's pid-file contract.

Engines treat the pid in ``--pid-file`` as the container's process: they wait
for it, read its exit status, and send it signals.  ``vc-runtime create`` (and
``exec --detach``) start this small process with the caller's stdio (or the
terminal it made for ``--console-socket``).  It hands those fds to the pod
daemon, which relays them to the process in the VM; forwards the signals it
receives to that process; and exits with its exit status (128+N when killed
by signal N).  It imports as little as it can: it lives as long as the
container.

Usage (by vc-runtime only)::

    python -m virtcontainers.cli.shim SOCKET REQUEST_FD READY_FD [TTY_FD]

REQUEST_FD carries one JSON object: the RPC ``method`` and ``params`` that
create the process (``create_container`` or ``exec``) and the ``wait`` params.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import struct
import sys
import termios
from pathlib import Path
from types import FrameType
from typing import Any

from virtcontainers import rpc
from virtcontainers.errors import VcError

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)


def _read_request(fd: int) -> dict[str, Any]:
    with os.fdopen(fd, "rb") as source:
        request = json.loads(source.read())
    if not isinstance(request, dict):
        raise VcError("shim request is not an object")
    return request


def _report(fd: int, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(message).encode())
    os.close(fd)


def _detach_stdio() -> None:
    """Our copies of the stdio must not keep the engine's pipes open."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _window_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def run(socket_path: Path, request_fd: int, ready_fd: int, tty_fd: int | None) -> int:
    request = _read_request(request_fd)
    target = dict(request["wait"])
    try:
        params = dict(request["params"], stdio=["stdin", "stdout", "stderr"])
        result = rpc.call(socket_path, request["method"], params, [0, 1, 2], timeout=120)
    except VcError as exc:
        _report(ready_fd, {"ok": False, "error": rpc.error_to_dict(exc)})
        return 1
    if request["method"] == "exec":
        target["exec_id"] = result["exec_id"]
    _report(ready_fd, {"ok": True, "result": result})
    _detach_stdio()

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(VcError, OSError):
            rpc.call(socket_path, "kill", {**target, "signal": signum, "all": False})

    def resize(_signum: int, _frame: FrameType | None) -> None:
        if tty_fd is not None:
            with contextlib.suppress(VcError, OSError):
                rows, cols = _window_size(tty_fd)
                rpc.call(socket_path, "resize", {**target, "rows": rows, "cols": cols})

    for signum in FORWARDED:
        signal.signal(signum, forward)
    if tty_fd is not None:
        # The terminal becomes ours, so a resize by the engine reaches us as SIGWINCH.
        os.setsid()
        with contextlib.suppress(OSError):
            fcntl.ioctl(tty_fd, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGWINCH, resize)
        resize(signal.SIGWINCH, None)
    try:
        status = rpc.call(socket_path, "wait", target, timeout=None)
    except VcError:
        return 255
    return int(status["exit_code"])


def main() -> None:
    args = sys.argv[1:]
    tty_fd = int(args[3]) if len(args) > 3 else None
    sys.exit(run(Path(args[0]), int(args[1]), int(args[2]), tty_fd))


if __name__ == "__main__":
    main()
