"""ttrpc: containerd's small RPC, as its Go library speaks it (unary calls only).

A frame is a 10-byte header (payload length, stream id: big-endian 32-bit;
message type; flags) then the payload, at most :data:`MAX_MESSAGE` bytes.  A
client sends a Request on an odd stream id of its own; the server answers a
Response on the same stream id.  Request and Response are protobuf messages,
the answer's status a google.rpc Status with gRPC's codes.

Their three message types are built here with protobuf's runtime from a
descriptor written in code, not generated: they are fixed by the protocol and
few, and the transport then works (and is tested) before ``make deps`` has
generated containerd's own messages.

The peer is trusted no more than it must be: an oversized frame is refused
and closes the connection, a frame that is not a request closes it, and a
handler's failure becomes an error answer; none of them ends the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from virtcontainers.errors import VcError

HEADER = struct.Struct(">IIBB")
MAX_MESSAGE = 4 << 20
"""The Go library's limit, both ways."""
REQUEST = 0x1
RESPONSE = 0x2
log = logging.getLogger(__name__)


class Code(enum.IntEnum):
    """gRPC's status codes, as google.rpc Status carries them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(VcError):
    """A ttrpc call failed: the status the server answered, or the connection's end."""

    FIELDS = ("code", "detail")

    def __init__(self, code: Code, detail: str) -> None:
        super().__init__(f"{code.name}: {detail}")
        self.code = code
        self.detail = detail


# --- the protocol's messages ------------------------------------------------------------


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    kinds = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="vc_ttrpc.proto", package="ttrpc", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        added = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            entry = added.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                entry.type_name = type_name

    one, many = kinds.LABEL_OPTIONAL, kinds.LABEL_REPEATED
    message(
        "KeyValue", ("key", 1, kinds.TYPE_STRING, one, ""), ("value", 2, kinds.TYPE_STRING, one, "")
    )
    message(
        "Request",
        ("service", 1, kinds.TYPE_STRING, one, ""),
        ("method", 2, kinds.TYPE_STRING, one, ""),
        ("payload", 3, kinds.TYPE_BYTES, one, ""),
        ("timeout_nano", 4, kinds.TYPE_INT64, one, ""),
        ("metadata", 5, kinds.TYPE_MESSAGE, many, ".ttrpc.KeyValue"),
    )
    # google.rpc.Status; its details (google.protobuf.Any) are the same bytes on the wire.
    message(
        "Status",
        ("code", 1, kinds.TYPE_INT32, one, ""),
        ("message", 2, kinds.TYPE_STRING, one, ""),
        ("details", 3, kinds.TYPE_BYTES, many, ""),
    )
    message(
        "Response",
        ("status", 1, kinds.TYPE_MESSAGE, one, ".ttrpc.Status"),
        ("payload", 2, kinds.TYPE_BYTES, one, ""),
    )
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"ttrpc.{name}"))


_REQUEST = _message_class("Request")
_RESPONSE = _message_class("Response")


def _parse(cls: Any, data: bytes) -> Any:
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise ValueError(f"malformed ttrpc {cls.DESCRIPTOR.name}: {exc}") from None
    return message


@dataclass(frozen=True)
class Request:
    service: str
    method: str
    payload: bytes = b""
    timeout_nano: int = 0
    metadata: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        message: Any = _REQUEST(
            service=self.service,
            method=self.method,
            payload=self.payload,
            timeout_nano=self.timeout_nano,
        )
        for key, value in self.metadata:
            message.metadata.add(key=key, value=value)
        data: bytes = message.SerializeToString()
        return data

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises ValueError for bytes that are not a Request."""
        message = _parse(_REQUEST, data)
        return cls(
            message.service,
            message.method,
            message.payload,
            message.timeout_nano,
            tuple((kv.key, kv.value) for kv in message.metadata),
        )


@dataclass(frozen=True)
class Response:
    code: Code = Code.OK
    message: str = ""
    payload: bytes = b""

    def encode(self) -> bytes:
        response: Any = _RESPONSE(payload=self.payload)
        if self.code is not Code.OK:
            response.status.code = int(self.code)
            response.status.message = self.message
        data: bytes = response.SerializeToString()
        return data

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises ValueError for bytes that are not a Response."""
        response = _parse(_RESPONSE, data)
        try:
            code = Code(response.status.code)
        except ValueError:
            code = Code.UNKNOWN
        return cls(code, response.status.message, response.payload)


