"""Operations about the guest itself: guest_details, shutdown."""

from __future__ import annotations

import os

from tests.unit.guest.harness import NEEDS_RUNC, AgentClient

pytestmark = NEEDS_RUNC


def test_guest_details(agent: AgentClient) -> None:
    details = agent.call("guest_details")
    assert details["kernel"] == os.uname().release
    assert details["cpus"] >= 1
    assert details["memory_kib"] > 0
    assert details["runtime"].startswith("runc")
    assert details["python"].count(".") == 2


def test_shutdown(agent: AgentClient) -> None:
    assert agent.call("shutdown") == {}
