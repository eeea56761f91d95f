"""Operations on processes: exec in a container or in the guest, signal, wait,
resize, close_output."""

from __future__ import annotations

import signal

import pytest

from tests.unit.guest.harness import NEEDS_RUNC, AgentCallError, AgentClient, create, new_streams
from virtcontainers.agent import protocol

pytestmark = NEEDS_RUNC


def test_sigkill_is_137(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    agent.call("signal_process", container_id=cid, exec_id=None, signal=9, all=False)
    assert agent.call("wait_process", container_id=cid) == {"exit_code": 137, "signal": 9}
    event = agent.exit_event(cid)
    assert (event["exit_code"], event["signal"]) == (137, 9)
    with pytest.raises(AgentCallError) as info:
        agent.call("signal_process", container_id=cid, exec_id=None, signal=15, all=False)
    assert info.value.kind == "state"
    agent.call("remove_container", container_id=cid)


def test_exec_with_stdin_and_stderr(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    stdin, stdout, stderr = new_streams()
    result = agent.call(
        "exec_process",
        container_id=cid,
        exec_id="cat",
        process={"args": ["sh", "-c", "cat; echo oops >&2"], "env": ["PATH=/bin"]},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    assert result["pid"] > 0
    agent.send(protocol.data(stdin, b"ping\n"))
    agent.wait_until(lambda: bytes(agent.data.get(stdout, b"")) == b"ping\n")
    assert agent.credits.get(stdin) == 5  # the agent credits what it wrote
    agent.send(protocol.data(stdin, b"pong\n", eof=True))
    assert agent.output(stdout) == b"ping\npong\n"
    assert agent.output(stderr) == b"oops\n"
    assert agent.exit_event(cid, "cat")["exit_code"] == 0
    assert agent.call("wait_process", container_id=cid, exec_id="cat")["exit_code"] == 0

    processes = agent.call("list_processes", container_id=cid)["processes"]
    assert [p["args"] for p in processes] == [["sleep", "100"]]

    agent.call("remove_container", container_id=cid)
    assert agent.exit_event(cid)["signal"] == 9  # removal killed the init
    with pytest.raises(AgentCallError) as info:
        agent.call("container_state", container_id=cid)
    assert info.value.kind == "not_found"


def test_terminal_exec_and_resize(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    stdin, stdout, stderr = new_streams()
    agent.call(
        "exec_process",
        container_id=cid,
        exec_id="tty",
        process={
            "args": ["sh", "-c", "read line; echo got $line; stty size 2>/dev/null; exit 4"],
            "env": ["PATH=/bin"],
            "terminal": True,
        },
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    agent.call("resize_terminal", container_id=cid, exec_id="tty", rows=33, cols=101)
    agent.send(protocol.data(stdin, b"hi\n"))
    out = agent.output(stdout)
    assert b"got hi" in out
    assert agent.output(stderr) == b""  # a terminal has no separate stderr
    assert agent.exit_event(cid, "tty")["exit_code"] == 4
    with pytest.raises(AgentCallError) as info:
        agent.call("resize_terminal", container_id=cid, exec_id=None, rows=1, cols=1)
    assert info.value.kind == "state"  # the init has no terminal
    agent.call("remove_container", container_id=cid)


def test_exec_guest(agent: AgentClient) -> None:
    stdin, stdout, stderr = new_streams()
    result = agent.call(
        "exec_guest",
        exec_id="g1",
        process={"args": ["sh", "-c", "echo $FOO; cat; echo e >&2; exit 5"], "env": ["FOO=bar"]},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    assert result["pid"] > 0
    agent.send(protocol.data(stdin, b"typed\n", eof=True))
    assert agent.output(stdout) == b"bar\ntyped\n"
    assert agent.output(stderr) == b"e\n"
    assert agent.call("wait_process", container_id=None, exec_id="g1")["exit_code"] == 5
    assert agent.exit_event(None, "g1")["exit_code"] == 5

    _, tty_out, _ = new_streams()
    agent.call(
        "exec_guest",
        exec_id="g2",
        process={"args": ["sh", "-c", "test -t 0 && tty"], "terminal": True},
        stdout=tty_out,
    )
    assert b"/dev/pts/" in agent.output(tty_out)
    assert agent.call("wait_process", container_id=None, exec_id="g2")["exit_code"] == 0

    with pytest.raises(AgentCallError) as info:
        agent.call("exec_guest", exec_id="g3", process={"args": ["/no/such/binary"]})
    assert info.value.kind == "runtime"
    with pytest.raises(AgentCallError) as info:
        agent.call("wait_process", container_id=None, exec_id="g3")
    assert info.value.kind == "not_found"


def test_a_closed_output_ends_its_writer_with_sigpipe(
    agent: AgentClient, agent_rootfs: str
) -> None:
    """The host's reader went away: the process's next write gets SIGPIPE."""
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    _, stdout, _ = new_streams()
    agent.call(
        "exec_process", container_id=cid, exec_id="yes", process={"args": ["yes"]}, stdout=stdout
    )
    agent.wait_until(lambda: stdout in agent.data)
    agent.call("close_output", stream=stdout)
    event = agent.exit_event(cid, "yes")
    assert (event["exit_code"], event["signal"]) == (128 + signal.SIGPIPE, signal.SIGPIPE)
    assert agent.call("close_output", stream=stdout) == {}  # an ended stream: no error
    agent.call("remove_container", container_id=cid)
