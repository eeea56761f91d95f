"""Host processes known by pid and start time, signalled through a pidfd.

A pid alone names whichever process holds it now: once the process we meant
has exited, the kernel may hand its pid to another.  A :class:`ProcessRef`
keeps the process's start time too (field 22 of ``/proc/<pid>/stat``, clock
ticks after boot), so a stale record never matches a new process.  Signals
go through a pidfd that is opened first and checked after, so they reach the
process that was checked or nothing: never another one, never by name.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import TypedDict

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""The unit of /proc/<pid>/stat's times."""


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if it is gone
    (field N of proc(5) is at index N - 3: utime 11, stime 12, start time 19)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold anything, spaces and ')' too.
    return data[data.rindex(b")") + 2 :].decode().split()


def pss_kib(pid: int) -> int | None:
    """A process's proportional set size in KiB, or None if it is gone (or not ours to read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None


class ProcessRecord(TypedDict):
    """A :class:`ProcessRef` as the store keeps it."""

    pid: int
    start_time: int


@dataclass(frozen=True)
class ProcessRef:
    """One process, for as long as it lives: its pid and start time."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The process that holds ``pid`` now (None if there is none)."""
        fields = stat_fields(pid)
        return None if fields is None else cls(pid, int(fields[19]))

    @classmethod
    def from_record(cls, data: object) -> ProcessRef | None:
        """Parse ``{"pid": int, "start_time": int}``; anything else is None."""
        if not isinstance(data, dict):
            return None
        pid, start = data.get("pid"), data.get("start_time")
        if type(pid) is not int or type(start) is not int or pid <= 0:
            return None
        return cls(pid, start)

    def to_record(self) -> ProcessRecord:
        return {"pid": self.pid, "start_time": self.start_time}

    def _is_running(self) -> bool:
        fields = stat_fields(self.pid)
        return fields is not None and fields[0] not in "ZX" and int(fields[19]) == self.start_time

    def open(self) -> int | None:
        """A pidfd for this process, or None if it has exited (or is a zombie)."""
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return None
        # Checked after opening: a pidfd of a reused pid fails this check, and
        # the pidfd of our process cannot come to name another one later.
        if self._is_running():
            return pidfd
        os.close(pidfd)
        return None

    def alive(self) -> bool:
        pidfd = self.open()
        if pidfd is None:
            return False
        os.close(pidfd)
        return True

    def kill(self, signum: int = signal.SIGKILL) -> bool:
        """Signal this process; False if it had already exited."""
        pidfd = self.open()
        if pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)
        return True


def alive(data: object) -> bool:
    """Whether the process of a record (``to_record`` form) still runs."""
    ref = ProcessRef.from_record(data)
    return ref is not None and ref.alive()


def current() -> ProcessRecord:
    """The record of this very process."""
    ref = ProcessRef.of(os.getpid())
    assert ref is not None  # we are running
    return ref.to_record()
