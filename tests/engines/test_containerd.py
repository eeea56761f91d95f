"""containerd's ctr (Debian's) running containers through vc-runtime."""

from __future__ import annotations

import pytest

from tests.engines.conftest import CTR_IMAGE, VC_RUNTIME
from tests.engines.containerd import Containerd
from virtcontainers import api

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def test_ctr_run_prints_and_exits_with_status(containerd: Containerd) -> None:
    result = containerd.ctr(
        "run",
        "--rm",
        "--runc-binary",
        VC_RUNTIME,
        CTR_IMAGE,
        "t1",
        "sh",
        "-c",
        "echo hello from containerd; echo to stderr >&2; exit 9",
    )
    assert result.returncode == 9, result.stderr
    assert result.stdout == "hello from containerd\n"
    assert "to stderr" in result.stderr
    assert api.list_pods() == []


def test_ctr_exec_and_kill(containerd: Containerd) -> None:
    started = containerd.ctr(
        "run", "-d", "--runc-binary", VC_RUNTIME, CTR_IMAGE, "t2", "sleep", "1000"
    )
    assert started.returncode == 0, started.stderr
    executed = containerd.ctr(
        "tasks", "exec", "--exec-id", "e1", "t2", "sh", "-c", "echo exec out; exit 3"
    )
    assert (executed.returncode, executed.stdout) == (3, "exec out\n"), executed.stderr
    assert containerd.ctr("tasks", "kill", "-s", "SIGKILL", "t2").returncode == 0
    listed = ""
    for _ in range(100):
        listed = containerd.ctr("tasks", "ls").stdout
        if "STOPPED" in listed:
            break
    assert "STOPPED" in listed
    assert containerd.ctr("tasks", "delete", "t2").returncode == 0
    assert containerd.ctr("containers", "delete", "t2").returncode == 0
    assert api.list_pods() == []
