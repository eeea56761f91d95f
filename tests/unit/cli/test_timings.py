"""The step list of `virtc run --timings`: the caller's steps and the pod's, in time order."""

from __future__ import annotations

import os
import time

from virtcontainers.cli.virtc.timings import Step, Timings, process_started
from virtcontainers.events import Event


def test_this_process_started_before_now_and_after_its_parent() -> None:
    started = process_started()
    assert process_started(os.getppid()) <= started <= time.time()


def test_steps_of_the_caller_and_the_pod_are_lined_up_by_time() -> None:
    clock = Timings(steps=[Step(100.0, "virtc", "process started")])
    clock.steps.append(Step(101.5, "virtc", "container created"))
    clock.add_pod_events(
        [
            Event(1, 100.5, "boot", None, {"step": "VM launched"}),
            Event(2, 100.9, "start", "main", {}),  # not a boot step
            Event(3, 101.0, "boot", None, {"step": "agent answered"}),
        ]
    )
    lines = clock.render()
    assert lines[0].split() == ["total", "step", "by", "what"]
    assert [line.split(maxsplit=3) for line in lines[1:]] == [
        ["0.000s", "+0.000s", "virtc", "process started"],
        ["0.500s", "+0.500s", "pod", "VM launched"],
        ["1.000s", "+0.500s", "pod", "agent answered"],
        ["1.500s", "+0.500s", "virtc", "container created"],
    ]
    assert Timings().render() == []


def test_a_mark_is_stamped_now() -> None:
    clock = Timings.since_process_start()
    clock.mark("here")
    assert [s.name for s in clock.steps] == ["process started", "here"]
    assert clock.steps[0].at <= clock.steps[1].at <= time.time()