# --- framing ------------------------------------------------------------------------------


class ProtocolError(Exception):
    """The peer broke the framing: the connection cannot be used any more."""


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes] | None:
    """(stream id, type, flags, payload), or None at a clean end of the connection.

    Raises ProtocolError for a frame longer than MAX_MESSAGE (its payload is
    not read) or a connection cut mid-frame.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("connection closed inside a frame header") from None
        return None
    length, stream_id, kind, flags = HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise ProtocolError(
            f"frame of {length} bytes on stream {stream_id}: more than {MAX_MESSAGE}"
        )
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"connection closed inside a frame on stream {stream_id}") from None
    return stream_id, kind, flags, payload


def frame(stream_id: int, kind: int, payload: bytes, flags: int = 0) -> bytes:
    if len(payload) > MAX_MESSAGE:
        raise TtrpcError(
            Code.RESOURCE_EXHAUSTED, f"message of {len(payload)} bytes: more than {MAX_MESSAGE}"
        )
    return HEADER.pack(len(payload), stream_id, kind, flags) + payload


# --- messages of a service: what handlers and clients exchange ----------------------------


class ProtoMessage(Protocol):
    """What this module needs of a generated protobuf message class."""

    def SerializeToString(self) -> bytes: ...  # noqa: N802 (protobuf's name)

    def ParseFromString(self, data: bytes) -> int: ...  # noqa: N802


M = TypeVar("M", bound=ProtoMessage)


def decode(cls: type[M], data: bytes) -> M:
    """A message of ``cls`` from its bytes; TtrpcError INVALID_ARGUMENT if they are not one."""
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, f"malformed {cls.__name__}: {exc}") from None
    return message


@dataclass(frozen=True)
class CallContext:
    """What a handler knows of its call besides the request."""

    service: str
    method: str
    metadata: Mapping[str, str] = field(default_factory=dict)


Method = Callable[[bytes, CallContext], Awaitable[bytes]]
"""A handler: the request's payload in, the response's payload out; raises
TtrpcError to answer with a status."""

Req = TypeVar("Req", bound=ProtoMessage)


def unary(request_type: type[Req], handler: Callable[[Req, CallContext], Awaitable[Any]]) -> Method:
    """A Method that decodes ``request_type`` and encodes what ``handler`` answers."""

    async def method(payload: bytes, context: CallContext) -> bytes:
        answer = await handler(decode(request_type, payload), context)
        data: bytes = answer.SerializeToString()
        return data

    return method


# --- the server ------------------------------------------------------------------------------


class Server:
    """Serves registered ``service/method`` handlers on a unix socket, each
    request in a task of its own (a slow call does not hold up the others)."""

    def __init__(self) -> None:
        self._methods: dict[tuple[str, str], Method] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def register(self, service: str, methods: Mapping[str, Method]) -> None:
        for name, method in methods.items():
            if (service, name) in self._methods:
                raise ValueError(f"{service}/{name} is registered already")
            self._methods[service, name] = method

    async def serve(self, sock: Any) -> None:
        """Accept connections on the listening socket ``sock`` (see :meth:`close`)."""
        self._server = await asyncio.start_unix_server(self._connection, sock=sock)

    async def close(self) -> None:
        """Stop accepting and end every connection (calls in progress are cancelled)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        calls: dict[int, asyncio.Task[None]] = {}
        try:
            await self._read_requests(reader, writer, calls)
        except ProtocolError as exc:
            log.warning("ttrpc: closing a connection: %s", exc)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            for call in calls.values():
                call.cancel()
            await asyncio.gather(*calls.values(), return_exceptions=True)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read_requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        calls: dict[int, asyncio.Task[None]],
    ) -> None:
        while (read := await read_frame(reader)) is not None:
            stream_id, kind, _flags, payload = read
            if kind != REQUEST:
                raise ProtocolError(f"message type {kind} on stream {stream_id}: not a request")
            refusal = self._refusal(stream_id, calls)
            if refusal is not None:
                await _answer(writer, stream_id, Response(Code.INVALID_ARGUMENT, refusal))
                continue
            call = asyncio.create_task(self._call(writer, stream_id, payload))
            calls[stream_id] = call
            call.add_done_callback(functools.partial(_forget, calls, stream_id))

    @staticmethod
    def _refusal(stream_id: int, calls: Mapping[int, object]) -> str | None:
        if stream_id % 2 == 0:
            return f"stream id {stream_id}: a client's stream ids are odd"
        if stream_id in calls:
            return f"stream id {stream_id} is in use by a call in progress"
        return None

    async def _call(self, writer: asyncio.StreamWriter, stream_id: int, payload: bytes) -> None:
        response = await self._dispatch(payload)
        try:
            await _answer(writer, stream_id, response)
        except TtrpcError as exc:  # the answer is too large to send
            await _answer(writer, stream_id, Response(exc.code, exc.detail))

    async def _dispatch(self, payload: bytes) -> Response:
        try:
            request = Request.decode(payload)
        except ValueError as exc:
            return Response(Code.INVALID_ARGUMENT, str(exc))
        method = self._methods.get((request.service, request.method))
        if method is None:
            known = any(service == request.service for service, _ in self._methods)
            what = f"method {request.method}" if known else f"service {request.service}"
            return Response(Code.UNIMPLEMENTED, what)
        context = CallContext(request.service, request.method, dict(request.metadata))
        timeout = request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        log.debug("ttrpc: %s/%s", request.service, request.method)
        try:
            async with asyncio.timeout(timeout):
                return Response(payload=await method(request.payload, context))
        except TtrpcError as exc:
            return Response(exc.code, exc.detail)
        except TimeoutError:
            return Response(Code.DEADLINE_EXCEEDED, f"{request.service}/{request.method}")
        except Exception as exc:
            log.exception("ttrpc: %s/%s failed", request.service, request.method)
            return Response(Code.UNKNOWN, str(exc) or type(exc).__name__)


