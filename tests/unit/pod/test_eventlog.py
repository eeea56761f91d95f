"""The rate limit on guest events in daemon.log, with forged events."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod, started_here
from virtcontainers import api
from virtcontainers.agent.mock import MockAgent
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.pod.eventlog import LOG_BURST, RateLimitedLog

FLOOD = 300_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_logged_then_one_line_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), burst=3, interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, "test.ratelimit"):
        for n in range(1000):
            limited.warning("oom", "oom %d", n)
        limited.warning("exit", "another kind has its own burst")
        clock.now = 10.0
        limited.warning("oom", "a new interval")
    assert [r.getMessage() for r in caplog.records] == [
        "oom 0",
        "oom 1",
        "oom 2",
        "another kind has its own burst",
        "997 more 'oom' events not logged in 10 s (at most 3 per interval are)",
        "a new interval",
    ]


def test_the_count_is_logged_when_the_interval_ends_without_another_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), burst=1, interval=0.05)

    async def flood_then_quiet() -> None:
        limited.warning("oom", "first")
        limited.warning("oom", "second")
        await asyncio.sleep(0.2)

    with caplog.at_level(logging.WARNING, "test.ratelimit"):
        asyncio.run(flood_then_quiet())
    assert [r.getMessage() for r in caplog.records][-1].startswith("1 more 'oom' events")


def test_300000_forged_oom_events_write_a_few_lines(
    run_root: Path, image: ImagePaths, rootfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = MockAgent()
    config = mock_pod("flood", image, ContainerConfig("c1", rootfs, Cmd(("sleep", "1000"))))

    async def scenario() -> None:
        pod = await started_here(config, MockHypervisor(), agent)
        # One interval, however slowly a loaded machine sends the flood.
        pod.guest_log.clock = Clock()
        try:
            for _ in range(FLOOD):
                agent.send_event("oom", {"container_id": "c1"})
            pod.guest_log.flush("oom")
            assert pod.containers["c1"].oom_killed
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    with caplog.at_level(logging.WARNING, "virtcontainers.pod.pod"):
        asyncio.run(asyncio.wait_for(scenario(), 120))
    lines = [r.getMessage() for r in caplog.records if "oom" in r.getMessage().lower()]
    assert lines == ["container c1: OOM kill"] * LOG_BURST + [
        f"{FLOOD - LOG_BURST} more 'oom' events not logged in 10 s (at most 5 per interval are)"
    ]
    api.delete_pod("flood")
