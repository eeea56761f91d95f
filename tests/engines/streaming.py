"""A client of the CRI's streaming server (Exec, Attach), as the kubelet's API server is one.

containerd's CRI answers Exec and Attach with a URL on its streaming server,
which speaks SPDY or websocket; over websocket, the Kubernetes channel
protocol ``v4.channel.k8s.io``: every binary message is one channel's bytes,
its first byte the channel (0 stdin, 1 stdout, 2 stderr, 3 the final status
as JSON, 4 terminal resizes). Written from RFC 6455 and that protocol
(k8s.io/apiserver wsstream), a few dozen lines, so that the tests need no
websocket library. It cannot end stdin: v4 has no way to say so, so the
commands it drives read what they need and end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

from virtcontainers.network.netns import run_in_netns

PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE = range(5)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BINARY, _CLOSE, _PING, _PONG = 0x2, 0x8, 0x9, 0xA


class ChannelStream:
    """One Exec or Attach session over a websocket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received: dict[int, bytes] = {}

    @classmethod
    def open(cls, url: str, netns: str | None = None) -> ChannelStream:
        """Upgrade a GET of ``url`` to a websocket, connected from the network
        namespace at ``netns`` (where the server listens) or this one."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        address = (parts.hostname, parts.port)
        sock = _connect(address, netns)
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
        )
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            assert chunk, f"the streaming server closed the connection: {head!r}"
            head += chunk
        status, *lines = head.decode().strip().split("\r\n")
        assert status.split()[1] == "101", head
        fields = (line.partition(":") for line in lines)
        headers = {name.lower(): value.strip() for name, _, value in fields}
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == accept, head
        return cls(sock)

    def send(self, channel: int, data: bytes) -> None:
        payload = bytes([channel]) + data
        mask = os.urandom(4)
        header = bytes([0x80 | _BINARY])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("the streaming server closed the connection")
            data += chunk
        return data

    def _frame(self) -> tuple[int, bytes]:
        first, second = self._exact(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._exact(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._exact(8))
        mask = self._exact(4) if second & 0x80 else b""
        payload = self._exact(size)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first & 0x0F, payload

    def receive(self) -> tuple[int, bytes] | None:
        """The next channel message; None once the server closes the session."""
        while True:
            try:
                opcode, payload = self._frame()
            except EOFError:
                return None
            if opcode == _CLOSE:
                return None
            if opcode == _PING:
                self.sock.sendall(bytes([0x80 | _PONG, 0x80]) + os.urandom(4))
            elif payload:
                return payload[0], payload[1:]

    def read_until(self, channel: int, expected: bytes, timeout: float = 60) -> bytes:
        """What came on ``channel`` once it holds ``expected``."""
        deadline = time.monotonic() + timeout
        while expected not in self.received.get(channel, b""):
            assert time.monotonic() < deadline, self.received
            if not self._take():
                break
        return self.received.get(channel, b"")

    def finish(self) -> dict[str, Any]:
        """Read to the end of the session; its final status (v4: JSON on channel 3)."""
        while self._take():
            pass
        return dict(json.loads(self.received.get(STATUS) or b"{}"))

    def _take(self) -> bool:
        message = self.receive()
        if message is None:
            return False
        channel, data = message
        self.received[channel] = self.received.get(channel, b"") + data
        return True

    def close(self) -> None:
        self.sock.close()


def _connect(address: tuple[str, int], netns: str | None) -> socket.socket:
    if netns is None:
        return socket.create_connection(address, timeout=60)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, lambda: socket.create_connection(address, timeout=60))
    finally:
        os.close(fd)


def exit_code(status: dict[str, Any]) -> int:
    """The exit code a v4 status says: Success is 0, NonZeroExitCode names it."""
    if status.get("status") == "Success":
        return 0
    causes = status.get("details", {}).get("causes", [])
    codes = [int(cause["message"]) for cause in causes if cause.get("reason") == "ExitCode"]
    assert codes, status
    return codes[0]
