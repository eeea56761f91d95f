"""The ttrpc module against itself: framing, round trips, errors, concurrency, bad peers."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from google.protobuf import wrappers_pb2

from virtcontainers.shim import ttrpc
from virtcontainers.shim.ttrpc import CallContext, Client, Code, Server, TtrpcError

SERVICE = "test.v1.Echo"


async def echo(payload: bytes, _context: CallContext) -> bytes:
    return payload


async def fail(_payload: bytes, _context: CallContext) -> bytes:
    raise TtrpcError(Code.NOT_FOUND, "container 'c1' not found")


async def crash(_payload: bytes, _context: CallContext) -> bytes:
    raise RuntimeError("boom")


async def sleep_then_echo(payload: bytes, _context: CallContext) -> bytes:
    await asyncio.sleep(float(payload.decode()))
    return payload


async def metadata(_payload: bytes, context: CallContext) -> bytes:
    return context.metadata.get("containerd-namespace-ttrpc", "").encode()


async def huge(_payload: bytes, _context: CallContext) -> bytes:
    return b"x" * (ttrpc.MAX_MESSAGE + 1)


async def upper(
    request: wrappers_pb2.StringValue, _context: CallContext
) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=request.value.upper())


METHODS: dict[str, ttrpc.Method] = {
    "Echo": echo,
    "Fail": fail,
    "Crash": crash,
    "Sleep": sleep_then_echo,
    "Metadata": metadata,
    "Huge": huge,
    "Upper": ttrpc.unary(wrappers_pb2.StringValue, upper),
}


@asynccontextmanager
async def served(path: Path) -> AsyncIterator[Server]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    server = Server()
    server.register(SERVICE, METHODS)
    await server.serve(listener)
    try:
        yield server
    finally:
        await server.close()


def run(tmp_path: Path, body: Callable[[Path], Awaitable[None]]) -> None:
    async def main() -> None:
        path = tmp_path / "t.sock"
        async with served(path):
            await asyncio.wait_for(body(path), 30)

    asyncio.run(main())


def test_request_and_response_round_trip() -> None:
    request = ttrpc.Request("s", "m", b"\x00\x01", 5, (("k", "v"), ("k2", "v2")))
    assert ttrpc.Request.decode(request.encode()) == request
    response = ttrpc.Response(Code.NOT_FOUND, "gone", b"")
    assert ttrpc.Response.decode(response.encode()) == response
    assert ttrpc.Response.decode(ttrpc.Response(payload=b"ok").encode()).code is Code.OK


def test_frame_header_is_big_endian_length_stream_type_flags() -> None:
    assert ttrpc.frame(3, ttrpc.REQUEST, b"abc") == b"\0\0\0\x03\0\0\0\x03\x01\0abc"
    with pytest.raises(TtrpcError) as raised:
        ttrpc.frame(1, ttrpc.RESPONSE, b"x" * (ttrpc.MAX_MESSAGE + 1))
    assert raised.value.code is Code.RESOURCE_EXHAUSTED


def test_call_round_trips_payload_and_metadata(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        client = await Client.connect(path)
        assert await client.call(SERVICE, "Echo", b"hello") == b"hello"
        assert await client.call(SERVICE, "Echo", b"") == b""
        got = await client.call(
            SERVICE, "Metadata", b"", metadata={"containerd-namespace-ttrpc": "k8s.io"}
        )
        assert got == b"k8s.io"
        answer = await client.call_message(
            SERVICE, "Upper", wrappers_pb2.StringValue(value="abc"), wrappers_pb2.StringValue
        )
        assert answer.value == "ABC"
        await client.close()

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("service", "method", "code", "detail"),
    [
        (SERVICE, "Fail", Code.NOT_FOUND, "container 'c1' not found"),
        (SERVICE, "Crash", Code.UNKNOWN, "boom"),
        (SERVICE, "Nope", Code.UNIMPLEMENTED, "method Nope"),
        ("other.Service", "Echo", Code.UNIMPLEMENTED, "service other.Service"),
        (SERVICE, "Huge", Code.RESOURCE_EXHAUSTED, "more than"),
    ],
)
def test_errors_come_back_as_status(
    tmp_path: Path, service: str, method: str, code: Code, detail: str
) -> None:
    async def body(path: Path) -> None:
        client = await Client.connect(path)
        with pytest.raises(TtrpcError) as raised:
            await client.call(service, method, b"")
        assert raised.value.code is code
        assert detail in raised.value.detail
        # The connection goes on serving.
        assert await client.call(SERVICE, "Echo", b"again") == b"again"
        await client.close()

    run(tmp_path, body)


def test_a_malformed_request_message_is_answered_invalid_argument(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        client = await Client.connect(path)
        with pytest.raises(TtrpcError) as raised:
            await client.call(SERVICE, "Upper", b"\xff\xff\xff")
        assert raised.value.code is Code.INVALID_ARGUMENT
        await client.close()

    run(tmp_path, body)


def test_server_deadline_and_client_timeout(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        client = await Client.connect(path)
        with pytest.raises(TtrpcError) as raised:
            await client.call(SERVICE, "Sleep", b"5", timeout=0.2)
        assert raised.value.code is Code.DEADLINE_EXCEEDED
        assert await client.call(SERVICE, "Sleep", b"0.01", timeout=5) == b"0.01"
        await client.close()

    run(tmp_path, body)


def test_concurrent_streams_answer_out_of_order(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        client = await Client.connect(path)
        finished: list[bytes] = []

        async def one(delay: str) -> None:
            finished.append(await client.call(SERVICE, "Sleep", delay.encode()))

        # One connection, several streams: the slow call does not hold up the fast ones.
        await asyncio.gather(one("0.6"), one("0.3"), one("0.0"), one("0.1"))
        assert finished == [b"0.0", b"0.1", b"0.3", b"0.6"]
        await client.close()

    run(tmp_path, body)


def test_many_clients_at_once(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        clients = [await Client.connect(path) for _ in range(8)]
        answers = await asyncio.gather(
            *(c.call(SERVICE, "Echo", str(i).encode()) for i, c in enumerate(clients))
        )
        assert answers == [str(i).encode() for i in range(8)]
        for client in clients:
            await client.close()

    run(tmp_path, body)


async def raw_exchange(path: Path, data: bytes) -> bytes:
    """Send ``data`` as it is; everything the server sends until it closes (or 2 s)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    received = b""
    try:
        async with asyncio.timeout(2):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pass
    writer.close()
    return received


