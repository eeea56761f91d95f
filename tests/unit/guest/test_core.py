"""The Agent: the handshake, new connections, request dispatch and lookups."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.unit.guest.harness import NEEDS_RUNC, AgentCallError, AgentClient, AgentHarness, create
from virtcontainers.agent import protocol

pytestmark = NEEDS_RUNC
DEEP = b"[" * 500_000
"""A JSON payload that nests deeper than Python's parser can go."""


def test_hello_resyncs_past_garbage(agent_harness: AgentHarness) -> None:
    client = agent_harness.client
    # Stale bytes (even a fragment of a frame header) before the handshake.
    client.send(b"garbage\x00\xffVC\x09" + b"VC" + b"\x02")
    # Requests before any HELLO are stale too: ignored.
    client.send(protocol.request(99, "ping", {}))
    reply = client.hello("nonce-1")
    assert reply["version"] == protocol.PROTOCOL_VERSION
    assert reply["nonce"] == "nonce-1"
    assert isinstance(reply["agent_version"], str)
    assert client.call("ping") == {}
    assert 99 not in client.responses
    # A second HELLO (a new host connection) is answered with its own nonce.
    assert client.hello("nonce-2")["nonce"] == "nonce-2"
    assert client.call("ping") == {}


def test_malformed_request_is_invalid(agent: AgentClient) -> None:
    agent.send(protocol.encode_frame(protocol.FrameType.REQUEST, 42, b"not json"))
    agent.send(protocol.encode_json(protocol.FrameType.REQUEST, 43, {"op": "ping", "args": []}))
    for request_id in (42, 43):
        with pytest.raises(AgentCallError) as info:
            agent.result(request_id)
        assert info.value.kind == "invalid"
    assert agent.call("ping") == {}


def test_a_request_nested_too_deep_is_invalid(agent: AgentClient) -> None:
    agent.send(protocol.encode_frame(protocol.FrameType.REQUEST, 42, DEEP))
    with pytest.raises(AgentCallError) as info:
        agent.result(42)
    assert info.value.kind == "invalid"
    assert "too deep" in info.value.message
    agent.send(protocol.encode_frame(protocol.FrameType.HELLO, 0, DEEP))
    assert agent.call("ping") == {}


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("container_state", {"container_id": "nope"}),
        ("start_container", {"container_id": "nope"}),
        ("wait_process", {"container_id": "nope", "exec_id": None}),
        ("remove_container", {"container_id": "nope"}),
        ("list_processes", {"container_id": "nope"}),
    ],
)
def test_unknown_container_is_not_found(agent: AgentClient, op: str, args: dict[str, Any]) -> None:
    with pytest.raises(AgentCallError) as info:
        agent.call(op, **args)
    assert info.value.kind == "not_found"


def test_new_hello_keeps_containers_and_detaches_streams(
    agent: AgentClient, agent_rootfs: str
) -> None:
    script = "echo early; read x; echo late; sleep 100"
    cid, (stdin, stdout, _) = create(agent, agent_rootfs, ["sh", "-c", script])
    assert stdin is not None and stdout is not None
    agent.wait_until(lambda: bytes(agent.data.get(stdout, b"")) == b"early\n")
    agent.hello("again")  # a new host connection
    agent.data.clear()
    # The old stdin id is unbound: DATA on it is ignored, no CREDIT comes back.
    agent.send(protocol.data(stdin, b"go\n"))
    assert agent.call("container_state", container_id=cid)["status"] == "running"
    agent.call("signal_process", container_id=cid, signal=signal.SIGKILL, all=False)
    assert agent.call("wait_process", container_id=cid)["exit_code"] == 137
    assert agent.exit_event(cid)["signal"] == 9
    # Nothing more on the previous connection's stream ids (not even EOF).
    assert stdout not in agent.data and stdout not in agent.eof
    assert stdin not in agent.credits
    # The output stream is detached, kept for a host that reattaches: its id
    # stays taken; the stdin id is free for the new connection.
    with pytest.raises(AgentCallError) as info:
        create(agent, agent_rootfs, ["echo", "reuse"], streams=(None, stdout, None))
    assert info.value.kind == "exists"
    cid2, _ = create(agent, agent_rootfs, ["echo", "reuse"], streams=(None, stdin, None))
    assert agent.output(stdin) == b"reuse\n"
    agent.call("remove_container", container_id=cid)
    agent.call("remove_container", container_id=cid2)
