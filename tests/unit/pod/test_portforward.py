"""The pod's namespace loopback forwarded to the guest: the real listeners and
nftables table in a namespace the test made, the mock agent (each guest
connection echoes) at the transport boundary."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.netlab import Lab, ip
from virtcontainers.agent.mock import MockAgent
from virtcontainers.network.loopnat import TABLE
from virtcontainers.network.netns import run_in_netns
from virtcontainers.pod.portforward import LoopbackForwarder

T = TypeVar("T")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.timeout(60),
]
LOG = logging.getLogger("test-portforward")


def _inside(path: str, work: Callable[[], T]) -> T:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, work)
    finally:
        os.close(fd)


def _dial(path: str, address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = _inside(path, lambda: socket.create_connection((address, port), timeout=10))
    assert sock.family == family
    return sock


def _exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send, half-close, and read until the other side closes."""
    with sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)


def _closed_by_peer(sock: socket.socket) -> bool:
    with sock:
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


def _tables(name: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", name, "nft", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_connections_reach_the_guest_port_they_dialled(lab: Lab) -> None:
    name, path = lab.netns()
    ip("-n", name, "link", "set", "lo", "up")
    asyncio.run(_forward_and_close(name, path))


async def _forward_and_close(name: str, path: str) -> None:
    agent = MockAgent()
    agent.listening = {8080, 9000}
    forwarder = await LoopbackForwarder.start(agent, path, "pf", LOG)
    try:
        payloads = [os.urandom(300_000 + n) for n in range(6)]
        targets = [("127.0.0.1", 8080), ("::1", 9000)] * 3
        socks = [await asyncio.to_thread(_dial, path, a, p) for a, p in targets]
        echoed = await asyncio.gather(
            *(asyncio.to_thread(_exchange, s, d) for s, d in zip(socks, payloads, strict=True))
        )
        assert echoed == payloads
        dialled = [(c[1]["port"], c[1]["family"]) for c in agent.calls if c[0] == "connect_port"]
        assert sorted(dialled) == sorted((p, 6 if ":" in a else 4) for a, p in targets)
        # Nothing listens on the guest's port 7000: the connection is closed at once.
        refused = await asyncio.to_thread(_dial, path, "127.0.0.1", 7000)
        assert await asyncio.to_thread(_closed_by_peer, refused)
    finally:
        await forwarder.close()
    assert TABLE not in _tables(name)
    assert forwarder.connections == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(_dial, path, "127.0.0.1", 8080)


def test_closing_the_forwarder_ends_open_connections(lab: Lab) -> None:
    name, path = lab.netns()
    ip("-n", name, "link", "set", "lo", "up")
    asyncio.run(_close_while_open(name, path))


async def _close_while_open(name: str, path: str) -> None:
    agent = MockAgent()
    agent.listening = {8080}
    forwarder = await LoopbackForwarder.start(agent, path, "pf", LOG)
    try:
        sock = await asyncio.to_thread(_dial, path, "127.0.0.1", 8080)
        await asyncio.to_thread(sock.sendall, b"ping")
        assert await asyncio.to_thread(sock.recv, 4) == b"ping"
        assert forwarder.connections == 1
    finally:
        await forwarder.close()
    assert forwarder.connections == 0
    assert await asyncio.to_thread(_closed_by_peer, sock)
    assert TABLE not in _tables(name)
