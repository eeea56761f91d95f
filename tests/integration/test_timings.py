"""virtc run --timings with a real VM: every step from the CLI call to the
container's first output is rendered, and the output itself is intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from virtcontainers import api

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

VIRTC = str(Path(sys.executable).with_name("virtc"))
STEPS = (
    "virtc process started",
    "CLI imported, arguments parsed",
    "config made, image found",
    "daemon: pod starting",
    "daemon: QEMU launched",
    "daemon: guest agent answered (VM booted)",
    "run_pod returned: pod running",
    "container created",
    "container started",
    "first output",
    "container exited",
)


def test_virtc_run_timings_shows_each_step_in_order(no_leaks: Path) -> None:
    result = subprocess.run(
        [VIRTC, "run", "--rm", "--boot", "cold", "--timings", "--", "echo", "hi"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    rendered = [next(s for s in STEPS if line.startswith(s)) for line in lines[-len(STEPS) :]]
    # The daemon's steps fall between the CLI's own; the CLI's keep their order.
    cli_steps = [s for s in rendered if not s.startswith("daemon:")]
    assert cli_steps == [s for s in STEPS if not s.startswith("daemon:")]
    assert sorted(rendered) == sorted(STEPS)
    assert api.list_pods() == []
