"""A host that goes away and one that reattaches: the guest keeps its
processes, holds their output (no byte lost, bounded by flow control) and
their exit codes, and hands both to the next host."""

from __future__ import annotations

import time

import pytest

from tests.unit.guest.harness import NEEDS_RUNC, AgentCallError, AgentClient, create

pytestmark = NEEDS_RUNC
COUNT = 40
COUNTER = f"i=0; while [ $i -lt {COUNT} ]; do echo $i; i=$((i+1)); sleep 0.05; done"
EXPECTED = b"".join(b"%d\n" % i for i in range(COUNT))


def detached_stdout(agent: AgentClient, cid: str) -> int:
    table = agent.call("process_table")
    [entry] = [p for p in table["processes"] if p["container_id"] == cid]
    assert entry["stdout"] is not None
    return int(entry["stdout"])


def test_output_the_last_host_did_not_credit_is_sent_again(
    agent: AgentClient, agent_rootfs: str
) -> None:
    agent.auto_credit = False
    cid, (_, stdout, _) = create(agent, agent_rootfs, ["sh", "-c", COUNTER])
    assert stdout is not None
    agent.wait_until(lambda: b"3\n" in bytes(agent.data.get(stdout, b"")))
    # The host wrote (and credited) only the first 4 bytes, then went away.
    written = bytes(agent.data[stdout][:4])
    agent.grant(stdout, 4)
    agent.hello("reattached")
    agent.data.clear()
    time.sleep(0.5)  # the counter runs on while no host is attached
    assert stdout not in agent.data
    agent.auto_credit = True
    assert detached_stdout(agent, cid) == stdout
    assert agent.call("resume_output", streams=[stdout]) == {}
    assert written + agent.output(stdout) == EXPECTED
    assert agent.call("wait_process", container_id=cid)["exit_code"] == 0
    agent.call("remove_container", container_id=cid)


def test_an_exit_while_detached_is_kept_and_its_output_delivered(
    agent: AgentClient, agent_rootfs: str
) -> None:
    cid, (_, stdout, _) = create(agent, agent_rootfs, ["sh", "-c", "sleep 0.3; echo bye; exit 7"])
    assert stdout is not None
    agent.hello("gone")
    agent.exit_event(cid)  # the exit is reported on the new connection
    table = agent.call("process_table")
    [entry] = [p for p in table["processes"] if p["container_id"] == cid]
    assert (entry["exit_code"], entry["signal"], entry["stdout"]) == (7, None, stdout)
    assert {"id": cid, "status": "stopped"} in table["containers"]
    assert agent.call("wait_process", container_id=cid)["exit_code"] == 7
    agent.call("resume_output", streams=[stdout])
    assert agent.output(stdout) == b"bye\n"
    agent.call("remove_container", container_id=cid)


def test_a_detached_writer_blocks_instead_of_losing_output(
    agent: AgentClient, agent_rootfs: str
) -> None:
    size = 4 << 20  # far more than the pipe and the credit window hold
    script = f"head -c {size} /dev/zero | tr '\\0' x; echo end"
    cid, (_, stdout, _) = create(agent, agent_rootfs, ["sh", "-c", script], start=False)
    assert stdout is not None
    agent.auto_credit = False  # nobody writes the output anywhere: the window fills
    agent.call("start_container", container_id=cid)
    agent.hello("detached")
    time.sleep(1.0)
    [entry] = [p for p in agent.call("process_table")["processes"] if p["container_id"] == cid]
    assert entry["exit_code"] is None, "the writer should be held by flow control"
    agent.data.clear()
    agent.auto_credit = True
    agent.call("resume_output", streams=[stdout])
    received = agent.output(stdout)
    assert agent.call("wait_process", container_id=cid)["exit_code"] == 0
    # The first host credited nothing: all of it comes again, and nothing more.
    assert received == b"x" * size + b"end\n"
    agent.call("remove_container", container_id=cid)


def test_resume_refuses_a_stream_that_is_not_detached(agent: AgentClient) -> None:
    with pytest.raises(AgentCallError) as info:
        agent.call("resume_output", streams=[12345])
    assert info.value.kind == "invalid"


def test_a_host_that_dies_before_resuming_leaves_the_streams_to_the_next(
    agent: AgentClient, agent_rootfs: str
) -> None:
    cid, (_, stdout, _) = create(agent, agent_rootfs, ["sh", "-c", "sleep 0.5; echo kept"])
    assert stdout is not None
    agent.hello("first reattach")  # lists the table, then dies before resuming
    assert detached_stdout(agent, cid) == stdout
    agent.hello("second reattach")
    with pytest.raises(AgentCallError) as info:  # the id is still taken
        create(agent, agent_rootfs, ["true"], streams=(None, stdout, None))
    assert info.value.kind == "exists"
    assert detached_stdout(agent, cid) == stdout
    agent.call("resume_output", streams=[stdout])
    assert agent.output(stdout) == b"kept\n"
    agent.call("remove_container", container_id=cid)
