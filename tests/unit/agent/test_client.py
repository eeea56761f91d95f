"""The agent client against a scripted (and hostile) guest on a unix socket."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from virtcontainers.agent import contract, protocol
from virtcontainers.agent.base import StdioStreams
from virtcontainers.agent.client import AgentClient
from virtcontainers.agent.messages import Empty, NetInterface, NetRoute
from virtcontainers.agent.protocol import FrameDecoder, FrameType
from virtcontainers.errors import AgentError, AgentProtocolError

Guest = Callable[[asyncio.StreamReader, asyncio.StreamWriter, FrameDecoder], Awaitable[None]]


_queued: dict[int, list[protocol.Frame]] = {}


async def next_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> protocol.Frame:
    """The next frame from the host; frames that arrived together are queued."""
    queue = _queued.setdefault(id(decoder), [])
    while not queue:
        data = await reader.read(65536)
        assert data, "host closed"
        queue.extend(decoder.feed(data))
    return queue.pop(0)


async def with_guest(
    tmp_path: Path, guest: Guest, body: Callable[[AgentClient], Awaitable[None]]
) -> None:
    path = tmp_path / "agent.sock"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(resync=True)
        hello = await next_frame(reader, decoder)
        writer.write(b"stale bytes from an earlier connection")
        writer.write(protocol.hello(str(hello.json()["nonce"])))
        await writer.drain()
        try:
            await guest(reader, writer, decoder)
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, str(path))
    client = AgentClient("test")
    try:
        # Hang guards only: generous, for a machine busy with VMs.
        await client.connect(path, timeout=30)
        await asyncio.wait_for(body(client), 60)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_request_response_and_error(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        first = await next_frame(reader, dec)
        writer.write(protocol.response_ok(first.stream, {}))
        second = await next_frame(reader, dec)
        writer.write(protocol.response_error(second.stream, "not_found", "no container x"))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        await client.ping()
        with pytest.raises(AgentError, match="not_found"):
            await client.start_container("x")

    run(with_guest(tmp_path, guest, body))


@pytest.mark.parametrize(
    "hostile",
    [
        b"XXXX" + b"\0" * 20,
        protocol.response_ok(999, {}),
        protocol.data(42, b"to a stream nobody opened"),
        protocol.encode_frame(FrameType.RESPONSE, 1, b"[]"),
        protocol.encode_frame(FrameType.HELLO, 0, b"{}"),
        protocol.HEADER.pack(protocol.MAGIC, FrameType.DATA, 0, 1, protocol.MAX_PAYLOAD + 1),
    ],
)
def test_hostile_frames_fail_the_connection_not_the_host(tmp_path: Path, hostile: bytes) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        await next_frame(reader, dec)
        writer.write(hostile)
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentProtocolError):
            await client.ping()
        with pytest.raises(AgentProtocolError):
            await client.ping()

    run(with_guest(tmp_path, guest, body))


def test_a_frame_nested_too_deep_ends_the_connection_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        await next_frame(reader, dec)
        writer.write(protocol.encode_frame(FrameType.EVENT, 0, b"[" * 500_000))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentProtocolError, match="too deep"):
            await asyncio.wait_for(client.ping(), 5)
        with pytest.raises(AgentProtocolError, match="too deep"):
            await client.ping()

    with caplog.at_level(logging.WARNING, logger="virtcontainers.agent.client"):
        run(with_guest(tmp_path, guest, body))
    assert any("agent connection failed" in r.getMessage() for r in caplog.records)


def test_anything_that_breaks_the_reader_fails_the_connection_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        await next_frame(reader, dec)
        writer.write(protocol.event("exit", {"container_id": "c"}))
        await writer.drain()
        await reader.read()

    def broken_handler(name: str, fields: Mapping[str, object]) -> None:
        raise KeyError("a bug in a handler")

    async def body(client: AgentClient) -> None:
        client.on_event(broken_handler)
        with pytest.raises(AgentProtocolError, match="KeyError"):
            await asyncio.wait_for(client.ping(), 5)

    with caplog.at_level(logging.WARNING, logger="virtcontainers.agent.client"):
        run(with_guest(tmp_path, guest, body))
    failed = [r for r in caplog.records if "agent connection failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None


def test_wrong_shaped_answer_is_a_protocol_error(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        writer.write(protocol.response_ok(request.stream, {"exit_code": "zero"}))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentProtocolError, match="exit_code"):
            await client.wait_process("c", None)

    run(with_guest(tmp_path, guest, body))


def test_guest_overrunning_its_window_is_cut_off(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        await next_frame(reader, dec)  # the host's ping: its stream is open by now
        chunk = b"x" * protocol.DATA_CHUNK
        for _ in range(protocol.STREAM_WINDOW // protocol.DATA_CHUNK + 1):
            writer.write(protocol.data(1, chunk))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        stream = client.open_stream()
        with pytest.raises(AgentProtocolError):
            await client.ping()
        with pytest.raises(AgentProtocolError, match="window"):
            while await stream.read():
                pass

    run(with_guest(tmp_path, guest, body))


def test_stream_flow_control_moves_data_intact(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, far beyond one window

    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        ping = await next_frame(reader, dec)
        writer.write(protocol.response_ok(ping.stream, {}))
        credit = protocol.STREAM_WINDOW
        view = memoryview(payload)
        while view:
            while credit == 0:
                frame = await next_frame(reader, dec)
                assert frame.type is FrameType.CREDIT
                credit += frame.credit()
            size = min(credit, protocol.DATA_CHUNK, len(view))
            writer.write(protocol.data(1, bytes(view[:size])))
            credit -= size
            view = view[size:]
        writer.write(protocol.data(1, b"", eof=True))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        stream = client.open_stream()
        await client.ping()
        digest = hashlib.sha256()
        while chunk := await stream.read():
            digest.update(chunk)
            await asyncio.sleep(0)
        assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()

    run(with_guest(tmp_path, guest, body))


def test_create_container_sends_stream_ids(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        seen.update(request.json())
        writer.write(protocol.response_ok(request.stream, {"pid": 42}))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        bundle = {"process": {}, "root": {"path": "/r"}}
        pid = await client.create_container("c", bundle, StdioStreams(None, 3, 4))
        assert pid == 42

    run(with_guest(tmp_path, guest, body))
    assert seen["op"] == "create_container"
    assert seen["args"] == {
        "container_id": "c",
        "bundle": {"process": {}, "root": {"path": "/r"}},
        "stdin": None,
        "stdout": 3,
        "stderr": 4,
    }


def test_a_silent_guest_times_out_the_request(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        await reader.read()

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentError, match="timeout"):
            await client.call(contract.PING, Empty(), timeout=0.2)
        assert not client._pending

    run(with_guest(tmp_path, guest, body))


@pytest.mark.parametrize("wait", [0.0, 60.0])
def test_configure_network_sends_interfaces_and_routes(tmp_path: Path, wait: float) -> None:
    """And the wait, for a hot-plugged NIC (none at boot: the NICs are there)."""
    seen: dict[str, object] = {}

    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        seen.update(request.json())
        writer.write(protocol.response_ok(request.stream, {}))
        await writer.drain()
        await reader.read()

    nic: NetInterface = {"mac": "02:00:0a:01:02:03", "mtu": 1500, "addresses": ["10.1.2.3/24"]}
    route: NetRoute = {"destination": "default", "gateway": "10.1.2.1", "mac": nic["mac"]}

    async def body(client: AgentClient) -> None:
        await client.configure_network((nic,), (route,), wait)

    run(with_guest(tmp_path, guest, body))
    args = {"interfaces": [nic], "routes": [route], **({"wait": wait} if wait else {})}
    assert seen == {"op": "configure_network", "args": args}


def test_configure_network_refused_is_an_agent_error(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        message = "no network interface has MAC 02:00:0a:01:02:03"
        writer.write(protocol.response_error(request.stream, "not_found", message))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        with pytest.raises(
            AgentError, match="no network interface has MAC 02:00:0a:01:02:03"
        ) as info:
            await client.configure_network([], [])
        assert (info.value.op, info.value.kind) == ("configure_network", "not_found")

    run(with_guest(tmp_path, guest, body))


def test_output_in_flight_to_a_released_stream_is_dropped_not_fatal(tmp_path: Path) -> None:
    """A process's last output can cross the host's release of its stream: it is
    taken and dropped, within the window, until the guest ends the stream;
    after that end, the stream is unknown again."""

    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        ping = await next_frame(reader, dec)  # sent after the host released stream 1
        writer.write(protocol.data(1, b"late output"))
        writer.write(protocol.data(1, b"", eof=True))
        writer.write(protocol.response_ok(ping.stream, {}))
        second = await next_frame(reader, dec)
        writer.write(protocol.data(1, b"after its end"))
        writer.write(protocol.response_ok(second.stream, {}))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        stream = client.open_stream()
        client.release_stream(stream.stream_id)
        await client.ping()
        assert client.failure is None
        with pytest.raises(AgentProtocolError, match="unknown stream 1"):
            await client.ping()

    run(with_guest(tmp_path, guest, body))


def test_a_released_stream_still_holds_the_guest_to_its_window(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        await next_frame(reader, dec)
        chunk = b"x" * protocol.DATA_CHUNK
        for _ in range(protocol.STREAM_WINDOW // protocol.DATA_CHUNK + 1):
            writer.write(protocol.data(1, chunk))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        client.release_stream(client.open_stream().stream_id)
        with pytest.raises(AgentProtocolError, match="window"):
            await client.ping()

    run(with_guest(tmp_path, guest, body))


def test_connect_port_carries_the_connection_on_its_stream(tmp_path: Path) -> None:
    """The request names the stream; then bytes go both ways on it, and an EOF each way."""
    seen: dict[str, object] = {}
    from_host = bytearray()

    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        seen.update(request.json())
        stream = request.json()["args"]["stream"]  # type: ignore[index]
        writer.write(protocol.response_ok(request.stream, {}))
        writer.write(protocol.data(stream, b"from the guest", eof=True))
        await writer.drain()
        while True:
            frame = await next_frame(reader, dec)
            if frame.type is FrameType.DATA:
                from_host.extend(frame.payload)
                if frame.eof:
                    break
        await reader.read()

    async def body(client: AgentClient) -> None:
        stream = client.open_stream()
        await client.connect_port(stream.stream_id, 8080, 6)
        await stream.write(b"from the host")
        await stream.close()
        assert await stream.read() == b"from the guest"
        assert await stream.read() == b""
        while not from_host.endswith(b"host"):
            await asyncio.sleep(0.01)

    run(with_guest(tmp_path, guest, body))
    assert seen["op"] == "connect_port"
    assert seen["args"] == {"stream": 1, "port": 8080, "family": 6}
    assert bytes(from_host) == b"from the host"


def test_connect_port_refused_is_an_agent_error(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        message = "nothing listens on port 8080 in the guest"
        writer.write(protocol.response_error(request.stream, "refused", message))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentError, match="nothing listens") as info:
            await client.connect_port(client.open_stream().stream_id, 8080, 4)
        assert (info.value.op, info.value.kind) == ("connect_port", "refused")

    run(with_guest(tmp_path, guest, body))


def test_a_chunk_is_credited_only_when_the_next_is_asked_for(tmp_path: Path) -> None:
    """So the guest keeps what a relay has not written yet, for a host that reattaches."""
    credited: list[int] = []

    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        writer.write(protocol.response_ok(request.stream, {}))
        writer.write(protocol.data(1, b"one"))
        writer.write(protocol.data(1, b"two", eof=True))
        await writer.drain()
        while True:
            frame = await next_frame(reader, dec)
            if frame.type is FrameType.CREDIT:
                credited.append(frame.credit())

    async def body(client: AgentClient) -> None:
        await client.resume_output([1])
        stream = client._streams[1]
        assert await stream.read() == b"one"
        await asyncio.sleep(0.2)
        assert credited == []  # "one" is not written on yet
        assert await stream.read() == b"two"
        await asyncio.sleep(0.2)
        assert credited == [3]
        assert await stream.read() == b""
        await asyncio.sleep(0.2)
        assert credited == [3, 3]

    run(with_guest(tmp_path, guest, body))


def kept(**fields: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "container_id": "c",
        "exec_id": None,
        "pid": 7,
        "exit_code": None,
        "signal": None,
        "stdout": 4,
        "stderr": None,
    }
    entry.update(fields)
    return entry


def answering(result: dict[str, object]) -> Guest:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        writer.write(protocol.response_ok(request.stream, result))
        await writer.drain()
        await reader.read()

    return guest


def test_the_process_table_is_read_and_its_stream_ids_reserved(tmp_path: Path) -> None:
    table = {
        "containers": [{"id": "c", "status": "running"}],
        "processes": [kept(), kept(exec_id="e", exit_code=5, stdout=9, stderr=10)],
    }

    async def body(client: AgentClient) -> None:
        got = await client.process_table()
        assert got.containers == {"c": "running"}
        init = got.process("c", None)
        done = got.process("c", "e")
        assert init is not None and init.exit is None and init.streams == (4,)
        assert done is not None and done.exit is not None and done.exit.exit_code == 5
        assert client.open_stream().stream_id == 11  # above every detached id

    run(with_guest(tmp_path, answering(table), body))


@pytest.mark.parametrize(
    "process",
    [
        kept(container_id="../x"),
        kept(container_id=None, exec_id=None),
        kept(exit_code=256),
        kept(signal=0, exit_code=1),
        kept(stdout=0),
        kept(stdout=-1),
        kept(pid="7"),
        "not an object",
    ],
)
def test_a_malformed_process_table_fails_the_call(tmp_path: Path, process: object) -> None:
    table = {"containers": [{"id": "c", "status": "running"}], "processes": [process]}

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentProtocolError):
            await client.process_table()

    run(with_guest(tmp_path, answering(table), body))


def test_one_stream_given_to_two_processes_fails_the_call(tmp_path: Path) -> None:
    table: dict[str, object] = {"containers": [], "processes": [kept(), kept(exec_id="e")]}

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentProtocolError, match="one stream to two"):
            await client.process_table()

    run(with_guest(tmp_path, answering(table), body))
