"""Agents: the interface (``base``), our guest agent's client (``client``: the
operations, over ``channel``: the connection, carrying ``stream``s; the
guest's answers checked by ``answers``) and the contract it shares with the
guest (``protocol``, ``contract``, ``messages``, ``results``), a mock for unit
tests (``mock``), and :func:`new_agent`, which picks one by kind.

The room may import the vocabulary at the package root, and the mock the pod
daemon's error codec (``daemon.rpc``).  Only ``enum`` is imported here at
module level: host tests of the guest agent import ``protocol`` through this
package and must load no more than the guest does (not even ``typing``).
"""

from __future__ import annotations

import enum

TYPE_CHECKING = False
if TYPE_CHECKING:
    from virtcontainers.agent.base import Agent


class AgentKind(enum.Enum):
    """Which agent a pod talks to (``PodConfig.agent``)."""

    VC = "vc"  # our guest agent, over the VM's agent port
    MOCK = "mock"  # in-process, for unit tests with the mock hypervisor


def new_agent(kind: AgentKind, pod_id: str) -> Agent:
    """A fresh agent connection of *kind* for one pod."""
    # Each backend is imported when chosen: the client pulls in asyncio, which
    # API callers do not need, and a pod daemon never loads the mock.
    if kind is AgentKind.VC:
        from virtcontainers.agent.client import AgentClient

        return AgentClient(pod_id)
    from virtcontainers.agent.mock import MockAgent

    return MockAgent()
