"""The pod daemon's log of :class:`~virtcontainers.events.Event`: appended by the
Pod, read by callers that wait for what comes next; and the rate limit on the
lines that guest events write to daemon.log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from virtcontainers.events import Event

KEPT = 1000
"""Events kept; a caller that falls further behind misses the oldest."""
LOG_BURST = 5
LOG_INTERVAL = 10.0
"""A guest event of one kind writes at most LOG_BURST lines per LOG_INTERVAL
seconds to daemon.log; the rest are counted, and the count logged."""


class EventLog:
    """The pod daemon's events: appended by the Pod, read by callers."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque(maxlen=KEPT)
        self._next = 1
        self._changed = asyncio.Condition()

    def emit(self, kind: str, container_id: str | None = None, **fields: int | str | None) -> None:
        self._events.append(Event(self._next, time.time(), kind, container_id, fields))
        self._next += 1
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def after(self, seq: int, timeout: float) -> list[Event]:
        """The events numbered above ``seq``; waits up to ``timeout`` s for one."""
        if self._newest() <= seq and timeout > 0:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    arrived = self._changed.wait_for(lambda: self._newest() > seq)
                    await asyncio.wait_for(arrived, timeout)
        return [event for event in self._events if event.seq > seq]

    def _newest(self) -> int:
        return self._next - 1


@dataclass
class _Window:
    ends: float
    logged: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """Warnings that the guest can repeat at will (forged ``oom`` events, say):
    the first ``burst`` of each kind per ``interval`` are logged, then one line
    says how many more were not, so daemon.log grows by a bounded amount."""

    def __init__(
        self,
        log: logging.Logger,
        burst: int = LOG_BURST,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = self.clock()
        window = self._windows.get(kind)
        if window is None or now >= window.ends:
            self.flush(kind)
            window = self._windows[kind] = _Window(ends=now + self.interval)
        if window.logged < self.burst:
            window.logged += 1
            self.log.warning(message, *args)
            return
        window.suppressed += 1
        if window.suppressed == 1:
            # Said when the interval ends, even if the flood stops before then.
            with contextlib.suppress(RuntimeError):  # no loop: said by the next line
                asyncio.get_running_loop().call_later(
                    window.ends - now, self._flush_window, kind, window
                )

    def _flush_window(self, kind: str, window: _Window) -> None:
        if self._windows.get(kind) is window:
            self.flush(kind)

    def flush(self, kind: str) -> None:
        """Log how many ``kind`` lines were left out, if any."""
        window = self._windows.pop(kind, None)
        if window is not None and window.suppressed:
            self.log.warning(
                "%d more %r events not logged in %.0f s (at most %d per interval are)",
                window.suppressed,
                kind,
                self.interval,
                self.burst,
            )
