"""``virtc run --timings``: where the time from the CLI call to the container's
first output goes.

The CLI marks its own steps (:meth:`Timings.mark`); the pod daemon's steps
(its start, QEMU launched, the agent's HELLO) are read from the timestamps of
the daemon's log (:meth:`Timings.add_daemon_log`), so the daemon needs no
hook.  The first step starts when the CLI's process did (from
``/proc/self/stat``): interpreter start-up and imports count.  Steps are
wall-clock times (the daemon's log has only those), at 1 ms (the log) and
10 ms (the process start) resolution.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PROCESS_START = "virtc process started"
DAEMON_STEPS = (
    ("starting pod", "daemon: pod starting"),
    ("QEMU started", "daemon: QEMU launched"),
    ("agent up", "daemon: guest agent answered (VM booted)"),
)
"""Daemon log messages (their start) and the step each one ends."""
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"
MAX_LOG_BYTES = 1 << 20
DRAIN_TIMEOUT = 2.0
"""Seconds the copy of the output may take to drain once the process ended."""


@dataclass(frozen=True)
class Step:
    name: str
    at: float
    """Wall-clock time, seconds since the epoch."""


def process_start(pid: int | None = None) -> float:
    """When a process started, in wall-clock seconds (10 ms resolution)."""
    stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    # start time is kept in ticks of boot time (CLOCK_BOOTTIME).
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def daemon_steps(log: str) -> list[Step]:
    """The daemon's milestones in its log (the first of each)."""
    steps: list[Step] = []
    seen: set[str] = set()
    for line in log.splitlines():
        parts = line.split(" ", 5)
        if len(parts) < 6:
            continue
        for message, name in DAEMON_STEPS:
            if name in seen or not parts[5].startswith(message):
                continue
            try:
                stamp = datetime.strptime(f"{parts[0]} {parts[1]}", LOG_TIME_FORMAT)
            except ValueError:
                continue
            steps.append(Step(name, stamp.timestamp()))
            seen.add(name)
    return steps


class Timings:
    """The steps of one ``virtc run``, rendered as a table of durations."""

    def __init__(self, started: float | None = None) -> None:
        self.steps = [Step(PROCESS_START, process_start() if started is None else started)]

    def mark(self, name: str) -> None:
        """The step *name* ends now."""
        self.steps.append(Step(name, time.time()))

    def add_daemon_log(self, path: Path) -> None:
        """Add the daemon's steps, read from its log (if it is there)."""
        try:
            with path.open("rb") as log:
                text = log.read(MAX_LOG_BYTES).decode(errors="replace")
        except OSError:
            return
        self.steps.extend(daemon_steps(text))

    def render(self) -> str:
        ordered = sorted(self.steps, key=lambda step: step.at)
        start = ordered[0].at
        width = max(len(step.name) for step in ordered)
        lines = [f"{'step (ends)':<{width}}  {'took':>8}  {'since start':>11}"]
        previous = start
        for step in ordered:
            took = f"{step.at - previous:7.3f}s" if step.at > start else ""
            lines.append(f"{step.name:<{width}}  {took:>8}  {step.at - start:10.3f}s")
            previous = step.at
        return "\n".join(lines)


def _copy(source: int, target: int, on_first: Callable[[], None]) -> None:
    first = True
    with contextlib.suppress(OSError):
        while chunk := os.read(source, 65536):
            if first:
                on_first()
                first = False
            while chunk:
                chunk = chunk[os.write(target, chunk) :]


@contextlib.contextmanager
def copied_output(target: int, on_first: Callable[[], None]) -> Iterator[int]:
    """A pipe whose write end is yielded, copied by a thread to *target*;
    *on_first* is called when its first byte arrives."""
    read_end, write_end = os.pipe()
    copier = threading.Thread(
        target=_copy, args=(read_end, target, on_first), name="vc-output", daemon=True
    )
    copier.start()
    try:
        yield write_end
    finally:
        os.close(write_end)
        copier.join(DRAIN_TIMEOUT)
        if not copier.is_alive():
            os.close(read_end)


def mark(timings: Timings | None, step: str) -> None:
    """:meth:`Timings.mark`, when timings are taken."""
    if timings is not None:
        timings.mark(step)


@contextlib.contextmanager
def timed_stdout(timings: Timings | None, stdout: int | None) -> Iterator[int | None]:
    """The fd to give a process for its stdout: *stdout* itself, or with
    *timings* (and no terminal) a pipe copied to it, whose first byte is
    marked as the step "first output"."""
    if timings is None or stdout is None or os.isatty(stdout):
        yield stdout
        return
    with copied_output(stdout, lambda: timings.mark("first output")) as write_end:
        yield write_end
