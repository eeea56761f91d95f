"""Container limits held by the guest's cgroups: memory (OOM), pids (a fork bomb)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell, virtc
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.errors import ConfigError
from virtcontainers.limits import Limits

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

FORK_BOMB = "bomb() { bomb | bomb & }; bomb; echo bombed; exec sleep 1000"


def test_virtc_run_memory_limit_ends_an_unbounded_allocation_with_137(run_root: Path) -> None:
    # busybox tail keeps a line from /dev/zero in memory, and the line never ends.
    result = virtc(run_root, "run", "--rm", "--memory-limit", "64M", "--", "tail", "/dev/zero")
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


def test_update_and_stats_of_a_running_container(no_leaks: Path, busybox_rootfs: Path) -> None:
    # It holds 8 MiB in a shell variable, then burns CPU.
    hold = "x=$(head -c 8388608 /dev/zero | tr '\\0' a); while :; do :; done"
    worker = ContainerConfig(
        "w", busybox_rootfs, shell(hold), writable_layer=True, limits=Limits(memory_bytes=64 << 20)
    )
    api.run_pod(PodConfig(id="upd", containers=(worker,)))
    cgroup = f"/sys/fs/cgroup$(cut -d: -f3 /proc/{api.container_status('upd', 'w').pid}/cgroup)"
    assert run_pod_command("upd", f"cat {cgroup}/memory.max").strip() == str(64 << 20)

    api.update_container("upd", "w", Limits(memory_bytes=128 << 20, pids=50))
    limits = run_pod_command("upd", f"cat {cgroup}/memory.max {cgroup}/pids.max").split()
    assert limits == [str(128 << 20), "50"]
    assert api.container_status("upd", "w").state.value == "running"
    with pytest.raises(ConfigError, match="more than its pod's VM has"):
        api.update_container("upd", "w", Limits(memory_bytes=4 << 30))

    first = api.container_stats("upd", "w")
    later = first
    while later.cpu_usage_ns <= first.cpu_usage_ns or later.memory_bytes < 8 << 20:
        time.sleep(0.5)  # the load lands in a moment
        later = api.container_stats("upd", "w")
    assert later.memory_limit_bytes == 128 << 20
    assert later.pids_limit == 50 and later.pids >= 1
    assert later.cpu_user_ns + later.cpu_system_ns > 0


def test_an_oom_kill_reaches_the_caller_as_an_event(no_leaks: Path, busybox_rootfs: Path) -> None:
    hog = ContainerConfig(
        "hog", busybox_rootfs, shell("sleep 2; exec tail /dev/zero"), writable_layer=True,
        limits=Limits(memory_bytes=32 << 20),
    )  # fmt: skip
    api.run_pod(PodConfig(id="oom", containers=(hog,)))
    seen = []
    for event in api.follow_events("oom"):
        seen.append((event.kind, event.container_id, event.fields.get("exit_code")))
        if event.kind == "exit":
            break
    assert ("oom", "hog", None) in seen
    assert seen[-1] == ("exit", "hog", 137)
    assert api.container_status("oom", "hog").oom_killed
