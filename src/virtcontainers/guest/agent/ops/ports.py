"""connect_port: a TCP connection to the guest's own loopback, carried on one I/O stream.

The host forwards a connection made to ``localhost:PORT`` in the pod's network
namespace (containerd's CRI port-forward) to ``localhost:PORT`` here.  The
containers share the guest's root network namespace (crun makes them none of
their own), so that is where their servers listen.

One stream id carries both directions: the socket's reads go to the host as
DATA within the host's credit, and the host's DATA is written to the socket,
credited back as written.  An EOF from the host shuts the socket's sending
side; the socket's EOF goes to the host as an EOF.  The socket is closed once
both directions have ended, or at once when a new host connects (the new one
does not know the stream).
"""

from __future__ import annotations

import errno
import socket

from ..args import AgentError, arg_int, check_keys, invalid
from ..log import log
from ..streams import InStream, OutStream
from ..wire import protocol

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core import Agent
    from ..loop import Timer
    from ..model import Reply

MAX_CONNECTIONS = 256
"""Forwarded connections open (or opening) at once in this pod."""
CONNECT_TIMEOUT = 10.0
LOOPBACK = {4: (socket.AF_INET, "127.0.0.1"), 6: (socket.AF_INET6, "::1")}
_NOBODY_THERE = (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.ENETUNREACH)
"""Failures after which the other loopback address is worth a try."""


def connect_port(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    """Connect to ``port`` on loopback (``family``'s address first, the other if
    nobody listens there) and carry the connection on ``stream``.

    Answers AgentError: "invalid", "exists" (the stream is in use), "busy" (too
    many connections), "refused" (nothing listens), "timeout", "network".
    """
    check_keys(args, {"stream", "port", "family"}, {"stream", "port", "family"})
    stream_id = arg_int(args, "stream", 1, 0xFFFFFFFF)
    port = arg_int(args, "port", 1, 0xFFFF)
    family = arg_int(args, "family", 4, 6)
    if family not in LOOPBACK:
        raise invalid("family must be 4 or 6")
    if len(agent.forwards) >= MAX_CONNECTIONS:
        raise AgentError("busy", f"{MAX_CONNECTIONS} forwarded connections are open already")
    agent.claim_streams((stream_id, None, None))
    other = 6 if family == 4 else 4
    PortConnection(agent, reply, stream_id, port).attempt([family, other])


class PortConnection:
    """One forwarded connection, from its connect to its close."""

    def __init__(self, agent: Agent, reply: Reply, stream_id: int, port: int) -> None:
        self.agent = agent
        self.reply = reply
        self.stream_id = stream_id
        self.port = port
        self.sock: socket.socket | None = None
        self.timer: Timer | None = None
        self.out: SocketOut | None = None
        self.inp: SocketIn | None = None
        self.open_halves = 2
        agent.forwards.add(self)

    # --- connecting ------------------------------------------------------------

    def attempt(self, families: list[int]) -> None:
        family, address = LOOPBACK[families[0]]
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self._failed(families, exc.errno or errno.EIO)
            return
        code = sock.connect_ex((address, self.port))
        if code == 0:
            self._connected(sock)
        elif code == errno.EINPROGRESS:
            self.sock = sock
            self.agent.loop.set_writer(sock.fileno(), lambda: self._on_connect(families))
            self.timer = self.agent.loop.call_later(CONNECT_TIMEOUT, self._timed_out)
        else:
            sock.close()
            self._failed(families, code)

    def _on_connect(self, families: list[int]) -> None:
        sock = self._pending_socket()
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._connected(sock)
            return
        sock.close()
        self._failed(families, code)

    def _timed_out(self) -> None:
        self._pending_socket().close()
        self._give_up("timeout", f"no answer from port {self.port} in {CONNECT_TIMEOUT:g}s")

    def _pending_socket(self) -> socket.socket:
        sock = self.sock
        assert sock is not None
        self.sock = None
        self.agent.loop.forget(sock.fileno())
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return sock

    def _failed(self, families: list[int], code: int) -> None:
        if code in _NOBODY_THERE and len(families) > 1:
            self.attempt(families[1:])
            return
        if code in _NOBODY_THERE:
            self._give_up("refused", f"nothing listens on port {self.port} in the guest")
        else:
            self._give_up("network", f"connect to port {self.port}: {errno.errorcode.get(code)}")

    def _give_up(self, kind: str, message: str) -> None:
        self.agent.forwards.discard(self)
        self.agent.release_streams((self.stream_id, None, None))
        self.reply.error(kind, message)

    def _connected(self, sock: socket.socket) -> None:
        if self.reply.generation != self.agent.generation:
            sock.close()  # the host that asked is gone; the stream id is not ours now
            self.agent.forwards.discard(self)
            return
        self.sock = sock
        self.inp = SocketIn(self.agent, self.stream_id, sock.fileno(), self)
        self.out = SocketOut(self.agent, self.stream_id, sock.fileno(), self)
        self.reply.ok({})

    # --- relaying --------------------------------------------------------------

    def on_stream_done(self) -> None:
        self.open_halves -= 1
        if self.open_halves == 0:
            self.close()

    def shut_write(self) -> None:
        if self.sock is None:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the peer is gone: the read side ends too
            log(f"port {self.port}: shutdown: {exc}")

    def close(self) -> None:
        """Close the socket and unbind the stream, sending nothing more."""
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        for half in (self.out, self.inp):
            if half is not None:
                half.unbind()
        self.agent.loop.forget(sock.fileno())
        sock.close()
        self.agent.busy_streams.discard(self.stream_id)
        self.agent.forwards.discard(self)


class SocketOut(OutStream):
    """The socket's reads, to the host; the socket stays open for the other half."""

    conn: PortConnection

    def __init__(self, agent: Agent, stream_id: int, fd: int, conn: PortConnection) -> None:
        super().__init__(agent, stream_id, fd, conn)
        self.conn = conn

    def finish(self) -> None:
        if self.fd < 0:
            return
        self.agent.loop.set_reader(self.fd, None)
        self.fd = -1
        self.agent.send(protocol.data(self.stream_id, b"", eof=True))
        self.unbind()
        self.conn.on_stream_done()

    def orphan(self) -> None:
        self.conn.close()

    def unbind(self) -> None:
        self.fd = -1
        if self.agent.outs.get(self.stream_id) is self:
            del self.agent.outs[self.stream_id]


class SocketIn(InStream):
    """The host's DATA, written to the socket; its EOF shuts the socket's sending side."""

    def __init__(self, agent: Agent, stream_id: int, fd: int, conn: PortConnection) -> None:
        super().__init__(agent, stream_id, fd)
        self.conn = conn

    def close_fd(self) -> None:
        if self.fd >= 0:
            self.agent.loop.set_writer(self.fd, None)
            self.fd = -1
            self.conn.shut_write()

    def release(self) -> None:
        self.close_fd()
        if self.orphaned:
            return
        self.unbind()
        self.conn.on_stream_done()

    def orphan(self) -> None:
        self.conn.close()

    def unbind(self) -> None:
        self.fd = -1
        self.buffer.clear()
        self.orphaned = True
        if self.agent.ins.get(self.stream_id) is self:
            del self.agent.ins[self.stream_id]
