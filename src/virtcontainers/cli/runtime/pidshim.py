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

    python -m virtcontainers.cli.runtime.pidshim REQUEST_FD READY_FD [TTY_FD]

REQUEST_FD carries one JSON object: ``{"pod_id": ..., "container": <a
ContainerConfig>}`` to create a container, or ``{"pod_id": ..., "exec":
{"container_id": ..., "cmd": <a Cmd>}}`` to exec in one.  It goes through the
API like any other caller.
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
from dataclasses import dataclass
from types import FrameType
from typing import NotRequired, TypedDict

from virtcontainers import api
from virtcontainers.config import Cmd, CmdDict, ContainerConfig, ContainerConfigDict
from virtcontainers.daemon import rpc
from virtcontainers.errors import VcError, error_to_dict


class ExecTarget(TypedDict):
    container_id: str
    cmd: CmdDict


class ShimRequest(TypedDict):
    """What REQUEST_FD carries: a container to create, or a process to exec."""

    pod_id: str
    container: NotRequired[ContainerConfigDict]
    exec: NotRequired[ExecTarget]


@dataclass(frozen=True)
class Target:
    """The process this shim stands for."""

    pod_id: str
    container_id: str
    exec_id: str | None


FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)


def _read_request(fd: int) -> ShimRequest:
    """The request, as vc-runtime's start_shim (our only caller) wrote it."""
    with os.fdopen(fd, "rb") as source:
        request: ShimRequest = json.loads(source.read())
    if not isinstance(request, dict):
        raise VcError("shim request is not an object")
    return request


def _report(fd: int, message: rpc.Succeeded | rpc.Failed) -> None:
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


def _start(request: ShimRequest) -> Target:
    """Create the container, or start the exec, with our stdio as its own."""
    pod_id = str(request.get("pod_id"))
    stdio = api.Stdio(stdin=0, stdout=1, stderr=2)
    if "container" in request:
        config = ContainerConfig.from_dict(request["container"])
        api.create_container(pod_id, config, stdio)
        return Target(pod_id, config.id, None)
    exec_request = request.get("exec")
    if exec_request is None:
        raise VcError("the shim request names neither a container nor an exec")
    container_id = str(exec_request.get("container_id"))
    cmd = Cmd.from_dict(exec_request.get("cmd") or {})
    handle = api.enter_container(pod_id, container_id, cmd, stdio)
    return Target(pod_id, container_id, handle.exec_id)


def _relay_signals(target: Target, tty_fd: int | None) -> None:
    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(VcError, OSError):
            api.signal_process(target.pod_id, target.container_id, target.exec_id, signum)

    def resize(_signum: int, _frame: FrameType | None) -> None:
        if tty_fd is not None:
            with contextlib.suppress(VcError, OSError):
                rows, cols = _window_size(tty_fd)
                api.resize_terminal(target.pod_id, target.container_id, target.exec_id, rows, cols)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    if tty_fd is not None:
        # The terminal becomes ours, so a resize by the engine reaches us as SIGWINCH.
        os.setsid()
        with contextlib.suppress(OSError):
            fcntl.ioctl(tty_fd, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGWINCH, resize)
        resize(signal.SIGWINCH, None)


def run(request_fd: int, ready_fd: int, tty_fd: int | None) -> int:
    try:
        target = _start(_read_request(request_fd))
    except VcError as exc:
        _report(ready_fd, {"ok": False, "error": error_to_dict(exc)})
        return 1
    _report(ready_fd, {"ok": True})
    _detach_stdio()
    _relay_signals(target, tty_fd)
    try:
        status = api.wait_process(target.pod_id, target.container_id, target.exec_id)
    except VcError:
        return 255
    return status.exit_code


def main() -> None:
    args = sys.argv[1:]
    tty_fd = int(args[2]) if len(args) > 2 else None
    sys.exit(run(int(args[0]), int(args[1]), tty_fd))


if __name__ == "__main__":
    main()
