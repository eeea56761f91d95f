"""Local RPC between API callers and a pod daemon: framing, errors, the client end.

One request per connection over the pod's unix socket: a 4-byte big-endian
length, then a UTF-8 JSON object ``{"method": str, "params": {...}}``.  File
descriptors (a process's stdio) ride along with the request as SCM_RIGHTS.
The daemon answers with one frame of the same shape: ``{"ok": true, "result":
...}`` or ``{"ok": false, "error": {"type": <VcError subclass>, "message":
..., "fields": {...}}}``, so an error arrives as the class it was raised as,
with its structured fields.  What each method takes and answers is declared
once, in :mod:`virtcontainers.daemon.calls`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypedDict

from virtcontainers.errors import DaemonError, ErrorDict, error_from_dict

LENGTH = struct.Struct("!I")
MAX_MESSAGE = 4 << 20
MAX_FDS = 4
CHECK_INTERVAL = 1.0
"""How often a caller waiting for an answer checks that the daemon can still give one."""


class Succeeded(TypedDict):
    """A report that something worked: a daemon is ready, vc-runtime's shim started."""

    ok: Literal[True]


class Answered(Succeeded):
    """The daemon's reply to a request that it served."""

    result: object  # in the JSON form its request declares (see calls)


class Failed(TypedDict):
    """A reply, or a report, that something failed."""

    ok: Literal[False]
    error: ErrorDict


def encode(message: Mapping[str, object]) -> bytes:
    payload = json.dumps(message).encode()
    if len(payload) > MAX_MESSAGE:
        raise DaemonError(f"RPC message of {len(payload)} bytes is too large")
    return LENGTH.pack(len(payload)) + payload


def decode(payload: bytes) -> dict[str, object]:
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise DaemonError(f"RPC message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise DaemonError("RPC message is not a JSON object")
    return message


class FrameReader:
    """Collects bytes until one whole frame is in (the same for both ends)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.buffer = bytearray()

    def feed(self, data: bytes) -> dict[str, object] | None:
        """Add ``data``; the frame's message once it is complete, else None."""
        self.buffer += data
        if len(self.buffer) < LENGTH.size:
            return None
        (length,) = LENGTH.unpack_from(self.buffer)
        if length > MAX_MESSAGE:
            raise DaemonError(f"RPC {self.what} of {length} bytes is too large")
        end = LENGTH.size + length
        if len(self.buffer) < end:
            return None
        return decode(bytes(self.buffer[LENGTH.size : end]))


def call(
    socket_path: Path,
    method: str,
    params: Mapping[str, object],
    fds: Sequence[int] = (),
    timeout: float | None = 60.0,
    check: Callable[[], None] | None = None,
) -> object:
    """Call ``method`` on the daemon listening at ``socket_path`` (synchronous).

    Raises the daemon's error as its own class, or DaemonError when the daemon
    cannot be reached or does not answer within ``timeout`` seconds.  While it
    waits, ``check`` runs every CHECK_INTERVAL seconds: it raises to give up
    early, on a daemon that can no longer answer.
    """
    data = encode({"method": method, "params": params})
    deadline = None if timeout is None else time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonError(f"pod daemon at {socket_path} is not running: {exc}") from exc
        except OSError as exc:
            raise DaemonError(f"cannot reach the pod daemon at {socket_path}: {exc}") from exc
        try:
            # send_fds may send part of a large request: the rest follows plainly.
            sent = socket.send_fds(sock, [data], list(fds)) if fds else 0
            if sent < len(data):
                sock.sendall(data[sent:])
            reply = _read_reply(sock, deadline, check)
        except TimeoutError:
            raise DaemonError(f"pod daemon did not answer {method} within {timeout}s") from None
        except OSError as exc:
            raise DaemonError(f"pod daemon connection failed during {method}: {exc}") from exc
    if reply.get("ok") is True:
        return reply.get("result")
    raise error_from_dict(reply.get("error"))


def _read_reply(
    sock: socket.socket, deadline: float | None, check: Callable[[], None] | None
) -> dict[str, object]:
    reader = FrameReader("answer")
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError
        wait = left
        if check is not None:
            wait = CHECK_INTERVAL if left is None else min(left, CHECK_INTERVAL)
        sock.settimeout(wait)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if check is None:
                raise
            check()
            continue
        if not chunk:
            raise DaemonError("pod daemon closed the connection without answering")
        message = reader.feed(chunk)
        if message is not None:
            return message


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
