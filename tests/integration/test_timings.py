"""`virtc run --timings`: where a real pod start's time went, step by step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import virtc

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def test_virtc_run_timings_lists_every_step_in_order(run_root: Path) -> None:
    result = virtc(run_root, "run", "--rm", "--boot", "cold", "--timings", "--", "echo", "hi")
    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr
    steps = [line.split(maxsplit=3)[3] for line in result.stderr.splitlines()[1:]]
    in_order = [
        "process started",
        "command line parsed",
        "the daemon starts the VM",
        "VM launched",
        "agent answered",
        "pod running",
        "container created",
        "first output",
        "container exited",
    ]
    # The output may reach virtc before start_container's answer does.
    assert [step for step in steps if step != "container started"] == in_order
    assert steps.index("container created") < steps.index("container started")
    assert not any((run_root / "pods").iterdir())
