"""The pod's namespace loopback, forwarded into the VM: each connection one agent stream.

A connection that something on the host (containerd's CRI port-forward) makes
to ``localhost:PORT`` inside the pod's network namespace is redirected to the
daemon's listener there (:mod:`virtcontainers.network.loopnat`); the daemon
reads the port that was dialled, asks the agent to connect to that port on
the guest's loopback, and relays the bytes both ways over one agent stream,
with its credit flow control.  An EOF either way is passed on as a
half-close; a connection the guest refuses is closed at once.  See
docs/network.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from virtcontainers.agent.base import Agent, Stream
from virtcontainers.errors import VcError
from virtcontainers.network.loopnat import (
    LoopbackListeners,
    original_port,
    redirect_loopback,
    remove_redirect,
)

MAX_CONNECTIONS = 256
"""Forwarded connections open at once in one pod; more are closed on arrival
(the guest agent holds to the same number)."""
READ_CHUNK = 64 * 1024


class LoopbackForwarder:
    """Forwards one pod's namespace loopback to its guest while the pod runs."""

    def __init__(self, agent: Agent, listeners: LoopbackListeners, log: logging.Logger) -> None:
        self._agent = agent
        self._listeners = listeners
        self._log = log.getChild("portforward")
        self._servers: list[asyncio.Server] = []
        self._relays: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls, agent: Agent, netns: str, pod_id: str, log: logging.Logger
    ) -> LoopbackForwarder:
        """Listen in ``netns`` and redirect its loopback TCP there.  Raises what
        :func:`~virtcontainers.network.loopnat.redirect_loopback` raises, with
        nothing left behind."""
        listeners = await asyncio.to_thread(redirect_loopback, netns, pod_id)
        forwarder = cls(agent, listeners, log)
        try:
            for sock in listeners.sockets:
                forwarder._servers.append(await asyncio.start_server(forwarder._serve, sock=sock))
        except BaseException:
            await forwarder.close()
            raise
        ports = [sock.getsockname()[1] for sock in listeners.sockets]
        forwarder._log.info("loopback of %s forwarded to the guest (listeners %s)", netns, ports)
        return forwarder

    @property
    def connections(self) -> int:
        return len(self._relays)

    async def close(self) -> None:
        """Stop listening, end every forwarded connection, delete the table.
        Raises NetworkError if the table could not be deleted."""
        for server in self._servers:
            server.close()
        self._servers.clear()
        for task in list(self._relays):
            task.cancel()
        for task in list(self._relays):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(remove_redirect, self._listeners)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            if len(self._relays) > MAX_CONNECTIONS:
                self._log.warning("%d connections forwarded already: one refused", MAX_CONNECTIONS)
                return
            await self._forward(reader, writer)
        except (VcError, OSError) as exc:
            self._log.info("forwarded connection ended: %s", exc)
        finally:
            self._relays.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        port = original_port(sock)
        family = 6 if sock.family == socket.AF_INET6 else 4
        stream = self._agent.open_stream()
        try:
            await self._agent.connect_port(stream.stream_id, port, family)
            self._log.debug("port %d: stream %d", port, stream.stream_id)
            await self._relay(reader, writer, stream)
        finally:
            release = getattr(self._agent, "release_stream", None)
            if release is not None:
                release(stream.stream_id)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream
    ) -> None:
        """Both directions until both have ended; when one fails, the other stops too."""
        directions = [
            asyncio.create_task(_to_guest(reader, stream)),
            asyncio.create_task(self._to_client(stream, writer)),
        ]
        try:
            await asyncio.gather(*directions)
        finally:
            for task in directions:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)

    async def _to_client(self, stream: Stream, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await stream.read():
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError as exc:
            # The client is gone: the guest stops reading its side, as a closed
            # socket would stop a local server's writes.
            self._log.debug("stream %d: client gone: %s", stream.stream_id, exc)
            await self._agent.close_output(stream.stream_id)


async def _to_guest(reader: asyncio.StreamReader, stream: Stream) -> None:
    try:
        while chunk := await reader.read(READ_CHUNK):
            await stream.write(chunk)
    except OSError:
        pass  # a reset is an end like any other here
    await stream.close()
