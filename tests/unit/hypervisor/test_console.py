"""The guest console's log: bounded in size, read at a bounded rate."""

from __future__ import annotations

import asyncio
from pathlib import Path

from virtcontainers.hypervisor.console import RateLimit, pump


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_console_log_is_bounded(tmp_path: Path) -> None:
    log = tmp_path / "console.log"

    async def run() -> None:
        reader = asyncio.StreamReader()
        for n in range(200):
            reader.feed_data(f"line {n:04d} {'x' * 90}\n".encode())
        reader.feed_eof()
        await pump(reader, log, 4096, RateLimit(1e9, 1e9))

    asyncio.run(run())
    text = log.read_text()
    assert len(text) <= 4096
    assert text.startswith("[console trimmed]")
    assert text.endswith(f"line 0199 {'x' * 90}\n")


def test_a_flood_is_read_no_faster_than_the_rate() -> None:
    clock = FakeClock()
    limit = RateLimit(rate=1000, burst=4000, clock=clock)
    assert limit.delay(4000) == 0  # the burst
    assert limit.delay(500) == 0.5  # then the rate: 500 bytes are half a second
    clock.now += 0.5
    assert limit.delay(1000) == 1.0
    clock.now += 60  # idle: the bucket refills up to the burst only
    assert limit.delay(4000) == 0
    assert limit.delay(1) > 0
