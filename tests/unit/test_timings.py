"""virtc run --timings: the steps are collected, ordered and rendered (no
duration is asserted)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from virtcontainers.timings import (
    PROCESS_START,
    Timings,
    copied_output,
    daemon_steps,
    mark,
    process_start,
    timed_stdout,
)

LOG = """\
2026-11-29 00:18:26,932 10002 virtcontainers.pod.p INFO starting pod
2026-11-29 00:18:26,934 10002 virtcontainers.pod.p INFO accelerator tcg: using TCG
2026-11-29 00:18:26,957 10002 virtcontainers.hypervisor.qemu.p INFO QEMU started, pid 10003
2026-11-29 00:18:35,469 10002 virtcontainers.pod.p INFO agent up
2026-11-29 00:18:40,000 10002 virtcontainers.pod.p INFO agent up
not a log line
"""


def test_the_daemon_steps_are_read_from_its_log_once_each() -> None:
    steps = daemon_steps(LOG)
    assert [s.name for s in steps] == [
        "daemon: pod starting",
        "daemon: QEMU launched",
        "daemon: guest agent answered (VM booted)",
    ]
    assert steps[0].at < steps[1].at < steps[2].at


def test_every_step_is_rendered_in_the_order_it_happened(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    log.write_text(LOG)
    timings = Timings(started=daemon_steps(LOG)[0].at - 1)
    timings.add_daemon_log(log)
    timings.add_daemon_log(tmp_path / "missing.log")  # a log that is gone adds nothing
    timings.mark("container started")
    mark(timings, "first output")
    mark(None, "ignored")
    lines = timings.render().splitlines()
    names = [
        PROCESS_START,
        "daemon: pod starting",
        "daemon: QEMU launched",
        "daemon: guest agent answered",
        "container started",
        "first output",
    ]
    assert len(lines) == len(names) + 1  # a header, then one line a step
    for line, name in zip(lines[1:], names, strict=True):
        assert line.startswith(name)


def test_the_process_start_is_in_the_past() -> None:
    assert process_start() <= time.time()
    assert process_start(1) <= process_start()


def test_output_is_copied_and_its_first_byte_marked(tmp_path: Path) -> None:
    target = tmp_path / "out"
    firsts: list[str] = []
    with (
        target.open("wb") as out,
        copied_output(out.fileno(), lambda: firsts.append("first")) as write_end,
    ):
        os.write(write_end, b"hello ")
        os.write(write_end, b"world\n")
    assert target.read_bytes() == b"hello world\n"
    assert firsts == ["first"]


def test_stdout_is_left_alone_without_timings_or_on_a_terminal(tmp_path: Path) -> None:
    with timed_stdout(None, 1) as fd:
        assert fd == 1
    with timed_stdout(Timings(started=0.0), None) as fd:
        assert fd is None
    primary, secondary = os.openpty()
    try:
        with timed_stdout(Timings(started=0.0), secondary) as fd:
            assert fd == secondary
    finally:
        os.close(primary)
        os.close(secondary)
    timings = Timings(started=0.0)
    with (tmp_path / "out").open("wb") as out, timed_stdout(timings, out.fileno()) as fd:
        assert fd is not None and fd != out.fileno()
        os.write(fd, b"x")
    assert [s.name for s in timings.steps] == [PROCESS_START, "first output"]
