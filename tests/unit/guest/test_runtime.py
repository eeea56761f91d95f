"""Calls of the OCI runtime: its errors, and processes that exit before their pid is read."""

from __future__ import annotations

import pytest

from tests.unit.guest.harness import (
    NEEDS_RUNC,
    AgentCallError,
    AgentClient,
    create,
    make_spec,
    new_streams,
)

pytestmark = NEEDS_RUNC


def test_unknown_exec_exists_and_runtime_errors(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    with pytest.raises(AgentCallError) as info:
        agent.call("wait_process", container_id=cid, exec_id="nope")
    assert info.value.kind == "not_found"
    with pytest.raises(AgentCallError) as info:
        agent.call(
            "create_container",
            container_id=cid,
            bundle=make_spec(["true"], agent_rootfs),
        )
    assert info.value.kind == "exists"
    with pytest.raises(AgentCallError) as info:
        agent.call("start_container", container_id=cid)
    assert info.value.kind == "state"
    # A binary missing from the rootfs: the runtime fails and says why.
    with pytest.raises(AgentCallError) as info:
        agent.call(
            "exec_process",
            container_id=cid,
            exec_id="missing",
            process={"args": ["/bin/no-such-binary"]},
            stdout=None,
        )
    assert info.value.kind == "runtime"
    assert "no-such-binary" in info.value.message
    assert len(info.value.message.encode()) <= 4096
    agent.call("remove_container", container_id=cid)


def test_fast_exec_exits_are_not_lost(agent: AgentClient, agent_rootfs: str) -> None:
    # The process may exit (and be reaped) before runc has written its pid file.
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    for n in range(5):
        _, stdout, _ = new_streams()
        exec_id = f"e{n}"
        agent.call(
            "exec_process",
            container_id=cid,
            exec_id=exec_id,
            process={"args": ["sh", "-c", f"echo {n}; exit {n}"]},
            stdout=stdout,
        )
        assert agent.output(stdout) == f"{n}\n".encode()
        assert agent.exit_event(cid, exec_id)["exit_code"] == n
        assert agent.call("wait_process", container_id=cid, exec_id=exec_id)["exit_code"] == n
    # An exec id can be reused once its process has exited.
    agent.call(
        "exec_process", container_id=cid, exec_id="e0", process={"args": ["true"]}, stdout=None
    )
    agent.call("remove_container", container_id=cid)
