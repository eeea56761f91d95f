"""Host processes known by pid and start time, signalled through a pidfd.

A pid alone names whichever process holds it now: once the process we meant
has exited, the kernel may hand its pid to another.  A
:class:`~virtcontainers.records.ProcessRef` keeps the process's start time too
(field 22 of ``/proc/<pid>/stat``, clock ticks after boot), so a stale record
never matches a new process.  Signals go through a pidfd that is opened first
and checked after, so they reach the process that was checked or nothing:
never another one, never by name.
"""

from __future__ import annotations

import os
import signal
from typing import NamedTuple

from virtcontainers.records import ProcessRef

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


class ProcessUsage(NamedTuple):
    """What a host process costs: its PSS (pages shared with other processes,
    a template's clones among them, split between them) and its CPU time."""

    pss_bytes: int
    user_seconds: float
    system_seconds: float

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds


def process_usage(pid: int | None) -> ProcessUsage | None:
    """PSS and CPU time of a process, or None if it is gone (or not ours to read)."""
    if pid is None:
        return None
    pss = pss_kib(pid)
    try:
        fields = stat_fields(pid)
        if pss is None or fields is None:
            return None
        user, system = (int(fields[i]) / CLOCK_TICKS for i in (11, 12))
        return ProcessUsage(pss * 1024, user, system)
    except (OSError, IndexError, ValueError):
        return None


def of(pid: int) -> ProcessRef | None:
    """The process that holds ``pid`` now (None if there is none)."""
    fields = stat_fields(pid)
    return None if fields is None else ProcessRef(pid, int(fields[19]))


def current() -> ProcessRef:
    """This very process."""
    process = of(os.getpid())
    assert process is not None  # we are running
    return process


def _is_running(process: ProcessRef) -> bool:
    fields = stat_fields(process.pid)
    return fields is not None and fields[0] not in "ZX" and int(fields[19]) == process.start_time


def stopped(process: ProcessRef) -> bool:
    """Whether ``process`` is stopped (by SIGSTOP, or traced): it answers nothing."""
    fields = stat_fields(process.pid)
    return fields is not None and fields[0] in "Tt" and int(fields[19]) == process.start_time


def pidfd(process: ProcessRef) -> int | None:
    """A pidfd for ``process``, or None if it has exited (or is a zombie)."""
    try:
        fd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return None
    # Checked after opening: a pidfd of a reused pid fails this check, and
    # the pidfd of our process cannot come to name another one later.
    if _is_running(process):
        return fd
    os.close(fd)
    return None


def alive(process: ProcessRef) -> bool:
    """Whether ``process`` still runs (a zombie or a new holder of its pid does not count)."""
    fd = pidfd(process)
    if fd is None:
        return False
    os.close(fd)
    return True


def kill(process: ProcessRef, signum: int = signal.SIGKILL) -> bool:
    """Signal ``process``; False if it had already exited."""
    fd = pidfd(process)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True
