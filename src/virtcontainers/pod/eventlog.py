"""The pod daemon's log of :class:`~virtcontainers.events.Event`: appended by the
Pod, read by callers that wait for what comes next."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from virtcontainers.events import Event

KEPT = 1000
"""Events kept; a caller that falls further behind misses the oldest."""


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
