"""Where the time of a pod start goes, step by step (``virtc run --timings``).

The pod daemon emits a ``boot`` event at each step of a VM's start
(:mod:`virtcontainers.events`); the caller adds its own steps, from its
process's start (read from ``/proc``, so the interpreter's start and the
CLI's imports count) to the container's first output.  :meth:`Timings.render`
lines them all up by wall clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from virtcontainers.events import Event
from virtcontainers.host import proc as hostproc


@dataclass(frozen=True)
class Step:
    at: float
    """Wall clock (``time.time()``)."""
    where: str
    """Who saw it: the caller, or the pod's daemon."""
    name: str


def process_started(pid: int | None = None) -> float:
    """The wall-clock time a process started (this one by default), to 1/CLK_TCK s."""
    process = hostproc.of(pid or os.getpid())
    if process is None:
        raise ProcessLookupError(f"no process {pid}")
    since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - process.start_time / hostproc.CLOCK_TICKS
    return time.time() - since_boot


@dataclass
class Timings:
    """Steps seen by a caller, and by the pod's daemon."""

    where: str = "virtc"
    steps: list[Step] = field(default_factory=list)

    @classmethod
    def since_process_start(cls, where: str = "virtc") -> Timings:
        return cls(where, [Step(process_started(), where, "process started")])

    def mark(self, name: str) -> None:
        self.steps.append(Step(time.time(), self.where, name))

    def add_pod_events(self, events: Iterable[Event]) -> None:
        """The ``boot`` steps among a pod's events."""
        for event in events:
            if event.kind == "boot":
                self.steps.append(Step(event.time, "pod", str(event.fields.get("step"))))

    def render(self) -> list[str]:
        """One line per step, in time order: since the first step, and since the one before."""
        ordered = sorted(self.steps, key=lambda step: step.at)
        if not ordered:
            return []
        first = previous = ordered[0].at
        lines = [f"{'total':>8}  {'step':>8}  {'by':<5}  what"]
        for step in ordered:
            total, delta = step.at - first, step.at - previous
            lines.append(f"{total:7.3f}s  {delta:+7.3f}s  {step.where:<5}  {step.name}")
            previous = step.at
        return lines