def response_of(data: bytes) -> tuple[int, ttrpc.Response]:
    length, stream_id, kind, _flags = ttrpc.HEADER.unpack(data[: ttrpc.HEADER.size])
    assert kind == ttrpc.RESPONSE
    return stream_id, ttrpc.Response.decode(data[ttrpc.HEADER.size : ttrpc.HEADER.size + length])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            struct.pack(">IIBB", ttrpc.MAX_MESSAGE + 1, 1, ttrpc.REQUEST, 0), id="oversized"
        ),
        pytest.param(ttrpc.frame(1, ttrpc.RESPONSE, b""), id="response-to-server"),
        pytest.param(ttrpc.frame(1, 9, b""), id="unknown-type"),
        pytest.param(b"\0\0\0\x05\0\0", id="cut-header"),
        pytest.param(struct.pack(">IIBB", 100, 1, ttrpc.REQUEST, 0) + b"short", id="cut-payload"),
    ],
)
def test_malformed_frames_close_the_connection_not_the_server(tmp_path: Path, data: bytes) -> None:
    async def body(path: Path) -> None:
        assert await raw_exchange(path, data) == b""
        client = await Client.connect(path)
        assert await client.call(SERVICE, "Echo", b"alive") == b"alive"
        await client.close()

    run(tmp_path, body)


def test_bad_stream_ids_and_garbage_requests_are_answered(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        even = ttrpc.Request(SERVICE, "Echo", b"x").encode()
        data = ttrpc.frame(2, ttrpc.REQUEST, even) + ttrpc.frame(3, ttrpc.REQUEST, b"\xff\xff")
        received = await raw_exchange(path, data)
        first_len = ttrpc.HEADER.unpack(received[:10])[0]
        stream_a, answer_a = response_of(received)
        stream_b, answer_b = response_of(received[10 + first_len :])
        assert {stream_a: answer_a.code, stream_b: answer_b.code} == {
            2: Code.INVALID_ARGUMENT,
            3: Code.INVALID_ARGUMENT,
        }

    run(tmp_path, body)


def test_pending_calls_fail_when_the_server_goes(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "t.sock"
        async with served(path) as server:
            client = await Client.connect(path)
            pending = asyncio.create_task(client.call(SERVICE, "Sleep", b"30"))
            await asyncio.sleep(0.2)
            await server.close()
            with pytest.raises(TtrpcError) as raised:
                await asyncio.wait_for(pending, 10)
            assert raised.value.code is Code.UNAVAILABLE
            with pytest.raises(TtrpcError):
                await client.call(SERVICE, "Echo", b"")
            await client.close()

    asyncio.run(main())


def test_registering_a_method_twice_is_refused() -> None:
    server = Server()
    server.register(SERVICE, {"Echo": echo})
    with pytest.raises(ValueError, match="registered already"):
        server.register(SERVICE, {"Echo": echo})
