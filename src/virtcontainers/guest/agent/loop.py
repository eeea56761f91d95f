"""The event loop: one thread, one selector, callbacks per fd and timers."""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable

from .log import describe_exception, log

Handler = Callable[[], None]


class Timer:
    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Handler) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """A minimal selectors loop: one reader and one writer callback per fd."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.handlers: dict[int, list[Handler | None]] = {}
        self.timers: list[Timer] = []
        self.stopped = False

    def _update(self, fd: int) -> None:
        pair = self.handlers.get(fd, [None, None])
        mask = (selectors.EVENT_READ if pair[0] else 0) | (selectors.EVENT_WRITE if pair[1] else 0)
        registered = fd in self.selector.get_map()
        if not mask:
            self.handlers.pop(fd, None)
            if registered:
                self.selector.unregister(fd)
        elif registered:
            self.selector.modify(fd, mask)
        else:
            self.selector.register(fd, mask)

    def set_reader(self, fd: int, callback: Handler | None) -> None:
        self.handlers.setdefault(fd, [None, None])[0] = callback
        self._update(fd)

    def set_writer(self, fd: int, callback: Handler | None) -> None:
        self.handlers.setdefault(fd, [None, None])[1] = callback
        self._update(fd)

    def forget(self, fd: int) -> None:
        """Drop every callback of fd; call before closing it."""
        if fd in self.handlers:
            self.handlers[fd] = [None, None]
            self._update(fd)

    def call_later(self, delay: float, callback: Handler) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        self.timers.append(timer)
        return timer

    def poll(
        self, attempt: Callable[[], bool], wait: float, interval: float, gave_up: Handler
    ) -> None:
        """Call *attempt* now, and every *interval* s while it returns False (it
        has not found what it waits for), for up to *wait* s; then *gave_up*."""
        deadline = time.monotonic() + wait

        def again() -> None:
            if attempt():
                return
            if time.monotonic() < deadline:
                self.call_later(interval, again)
            else:
                gave_up()

        again()

    @staticmethod
    def guarded(callback: Handler) -> None:
        try:
            callback()
        except Exception as exc:  # the agent must keep serving
            log(f"error in event handler: {describe_exception(exc)}")

    def run_once(self) -> None:
        self.timers = [t for t in self.timers if not t.cancelled]
        timeout: float | None = None
        if self.timers:
            timeout = max(0.0, min(t.deadline for t in self.timers) - time.monotonic())
        for key, mask in self.selector.select(timeout):
            pair = self.handlers.get(key.fd)
            if pair and mask & selectors.EVENT_READ and pair[0]:
                self.guarded(pair[0])
            pair = self.handlers.get(key.fd)
            if pair and mask & selectors.EVENT_WRITE and pair[1]:
                self.guarded(pair[1])
        now = time.monotonic()
        due = [t for t in self.timers if not t.cancelled and t.deadline <= now]
        for timer in due:
            timer.cancelled = True
            self.guarded(timer.callback)

    def run(self) -> None:
        while not self.stopped:
            self.run_once()
