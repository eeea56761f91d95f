"""Container limits held by the guest's cgroups: memory (OOM), pids (a fork bomb)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.limits import Limits

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

FORK_BOMB = "bomb() { bomb | bomb & }; bomb; echo bombed; exec sleep 1000"


def test_virtc_run_memory_limit_ends_an_unbounded_allocation_with_137(run_root: Path) -> None:
    virtc = Path(sys.executable).with_name("virtc")
    # busybox tail keeps a line from /dev/zero in memory, and the line never ends.
    result = subprocess.run(
        [str(virtc), "run", "--rm", "--memory-limit", "64M", "--", "tail", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "VC_RUN_DIR": str(run_root)},
    )
    assert result.returncode == 137, result.stderr
    assert "container main: killed for running out of memory" in result.stderr
    assert not any((run_root / "pods").iterdir())


def test_a_pids_limit_stops_a_fork_bomb_and_the_pod_stays_healthy(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    bomb = ContainerConfig(
        "bomb", busybox_rootfs, shell(FORK_BOMB), writable_layer=True, limits=Limits(pids=32)
    )
    api.run_pod(PodConfig(id="pids", containers=(bomb,)))
    pid = api.container_status("pids", "bomb").pid
    assert pid is not None
    # Read from the VM, outside the container: an exec would be one process too many.
    events = f"cat /sys/fs/cgroup$(cut -d: -f3 /proc/{pid}/cgroup)/pids"
    script = f"sleep 5; {events}.max; {events}.current; {events}.events"
    out = run_pod_command("pids", script)
    limit, current, refused = out.split("\n")[:3]
    assert limit == "32"
    assert int(current) <= 32
    assert refused.startswith("max ") and int(refused.split()[1]) > 0

    api.kill_container("pids", "bomb", signal.SIGKILL, all_processes=True)
    assert api.wait_container("pids", "bomb").exit_code == 137
    # The pod is fine: a new container runs, and an exec in it answers.
    after = ContainerConfig("after", busybox_rootfs, shell("exec sleep 1000"), writable_layer=True)
    api.create_container("pids", after)
    api.start_container("pids", "after")
    out_bytes, _, code = run_exec("pids", "after", Cmd(("echo", "alive")))
    assert (out_bytes, code) == (b"alive\n", 0)


def run_pod_command(pod_id: str, script: str) -> str:
    out_r, out_w = os.pipe()
    handle = api.enter_pod(pod_id, Cmd(("sh", "-c", script)), api.Stdio(stdout=out_w))
    os.close(out_w)
    with os.fdopen(out_r, "rb") as output:
        text = output.read().decode()
    assert api.wait_process(pod_id, None, handle.exec_id).exit_code == 0, text
    return text
