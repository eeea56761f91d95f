"""The host's end of the agent connection: the handshake, one multiplexed
stream of frames, requests matched to their answers, events, and the I/O
streams it carries (:mod:`virtcontainers.agent.stream`).

The guest is untrusted: every frame is size-bounded by the decoder, every
response is checked against what its request expects, and a guest that
breaks the protocol (bad frame, unknown request id, data beyond its credit)
makes the connection fail with :class:`AgentProtocolError` for every caller,
without crashing or hanging the daemon; so does anything else that goes
wrong in the reader, with its traceback logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from virtcontainers.agent import protocol
from virtcontainers.agent.answers import bounded
from virtcontainers.agent.base import EventHandler
from virtcontainers.agent.contract import AgentOp
from virtcontainers.agent.protocol import Frame, FrameType
from virtcontainers.agent.stream import AgentStream
from virtcontainers.errors import AgentError, AgentProtocolError

READ_SIZE = 256 * 1024
REQUEST_TIMEOUT = 120.0
"""A guest that does not answer within this long has failed the request (crun
under TCG takes well under a second; waits for process exit are unbounded)."""
MAX_DRAINING_STREAMS = 1024
"""Released streams whose late frames are still taken (and dropped); the oldest
is forgotten past this, and a frame for it then fails the connection."""
A = TypeVar("A", bound=Mapping[str, object])


class AgentChannel:
    """Talks to the guest agent over a unix socket (QEMU's chardev): frames,
    requests and streams; :class:`~virtcontainers.agent.client.AgentClient`
    adds the operations."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._request_ids = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, object]]]] = {}
        self._streams: dict[int, AgentStream] = {}
        self._draining: list[int] = []
        self._handlers: list[EventHandler] = []
        self._read_task: asyncio.Task[None] | None = None
        self.failure: AgentProtocolError | None = None

    # --- connection -----------------------------------------------------------

    async def connect(self, socket_path: Path, timeout: float) -> None:
        """Connect and handshake; stale bytes before our HELLO's answer are dropped."""
        reader, writer = await asyncio.open_unix_connection(str(socket_path), limit=READ_SIZE)
        self._reader, self._writer = reader, writer
        nonce = secrets.token_hex(16)
        writer.write(protocol.hello(nonce))
        await writer.drain()
        try:
            early, pending = await asyncio.wait_for(self._await_hello(reader, nonce), timeout)
        except TimeoutError:
            await self.close()
            raise AgentError(
                "connect", "timeout", f"no HELLO from the agent in {timeout:.0f}s"
            ) from None
        except BaseException:
            await self.close()
            raise
        self._read_task = asyncio.create_task(
            self._read_loop(reader, early, pending), name="agent-reader"
        )

    async def _await_hello(
        self, reader: asyncio.StreamReader, nonce: str
    ) -> tuple[list[Frame], bytes]:
        """Skip stale bytes up to our HELLO's answer; return what came after it."""
        decoder = protocol.FrameDecoder(resync=True)
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise AgentError(
                    "connect", "closed", "the agent channel closed during the handshake"
                )
            frames = decoder.feed(data)
            for index, frame in enumerate(frames):
                if frame.type is FrameType.HELLO and self._hello_matches(frame, nonce):
                    return frames[index + 1 :], decoder.take_pending()

    def _hello_matches(self, frame: Frame, nonce: str) -> bool:
        try:
            message = frame.json()
        except protocol.ProtocolError:
            return False
        if message.get("nonce") != nonce:
            return False
        if message.get("version") != protocol.PROTOCOL_VERSION:
            raise AgentProtocolError(f"agent speaks protocol {message.get('version')!r}")
        self.log.debug("handshake done: %s", message)
        return True

    async def close(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
            self._read_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None
        closed = AgentProtocolError("the agent connection is closed")
        self.failure = self.failure or closed  # asked for: not worth a warning
        self._fail_all(closed)

    def on_event(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    # --- frames -------------------------------------------------------------------

    async def send_raw(self, frame: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        if self._writer is None:
            raise AgentProtocolError("the agent is not connected")
        async with self._write_lock:
            self._writer.write(frame)
            await self._writer.drain()

    async def _read_loop(
        self, reader: asyncio.StreamReader, early: list[Frame], pending: bytes
    ) -> None:
        decoder = protocol.FrameDecoder()
        try:
            for frame in early + decoder.feed(pending):
                self._dispatch(frame)
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise AgentProtocolError("the agent channel closed")
                for frame in decoder.feed(data):
                    self._dispatch(frame)
        except protocol.ProtocolError as exc:
            self._fail_all(AgentProtocolError(str(exc)))
        except AgentProtocolError as exc:
            self._fail_all(exc)
        except OSError as exc:
            self._fail_all(AgentProtocolError(f"agent channel error: {exc}"))
        except Exception as exc:
            # Input no check foresaw, or a bug of ours: either way the stream can no
            # longer be trusted, and a reader that died quietly would leave every
            # waiter hanging.
            error = AgentProtocolError(f"agent reader failed: {type(exc).__name__}: {exc}")
            self._fail_all(error, cause=exc)

    def _fail_all(self, error: AgentProtocolError, cause: Exception | None = None) -> None:
        if self.failure is None:
            self.failure = error
            self.log.warning("agent connection failed: %s", error, exc_info=cause)
        for _op, future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for stream in self._streams.values():
            stream._fail()

    def _dispatch(self, frame: Frame) -> None:
        if frame.type is FrameType.RESPONSE:
            self._on_response(frame)
        elif frame.type is FrameType.EVENT:
            self._on_event(frame.json())
        elif frame.type is FrameType.DATA:
            stream = self._stream_for(frame)
            stream._deliver(frame)
            if stream.draining and stream._eof:
                self._forget(stream.stream_id)
        elif frame.type is FrameType.CREDIT:
            self._stream_for(frame)._grant(frame.credit())
        else:
            raise AgentProtocolError(f"unexpected {frame.type.name} frame from the agent")

    def _stream_for(self, frame: Frame) -> AgentStream:
        stream = self._streams.get(frame.stream)
        if stream is None:
            raise AgentProtocolError(f"{frame.type.name} frame for unknown stream {frame.stream}")
        return stream

    def _on_response(self, frame: Frame) -> None:
        message = frame.json()  # before the pop: a bad answer must fail its caller too
        entry = self._pending.pop(frame.stream, None)
        if entry is None:
            raise AgentProtocolError(f"response to unknown request {frame.stream}")
        op, future = entry
        result = message.get("result")
        if message.get("ok") is True and isinstance(result, dict):
            if not future.done():
                future.set_result(result)
            return
        error = message.get("error")
        if message.get("ok") is not False or not isinstance(error, dict):
            failure = AgentProtocolError(f"malformed response to {op}")
            future.set_exception(failure)
            raise failure
        if not future.done():
            future.set_exception(
                AgentError(op, bounded(error.get("kind")), bounded(error.get("message")))
            )

    def _on_event(self, message: dict[str, object]) -> None:
        name = message.pop("event", None)
        if not isinstance(name, str):
            raise AgentProtocolError("event without a name")
        self.log.debug("event %s %s", name, message)
        for handler in self._handlers:
            handler(name, message)

    async def call(
        self, agent_op: AgentOp[A, Any], args: A, timeout: float | None = REQUEST_TIMEOUT
    ) -> dict[str, object]:
        """Send one request; its result is unchecked.  Raises AgentError if the
        guest refuses it or stays silent."""
        if self.failure is not None:
            raise self.failure
        op = agent_op.name
        request_id = next(self._request_ids)
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (op, future)
        self.log.debug("request %d %s %s", request_id, op, args)
        try:
            await self.send_raw(protocol.request(request_id, op, args))
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        try:
            result = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise AgentError(op, "timeout", f"no answer from the agent in {timeout:.0f}s") from None
        self.log.debug("response %d %s %s", request_id, op, result)
        return result

    # --- streams ------------------------------------------------------------------

    def open_stream(self) -> AgentStream:
        stream = AgentStream(self, next(self._stream_ids))
        self._streams[stream.stream_id] = stream
        if self.failure is not None:
            stream._fail()
        return stream

    def release_stream(self, stream_id: int) -> None:
        """The host is done with this stream.  It is kept, draining, until the
        guest ends it: the process's last output may still be on its way."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.draining:
            return
        if stream._eof:
            self._forget(stream_id)
            return
        stream._drain()
        self._draining.append(stream_id)
        if len(self._draining) > MAX_DRAINING_STREAMS:
            self._forget(self._draining[0])

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        with contextlib.suppress(ValueError):
            self._draining.remove(stream_id)
