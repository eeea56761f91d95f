"""containerd's ctr (Debian's containerd 1.6) running containers through containerd-shim-vc-v2.

No runc shim and no vc-runtime in this path: containerd starts our shim for
the runtime ``io.containerd.vc.v2``, and talks to it over ttrpc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines.conftest import CTR_IMAGE, need
from tests.engines.containerd import (
    VC_SHIM,
    VC_SHIM_RUNTIME,
    Containerd,
    running_containerd,
    shim_pids,
    with_vc_shim,
)
from tests.engines.images import oci_layout_tar
from tests.integration.conftest import qemu_pids
from virtcontainers import api
from virtcontainers.shim import main
from virtcontainers.states import PodState
from virtcontainers.storage import mounts

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


@pytest.fixture
def shim_containerd(run_root: Path, tmp_path: Path, busybox_rootfs: Path) -> Iterator[Containerd]:
    need("containerd")
    need("ctr")
    env = with_vc_shim({**os.environ, "VC_RUN_DIR": str(run_root)})
    with running_containerd(env) as engine:
        assert any((Path(d) / VC_SHIM).exists() for d in env["PATH"].split(":")), (
            f"{VC_SHIM} is not on containerd's PATH (make deps installs it)"
        )
        image = oci_layout_tar(busybox_rootfs, tmp_path / "image.tar", CTR_IMAGE)
        imported = engine.ctr("images", "import", "--digests=false", str(image))
        assert imported.returncode == 0, imported.stderr
        yield engine
        _assert_nothing_left(engine, run_root)


def _assert_nothing_left(engine: Containerd, run_root: Path) -> None:
    """No pod, QEMU, shim or mount of the test's; waits a little for the shims to end."""
    deadline = time.monotonic() + 30
    while shim_pids(engine.address) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shim_pids(engine.address) == [], engine.log_tail()
    assert api.list_pods() == []
    assert qemu_pids(run_root) == set()
    assert mounts.mounts_under(engine.base) == []


def test_ctr_run_prints_and_exits_with_status(shim_containerd: Containerd) -> None:
    result = shim_containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        VC_SHIM_RUNTIME,
        CTR_IMAGE,
        "s1",
        "sh",
        "-c",
        "echo hello from the vc shim; echo to stderr >&2; exit 9",
    )
    assert result.returncode == 9, result.stderr + shim_containerd.log_tail()
    assert result.stdout == "hello from the vc shim\n"
    assert "to stderr" in result.stderr


def test_ctr_exec_metrics_and_kill(shim_containerd: Containerd) -> None:
    ctr = shim_containerd.ctr
    started = ctr("run", "-d", "--runtime", VC_SHIM_RUNTIME, CTR_IMAGE, "s2", "sleep", "1000")
    assert started.returncode == 0, started.stderr + shim_containerd.log_tail()
    [pod] = api.list_pods()
    assert [c.id for c in pod.containers] == ["s2"]

    executed = ctr("tasks", "exec", "--exec-id", "e1", "s2", "sh", "-c", "echo exec out; exit 3")
    assert (executed.returncode, executed.stdout) == (3, "exec out\n"), executed.stderr

    metrics = ctr("tasks", "metrics", "s2")
    assert metrics.returncode == 0, metrics.stderr
    memory = next(line for line in metrics.stdout.splitlines() if "memory.usage_in_bytes" in line)
    assert int(memory.split()[-1]) > 0, metrics.stdout

    assert ctr("tasks", "kill", "-s", "SIGKILL", "s2").returncode == 0
    listed = ""
    for _ in range(100):
        listed = ctr("tasks", "ls").stdout
        if "STOPPED" in listed:
            break
        time.sleep(0.2)
    assert "STOPPED" in listed
    assert ctr("tasks", "delete", "s2").returncode == 0
    assert ctr("containers", "delete", "s2").returncode == 0


def test_the_shim_is_its_pods_daemon(shim_containerd: Containerd, run_root: Path) -> None:
    """Per pod, one host process besides QEMU: the shim, QEMU's parent, which
    `virtc pod list` names as the pod's daemon."""
    ctr = shim_containerd.ctr
    started = ctr("run", "-d", "--runtime", VC_SHIM_RUNTIME, CTR_IMAGE, "s4", "sleep", "1000")
    assert started.returncode == 0, started.stderr + shim_containerd.log_tail()
    [shim] = shim_pids(shim_containerd.address)
    virtc = Path(sys.executable).parent / "virtc"
    listed = subprocess.run([virtc, "pod", "list", "--json"], capture_output=True, check=True)
    [pod] = json.loads(listed.stdout)
    assert (pod["id"], pod["state"], pod["daemon_pid"]) == ("s4", PodState.RUNNING.value, shim)
    assert qemu_pids(run_root) == {pod["vm_pid"]}
    assert _parent(pod["vm_pid"]) == shim
    assert _pod_daemon_processes(run_root) == []

    assert ctr("tasks", "kill", "-s", "SIGKILL", "s4").returncode == 0
    for _ in range(100):
        if "STOPPED" in ctr("tasks", "ls").stdout:
            break
        time.sleep(0.2)
    assert ctr("tasks", "delete", "s4").returncode == 0
    assert ctr("containers", "delete", "s4").returncode == 0


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pod_daemon_processes(run_root: Path) -> list[int]:
    """Pod daemons of processes of their own (``python -m virtcontainers.daemon``) here."""
    found = subprocess.run(
        ["pgrep", "-f", f"virtcontainers.daemon --root {run_root}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


def test_a_killed_shim_is_cleaned_up_by_containerds_delete(shim_containerd: Containerd) -> None:
    ctr = shim_containerd.ctr
    started = ctr("run", "-d", "--runtime", VC_SHIM_RUNTIME, CTR_IMAGE, "s3", "sleep", "1000")
    assert started.returncode == 0, started.stderr + shim_containerd.log_tail()
    [shim] = shim_pids(shim_containerd.address)
    socket = main.socket_path(shim_containerd.address, shim_containerd.namespace, "s3")
    assert socket.is_socket()
    os.kill(shim, signal.SIGKILL)
    # containerd sees the shim's connection end and runs `containerd-shim-vc-v2 delete`.
    deadline = time.monotonic() + 120
    while api.list_pods() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert api.list_pods() == [], shim_containerd.log_tail()
    assert not socket.exists()
    ctr("tasks", "delete", "s3")  # gone already, or stopped: either way not there after it
    assert ctr("containers", "delete", "s3").returncode == 0
