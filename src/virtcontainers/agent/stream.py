"""One I/O stream of the agent connection, with the guest's credit-based flow
control; the connection that carries it is anything that can send a frame and
say why it failed (:class:`StreamOwner`)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from virtcontainers.agent import protocol
from virtcontainers.agent.protocol import Frame
from virtcontainers.errors import AgentProtocolError


class StreamOwner(Protocol):
    """What a stream needs of its connection."""

    failure: AgentProtocolError | None

    async def send_raw(self, frame: bytes) -> None: ...


class AgentStream:
    """One I/O stream id, both directions, with credit-based flow control.

    A chunk read is credited back to the guest when the next one is asked
    for, that is once the reader has written it on: the guest keeps what it
    sent until then, and sends it again to a host that reattaches after this
    one died (at least once; nothing lost).
    """

    def __init__(self, client: StreamOwner, stream_id: int) -> None:
        self.stream_id = stream_id
        self._client = client
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._inbound_unacked = 0
        self._held = 0
        """The size of the last chunk read, credited at the next read."""
        self._eof = False
        self._send_credit = protocol.STREAM_WINDOW
        self._credit_changed = asyncio.Event()
        self._closed = False
        self.draining = False
        """Released by the host: what the guest still sends is dropped, within the window."""

    def _deliver(self, frame: Frame) -> None:
        if self._eof:
            raise AgentProtocolError(f"data on stream {self.stream_id} after its end")
        self._inbound_unacked += len(frame.payload)
        if self._inbound_unacked > protocol.STREAM_WINDOW:
            raise AgentProtocolError(f"guest overran the window on stream {self.stream_id}")
        if frame.payload and not self.draining:
            self._chunks.put_nowait(frame.payload)
        if frame.eof:
            self._eof = True
            self._chunks.put_nowait(b"")

    def _drain(self) -> None:
        """The host is done with this stream; output the guest had in flight may
        still arrive (no more than the credit it holds, as no more is granted)."""
        self.draining = True
        while not self._chunks.empty():
            self._chunks.get_nowait()

    def _grant(self, count: int) -> None:
        self._send_credit += count
        if self._send_credit > protocol.STREAM_WINDOW:
            raise AgentProtocolError(f"guest granted too much credit on stream {self.stream_id}")
        self._credit_changed.set()

    def _fail(self) -> None:
        self._chunks.put_nowait(b"")
        self._credit_changed.set()

    async def read(self) -> bytes:
        if self._held:
            held, self._held = self._held, 0
            self._inbound_unacked -= held
            await self._client.send_raw(protocol.encode_credit(self.stream_id, held))
        chunk = await self._chunks.get()
        if chunk:
            self._held = len(chunk)
        elif self._client.failure is not None:
            raise self._client.failure
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while self._send_credit == 0:
                if self._client.failure is not None:
                    raise self._client.failure
                self._credit_changed.clear()
                await self._credit_changed.wait()
            size = min(len(view), self._send_credit, protocol.DATA_CHUNK)
            self._send_credit -= size
            await self._client.send_raw(protocol.data(self.stream_id, bytes(view[:size])))
            view = view[size:]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.send_raw(protocol.data(self.stream_id, b"", eof=True))
