"""The byte stream to the host: the agent exits when a socket closes, and polls a
virtio-serial port again after a hangup."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.unit.guest.harness import NEEDS_RUNC, ROOT, AgentHarness

pytestmark = NEEDS_RUNC


def test_agent_exits_when_the_host_socket_closes(agent_harness: AgentHarness) -> None:
    agent_harness.client.hello()
    agent_harness.client.sock.shutdown(socket.SHUT_RDWR)
    assert agent_harness.proc.wait(timeout=10) == 0


def test_port_hangup_polls_again_without_spinning(tmp_path: Path) -> None:
    # A virtio-serial port reads 0 bytes while no host is attached: the agent
    # must keep the fd and look again every 50 ms, neither exit nor spin.
    code = """
import socket, sys, time
from virtcontainers.guest.agent.channel import Channel
from virtcontainers.guest.agent.core import Agent
from virtcontainers.guest.agent.ops import HANDLERS
a = Agent("runc", sys.argv[1], pid1=False, handlers=HANDLERS)
ours, theirs = socket.socketpair()
channel = Channel(a, ours.fileno(), is_port=True)
a.attach(channel)
hangups = []
original = channel.hangup
def counting(reason):
    hangups.append(reason)
    original(reason)
channel.hangup = counting
theirs.close()
end = time.monotonic() + 0.5
loops = 0
while time.monotonic() < end:
    a.loop.run_once()
    loops += 1
print(len(hangups), loops, a.loop.stopped)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    hangups, loops, stopped = out.stdout.split()
    assert stopped == "False"
    assert 4 <= int(hangups) <= 12
    assert int(loops) < 40
