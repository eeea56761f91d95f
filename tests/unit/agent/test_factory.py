"""new_agent: the backend a pod's kind names, and nothing else loaded."""

from __future__ import annotations

import json
import subprocess
import sys

from virtcontainers.agent import AgentKind, new_agent
from virtcontainers.agent.client import AgentClient
from virtcontainers.agent.mock import MockAgent


def test_new_agent_builds_the_backend_of_its_kind() -> None:
    assert isinstance(new_agent(AgentKind.VC, "pod-1"), AgentClient)
    assert isinstance(new_agent(AgentKind.MOCK, "pod-1"), MockAgent)


def test_a_pod_daemon_s_agent_does_not_load_the_mock() -> None:
    code = (
        "import json, sys\n"
        "from virtcontainers.agent import AgentKind, new_agent\n"
        "new_agent(AgentKind.VC, 'pod-1')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('virtcontainers'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert "virtcontainers.agent.client" in loaded
    assert "virtcontainers.agent.mock" not in loaded
