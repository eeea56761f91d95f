"""Operations on containers: create, start, state, pause, resume, remove."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.guest.harness import (
    NEEDS_RUNC,
    AgentCallError,
    AgentClient,
    AgentHarness,
    create,
    make_spec,
    new_id,
    runc_leftovers,
)

pytestmark = NEEDS_RUNC


def test_exit_code_and_wait(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sh", "-c", "sleep 0.3; exit 3"], start=False)
    state = agent.call("container_state", container_id=cid)
    assert state["status"] == "created" and state["pid"] > 0
    waits = [agent.request("wait_process", container_id=cid) for _ in range(2)]
    agent.call("start_container", container_id=cid)
    assert agent.call("container_state", container_id=cid)["status"] == "running"
    for request_id in waits:
        assert agent.result(request_id) == {"exit_code": 3, "signal": None}
    assert agent.exit_event(cid)["exit_code"] == 3
    agent.call("remove_container", container_id=cid)


def test_terminal_container(agent: AgentClient, agent_rootfs: str) -> None:
    cid, (_, stdout, _) = create(
        agent, agent_rootfs, ["sh", "-c", "test -t 0 && echo tty-yes"], terminal=True
    )
    assert stdout is not None
    assert b"tty-yes" in agent.output(stdout)
    assert agent.exit_event(cid)["exit_code"] == 0
    agent.call("remove_container", container_id=cid)


def test_pause_resume_and_signal_all(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    agent.call("pause_container", container_id=cid)
    assert agent.call("container_state", container_id=cid)["status"] == "paused"
    with pytest.raises(AgentCallError) as info:
        agent.call("pause_container", container_id=cid)
    assert info.value.kind == "state"
    agent.call("resume_container", container_id=cid)
    assert agent.call("container_state", container_id=cid)["status"] == "running"
    agent.call("signal_process", container_id=cid, exec_id=None, signal=15, all=True)
    # sleep as a pid-namespace init ignores SIGTERM (no handler): use SIGKILL.
    agent.call("signal_process", container_id=cid, signal=9, all=True)
    assert agent.call("wait_process", container_id=cid)["signal"] == 9
    agent.call("remove_container", container_id=cid)


def test_a_cpuset_naming_cpus_the_vm_lacks_is_refused_plainly(
    agent: AgentClient, agent_rootfs: str
) -> None:
    """Not crun's "Numerical result out of range": the agent names the CPU."""
    online = Path("/sys/devices/system/cpu/online").read_text().strip()
    spec = make_spec(["true"], agent_rootfs)
    spec.setdefault("linux", {})["resources"] = {"cpu": {"cpus": "0,4095"}}
    with pytest.raises(AgentCallError) as info:
        agent.call("create_container", container_id=new_id(), bundle=spec)
    assert (info.value.kind, info.value.message) == (
        "invalid",
        f"linux.resources.cpu.cpus names CPU 4095, which this VM does not have (its CPUs: "
        f"{online})",
    )


def test_remove_container_cleans_up(agent_harness: AgentHarness, agent_rootfs: str) -> None:
    client = agent_harness.client
    client.hello()
    cid, (_, stdout, _) = create(client, agent_rootfs, ["sleep", "100"], start=False)
    bundle = os.path.join(agent_harness.state, "bundles", cid)
    assert os.path.exists(os.path.join(bundle, "config.json"))
    assert cid in runc_leftovers(agent_harness.state)
    assert client.call("remove_container", container_id=cid) == {}
    assert not os.path.exists(bundle)
    assert cid not in runc_leftovers(agent_harness.state)
    assert stdout in client.eof
    assert client.exit_event(cid)["exit_code"] == 137
    with pytest.raises(AgentCallError) as info:
        client.call("remove_container", container_id=cid)
    assert info.value.kind == "not_found"
