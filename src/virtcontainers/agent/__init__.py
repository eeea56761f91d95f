"""Agents: the protocol, our guest agent's client, a mock, and the factory."""

from __future__ import annotations

from virtcontainers.agent.base import Agent, AgentKind


def new_agent(kind: AgentKind, pod_id: str) -> Agent:
    """A fresh agent connection of *kind* for one pod (imported on demand:
    the client pulls in asyncio, which API callers do not need)."""
    if kind is AgentKind.VC:
        from virtcontainers.agent.client import AgentClient

        return AgentClient(pod_id)
    from virtcontainers.agent.mock import MockAgent

    return MockAgent()
