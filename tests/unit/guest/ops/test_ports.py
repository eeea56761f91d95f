"""connect_port: a guest loopback connection carried on one stream, both ways.

The agent runs on the host in a network namespace of the test's own, with a
TCP server of the test's in the same namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import pytest

from tests.unit.guest.harness import AgentCallError, AgentClient, spawn_agent
from virtcontainers.agent import protocol
from virtcontainers.guest.agent.ops.ports import MAX_CONNECTIONS

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.timeout(60),
]

# Echoes each connection upper-cased; closes its side once the peer's EOF came.
SERVER = r"""
import socket, sys, threading
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
server = socket.socket(family)
server.bind(("::1" if sys.argv[1] == "6" else "127.0.0.1", 0))
server.listen(64)
print(server.getsockname()[1], flush=True)
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data.upper())
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = "vcpf-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@contextmanager
def echo_server(netns: str, family: int) -> Iterator[int]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", SERVER, str(family)],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def agent_in(netns: str) -> Iterator[AgentClient]:
    with spawn_agent(["ip", "netns", "exec", netns]) as harness:
        harness.client.hello()
        yield harness.client


_streams = iter(range(1000, 1 << 30))


def test_echo_both_ways_on_several_connections(netns: str, agent_in: AgentClient) -> None:
    with echo_server(netns, 4) as port:
        streams = [next(_streams) for _ in range(5)]
        for stream in streams:
            assert agent_in.call("connect_port", stream=stream, port=port, family=4) == {}
        for index, stream in enumerate(streams):
            agent_in.send(protocol.data(stream, f"hello {index}".encode()))
        for index, stream in enumerate(streams):
            want = f"HELLO {index}".encode()
            agent_in.wait_until(partial(_received, agent_in, stream, want))
        big = os.urandom(protocol.STREAM_WINDOW).hex().encode()  # twice the window
        first = streams[0]
        sent = len(b"hello 0")
        for start in range(0, len(big), protocol.DATA_CHUNK):
            chunk = big[start : start + protocol.DATA_CHUNK]
            # Within the window: what was sent, less what the agent credited back.
            room = sent + len(chunk) - protocol.STREAM_WINDOW
            agent_in.wait_until(partial(_credited, agent_in, first, room))
            agent_in.send(protocol.data(first, chunk))
            sent += len(chunk)
        agent_in.send(protocol.data(first, b"", eof=True))
        want = b"HELLO 0" + big.upper()
        assert agent_in.output(first) == want  # the server closed after our EOF
        for stream in streams[1:]:
            agent_in.send(protocol.data(stream, b"", eof=True))
            agent_in.wait_until(partial(agent_in.eof.__contains__, stream))


def _received(agent: AgentClient, stream: int, want: bytes) -> bool:
    return bytes(agent.data.get(stream, b"")) == want


def _credited(agent: AgentClient, stream: int, at_least: int) -> bool:
    return agent.credits.get(stream, 0) >= at_least


def test_ipv6_listener_is_found_after_ipv4_is_refused(netns: str, agent_in: AgentClient) -> None:
    with echo_server(netns, 6) as port:
        assert agent_in.call("connect_port", stream=next(_streams), port=port, family=4) == {}


def test_nothing_listening_is_refused(agent_in: AgentClient) -> None:
    with pytest.raises(AgentCallError) as info:
        agent_in.call("connect_port", stream=next(_streams), port=9, family=4)
    assert info.value.kind == "refused"


@pytest.mark.parametrize(
    "args",
    [
        {"port": 0, "family": 4},
        {"port": 65536, "family": 4},
        {"port": 80, "family": 5},
        {"port": "80", "family": 4},
        {"port": 80},
    ],
)
def test_bad_arguments_are_refused(agent_in: AgentClient, args: dict[str, object]) -> None:
    with pytest.raises(AgentCallError) as info:
        agent_in.result(agent_in.request("connect_port", stream=next(_streams), **args))
    assert info.value.kind == "invalid"


def test_close_output_stops_reading_and_ends_the_stream(netns: str, agent_in: AgentClient) -> None:
    with echo_server(netns, 4) as port:
        stream = next(_streams)
        agent_in.call("connect_port", stream=stream, port=port, family=4)
        agent_in.call("close_output", stream=stream)
        agent_in.wait_until(partial(agent_in.eof.__contains__, stream))
        agent_in.send(protocol.data(stream, b"still taken"))  # the other way still works
        agent_in.wait_until(partial(_credited, agent_in, stream, len(b"still taken")))


def test_a_new_host_connection_closes_forwarded_connections(
    netns: str, agent_in: AgentClient
) -> None:
    with echo_server(netns, 4) as port:
        for _ in range(3):
            agent_in.call("connect_port", stream=next(_streams), port=port, family=4)
        assert len(_established(netns, port)) == 6  # both ends of each, in one namespace
        agent_in.hello()
        deadline = time.monotonic() + 20
        while _established(netns, port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _established(netns, port) == []


def test_connections_are_capped_per_pod(netns: str, agent_in: AgentClient) -> None:
    with echo_server(netns, 4) as port:
        streams = [next(_streams) for _ in range(MAX_CONNECTIONS)]
        requests = [
            agent_in.request("connect_port", stream=s, port=port, family=4) for s in streams
        ]
        for request in requests:
            assert agent_in.result(request) == {}
        with pytest.raises(AgentCallError) as info:
            agent_in.call("connect_port", stream=next(_streams), port=port, family=4)
        assert info.value.kind == "busy"
        agent_in.send(protocol.data(streams[0], b"", eof=True))  # the server closes after it
        agent_in.wait_until(partial(agent_in.eof.__contains__, streams[0]))
        assert agent_in.call("connect_port", stream=next(_streams), port=port, family=4) == {}


def _established(netns: str, port: int) -> list[str]:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-Htn", "state", "established"],
        capture_output=True,
        text=True,
        check=True,
    )
    ends = [line.split()[-2:] for line in done.stdout.splitlines()]
    return [" ".join(pair) for pair in ends if any(e.endswith(f":{port}") for e in pair)]
