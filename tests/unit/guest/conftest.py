"""Fixtures of the guest agent's tests: a busybox rootfs, the agent as a subprocess."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.unit.guest.harness import APPLETS, BUSYBOX, AgentClient, AgentHarness, spawn_agent


@pytest.fixture(scope="module")
def agent_rootfs() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="vca-rootfs-")
    rootfs = os.path.join(base, "rootfs")
    try:
        for sub in ("bin", "proc", "dev", "sys", "tmp", "etc"):
            os.makedirs(os.path.join(rootfs, sub))
        shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        yield rootfs
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def agent_harness() -> Iterator[AgentHarness]:
    with spawn_agent() as harness:
        yield harness


@pytest.fixture
def agent(agent_harness: AgentHarness) -> AgentClient:
    client = agent_harness.client
    client.hello()
    return client