def _forget(calls: dict[int, asyncio.Task[None]], stream_id: int, _done: object) -> None:
    calls.pop(stream_id, None)


async def _answer(writer: asyncio.StreamWriter, stream_id: int, response: Response) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(frame(stream_id, RESPONSE, response.encode()))
        await writer.drain()


# --- the client ------------------------------------------------------------------------------


class Client:
    """One connection to a ttrpc server; calls may overlap (one stream each)."""

    STREAM_IDS: ClassVar[range] = range(1, 1 << 32, 2)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._ids = itertools.cycle(self.STREAM_IDS)
        self._closed: TtrpcError | None = None
        self._reader_task = asyncio.create_task(self._read(reader))

    @classmethod
    async def connect(cls, path: str | os.PathLike[str]) -> Self:
        """Raises OSError when nothing listens at ``path``."""
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        return cls(reader, writer)

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> bytes:
        """The answer's payload.  Raises TtrpcError with the server's status, or
        UNAVAILABLE when the connection ends first, DEADLINE_EXCEEDED after ``timeout``."""
        if self._closed is not None:
            raise self._closed
        stream_id = next(self._ids)
        request = Request(
            service,
            method,
            payload,
            int(timeout * 1e9) if timeout else 0,
            tuple((metadata or {}).items()),
        )
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = answer
        try:
            self._writer.write(frame(stream_id, REQUEST, request.encode()))
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                response = await answer
        except TimeoutError:
            raise TtrpcError(Code.DEADLINE_EXCEEDED, f"{service}/{method}") from None
        except ConnectionError as exc:
            raise TtrpcError(Code.UNAVAILABLE, f"{service}/{method}: {exc}") from None
        finally:
            self._pending.pop(stream_id, None)
        if response.code is not Code.OK:
            raise TtrpcError(response.code, response.message)
        return response.payload

    async def call_message(
        self, service: str, method: str, request: ProtoMessage, answer: type[M], **kwargs: Any
    ) -> M:
        """:meth:`call` with protobuf messages in and out."""
        payload = await self.call(service, method, request.SerializeToString(), **kwargs)
        return decode(answer, payload)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason = "the server closed the connection"
        try:
            while (read := await read_frame(reader)) is not None:
                stream_id, kind, _flags, payload = read
                if kind != RESPONSE:
                    raise ProtocolError(f"message type {kind} on stream {stream_id}")
                waiting = self._pending.pop(stream_id, None)
                if waiting is None:  # a call that timed out: its answer came late
                    continue
                try:
                    response = Response.decode(payload)
                except ValueError as exc:
                    raise ProtocolError(str(exc)) from None
                if not waiting.done():
                    waiting.set_result(response)
        except (ProtocolError, ConnectionError) as exc:
            reason = str(exc)
        finally:
            self._fail_pending(TtrpcError(Code.UNAVAILABLE, reason))

    def _fail_pending(self, error: TtrpcError) -> None:
        self._closed = error
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(error)
        self._pending.clear()

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
