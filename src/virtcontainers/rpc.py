"""Local RPC between API callers and a pod daemon.

One request per connection over the pod's unix socket: a 4-byte big-endian
length, then a UTF-8 JSON object ``{"method": str, "params": {...}}``.  File
descriptors (a process's stdio) ride along with the request as SCM_RIGHTS.
The daemon answers with one frame of the same shape: ``{"ok": true, "result":
...}`` or ``{"ok": false, "error": {"type": <VcError subclass>, "message": ...}}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from virtcontainers import errors
from virtcontainers.errors import DaemonError, VcError

LENGTH = struct.Struct("!I")
MAX_MESSAGE = 4 << 20
MAX_FDS = 4


def encode(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message).encode()
    if len(payload) > MAX_MESSAGE:
        raise DaemonError(f"RPC message of {len(payload)} bytes is too large")
    return LENGTH.pack(len(payload)) + payload


def error_to_dict(exc: BaseException) -> dict[str, Any]:
    kind = type(exc).__name__ if isinstance(exc, VcError) else "VcError"
    return {"type": kind, "message": str(exc)}


def error_from_dict(error: object) -> VcError:
    if not isinstance(error, dict):
        return DaemonError(f"malformed error from the pod daemon: {error!r}")
    cls = getattr(errors, str(error.get("type")), VcError)
    if not (isinstance(cls, type) and issubclass(cls, VcError)):
        cls = VcError
    exc = cls.__new__(cls)
    Exception.__init__(exc, str(error.get("message")))
    return exc


def decode(payload: bytes) -> dict[str, Any]:
    message = json.loads(payload)
    if not isinstance(message, dict):
        raise DaemonError("RPC message is not a JSON object")
    return message


def call(
    socket_path: Path,
    method: str,
    params: dict[str, Any],
    fds: Sequence[int] = (),
    timeout: float | None = 60.0,
) -> Any:
    """Call ``method`` on the daemon listening at ``socket_path`` (synchronous)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonError(f"pod daemon at {socket_path} is not running: {exc}") from exc
        data = encode({"method": method, "params": params})
        try:
            if fds:
                socket.send_fds(sock, [data], list(fds))
            else:
                sock.sendall(data)
            reply = _read_frame_sync(sock)
        except TimeoutError:
            raise DaemonError(f"pod daemon did not answer {method} within {timeout}s") from None
        except OSError as exc:
            raise DaemonError(f"pod daemon connection failed during {method}: {exc}") from exc
    if reply.get("ok") is True:
        return reply.get("result")
    raise error_from_dict(reply.get("error"))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise DaemonError("pod daemon closed the connection without answering")
        chunks += chunk
    return bytes(chunks)


def _read_frame_sync(sock: socket.socket) -> dict[str, Any]:
    (length,) = LENGTH.unpack(_recv_exact(sock, LENGTH.size))
    if length > MAX_MESSAGE:
        raise DaemonError(f"RPC answer of {length} bytes is too large")
    return decode(_recv_exact(sock, length))


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
