"""Process output and input relayed as DATA frames, with credit flow control."""

from __future__ import annotations

import hashlib
import os

from tests.unit.guest.harness import NEEDS_RUNC, AgentClient, create, new_streams
from virtcontainers.agent import protocol

pytestmark = NEEDS_RUNC


def test_echo_data_then_eof_then_exit(agent: AgentClient, agent_rootfs: str) -> None:
    cid, (_, stdout, stderr) = create(agent, agent_rootfs, ["echo", "hello world"])
    assert stdout is not None and stderr is not None
    event = agent.exit_event(cid)
    assert event["exit_code"] == 0 and event["signal"] is None
    assert isinstance(event["pid"], int)
    assert agent.output(stdout) == b"hello world\n"
    assert agent.output(stderr) == b""
    # EOF of both pipes arrived before the exit event.
    order = [entry for entry in agent.log if entry[0] != "data"]
    exit_index = next(i for i, e in enumerate(order) if e[0] == "event")
    assert ("eof", stdout) in order[:exit_index]
    assert ("eof", stderr) in order[:exit_index]
    assert agent.call("wait_process", container_id=cid, exec_id=None) == {
        "exit_code": 0,
        "signal": None,
    }
    assert agent.call("container_state", container_id=cid)["status"] == "stopped"
    agent.call("remove_container", container_id=cid)


def test_large_output_with_flow_control(agent: AgentClient, agent_rootfs: str) -> None:
    size = 5 * 1024 * 1024
    cid, (_, stdout, _) = create(
        agent,
        agent_rootfs,
        ["sh", "-c", "yes abcdefghijklmnopqrstuvwxyz | head -c 5242880"],
        start=False,
    )
    assert stdout is not None
    agent.auto_credit = False
    agent.call("start_container", container_id=cid)
    # Grant credit only once the agent has sent a whole window and then gone
    # quiet: never more than one window (the container is blocked meanwhile).
    # A loaded machine may pause the sender mid-window: wait for the window.
    stalls = 0
    while stdout not in agent.eof:
        while agent.outstanding.get(stdout, 0) < protocol.STREAM_WINDOW:
            if stdout in agent.eof:
                break
            assert agent.pump(60), "the agent stopped sending before its window was used"
        while agent.pump(0.1):
            assert agent.outstanding.get(stdout, 0) <= protocol.STREAM_WINDOW
        held = agent.outstanding.get(stdout, 0)
        if stdout not in agent.eof:
            assert held == protocol.STREAM_WINDOW
            stalls += 1
        # Two CREDIT frames, to exercise partial grants.
        agent.grant(stdout, held // 2)
        agent.grant(stdout, held - held // 2)
    assert stalls >= size // protocol.STREAM_WINDOW - 1
    assert agent.max_outstanding == protocol.STREAM_WINDOW
    data = bytes(agent.data[stdout])
    expected = (b"abcdefghijklmnopqrstuvwxyz\n" * (size // 27 + 1))[:size]
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert agent.exit_event(cid)["exit_code"] == 0
    agent.call("remove_container", container_id=cid)


def test_large_stdin_is_credited(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    stdin, stdout, stderr = new_streams()
    agent.call(
        "exec_process",
        container_id=cid,
        exec_id="cat",
        process={"args": ["cat"]},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    payload = os.urandom(3 * 1024 * 1024 + 17)
    credit = protocol.STREAM_WINDOW
    offset = 0
    while offset < len(payload):
        granted = agent.credits.pop(stdin, 0)
        credit += granted
        assert credit <= protocol.STREAM_WINDOW  # the agent never over-grants
        step = min(protocol.DATA_CHUNK, credit, len(payload) - offset)
        if step == 0:
            agent.pump(0.5)
            continue
        agent.send(protocol.data(stdin, payload[offset : offset + step]))
        credit -= step
        offset += step
    agent.send(protocol.data(stdin, b"", eof=True))
    assert hashlib.sha256(agent.output(stdout)).digest() == hashlib.sha256(payload).digest()
    assert agent.exit_event(cid, "cat")["exit_code"] == 0
    agent.call("remove_container", container_id=cid)
