"""The byte stream to the host: the agent exits when a socket closes, and polls a
virtio-serial port again after a hangup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

from tests.unit.guest.harness import NEEDS_RUNC, ROOT, AgentHarness

pytestmark = NEEDS_RUNC
ROUNDING = 1e-6
"""Slack for the float sums of monotonic clock readings."""


def test_agent_exits_when_the_host_socket_closes(agent_harness: AgentHarness) -> None:
    agent_harness.client.hello()
    agent_harness.client.sock.shutdown(socket.SHUT_RDWR)
    assert agent_harness.proc.wait(timeout=10) == 0


def test_port_hangup_polls_again_without_spinning(tmp_path: Path) -> None:
    # A virtio-serial port reads 0 bytes while no host is attached: the agent
    # must keep the fd and look again every 50 ms, neither exit nor spin.
    # Each hang-up is checked as it happens, not counted in a wall-clock window.
    code = """
import json, os, socket, sys, time
from virtcontainers.guest.agent.channel import HUP_DELAY, Channel
from virtcontainers.guest.agent.core import Agent
from virtcontainers.guest.agent.ops import HANDLERS
a = Agent("runc", sys.argv[1], pid1=False, handlers=HANDLERS)
ours, theirs = socket.socketpair()
channel = Channel(a, ours.fileno(), is_port=True)
a.attach(channel)
hangups = []
original = channel.hangup
def counting(reason):
    before = time.monotonic()
    original(reason)
    after = time.monotonic()
    retries = [t.deadline for t in a.loop.timers if t.callback == channel.resume]
    hangups.append({
        "reason": reason,
        "at": before,
        "retry_after": [(d - before, d - after) for d in retries],
        "watched": ours.fileno() in a.loop.selector.get_map(),
    })
    os.fstat(ours.fileno())  # the fd is kept: this raises if it was closed
channel.hangup = counting
theirs.close()
loops = 0
while len(hangups) < 5 and loops < 15:
    a.loop.run_once()
    loops += 1
print(json.dumps({"hangups": hangups, "loops": loops, "stopped": a.loop.stopped,
                  "delay": HUP_DELAY}))
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
    result = json.loads(out.stdout)
    hangups, delay = result["hangups"], result["delay"]
    assert delay == 0.05  # docs/protocol.md: the port is polled again after 50 ms
    assert result["stopped"] is False
    # It looked again after every hang-up: five of them, in at most three turns
    # of the loop each (a spinning loop would take thousands).
    assert len(hangups) == 5
    assert result["loops"] <= 3 * len(hangups)
    for hangup in hangups:
        assert hangup["reason"] == "end of stream"
        assert not hangup["watched"]  # not polled until the retry
        # One retry, due HUP_DELAY after the hang-up.
        [(since_before, since_after)] = hangup["retry_after"]
        assert since_before + ROUNDING >= delay >= since_after - ROUNDING
    # ... and not sooner: no hang-up follows another within HUP_DELAY.
    times = [hangup["at"] for hangup in hangups]
    assert all(later - earlier + ROUNDING >= delay for earlier, later in pairwise(times))
