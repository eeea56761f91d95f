"""Operations about the guest itself: ping, guest_details, shutdown."""

from __future__ import annotations

import os
import sys

from ..args import AgentError, check_keys
from ..osutil import read_text
from ..runtime import RuntimeCall
from ..wire import AGENT_VERSION

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core import Agent
    from ..model import Reply


def ping(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, set(), set())
    reply.ok({})


def guest_details(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, set(), set())
    memory = _memory_kib()

    def answer(runtime: str) -> None:
        reply.ok(
            {
                "kernel": os.uname().release,
                "agent_version": AGENT_VERSION,
                "python": sys.version.split()[0],
                "cpus": os.cpu_count() or 1,
                "memory_kib": memory,
                "runtime": runtime,
            }
        )

    if agent.runtime_version is not None:
        answer(agent.runtime_version)
        return

    def done(call: RuntimeCall) -> None:
        text = call.out.decode(errors="replace").strip()
        first = text.splitlines()[0] if text else ""
        if call.ok:
            agent.runtime_version = first
        answer(first if call.ok else "")

    try:
        RuntimeCall(agent, [agent.runtime, "--version"], done)
    except AgentError:
        answer("")


def _memory_kib() -> int:
    """MemTotal, or 0 if /proc/meminfo does not say."""
    try:
        for line in read_text("/proc/meminfo").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def shutdown(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, set(), set())
    reply.ok({})
    if agent.channel is not None and not agent.channel.hung_up:
        agent.channel.flush()
    os.sync()
