"""virtc gc: what pods left behind goes; what a live pod has stays."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.cli.virtc.main import cli as virtc_cli
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.host import proc as hostproc
from virtcontainers.states import PodState
from virtcontainers.storage import mounts


def test_gc_removes_leftovers_and_spares_a_live_pod(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    pods = run_root / "pods"
    live = api.run_pod(mock_pod("live", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    assert live.daemon_pid is not None
    live_daemon = hostproc.of(live.daemon_pid)
    # A pod whose daemon died (killed with SIGKILL: it could not clean up).
    dead = api.run_pod(mock_pod("dead", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    assert dead.daemon_pid is not None
    os.kill(dead.daemon_pid, 9)
    # A stopped pod with a stale mount, socket and the layer of a deleted container.
    api.create_pod(mock_pod("stale", image))
    (pods / "stale" / "guestfs" / "skel").mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "tmpfs", str(pods / "stale" / "guestfs" / "skel")], check=True
    )
    (pods / "stale" / "daemon.sock").touch()
    (pods / "stale" / "layers" / "gone" / "upper").mkdir(parents=True)
    # A create that was killed before it wrote a record, a while ago.
    half = pods / "half"
    half.mkdir()
    os.utime(half, (time.time() - 3600, time.time() - 3600))
    # A stray process left for a pod that no longer exists.
    stray = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", f"unix:{pods}/deleted/vm/qmp.sock"]
    )
    stray_sleep = subprocess.Popen(["sleep", "600"])  # names nothing of ours
    try:
        result = CliRunner().invoke(virtc_cli, ["gc"])
        assert result.exit_code == 0, result.output
        removed = result.output
        assert stray.wait(timeout=10) == -9
        assert stray_sleep.poll() is None
    finally:
        for proc in (stray, stray_sleep):
            proc.kill()
            proc.wait()
    for what in ("pod dead", "pod stale", "deleted container gone", "pod half", "pod deleted"):
        assert what.split()[-1] in removed, (what, removed)
    assert api.pod_status("dead").state is PodState.STOPPED
    assert not mounts.mounts_under(pods / "stale")
    assert not (pods / "stale" / "daemon.sock").exists()
    assert not (pods / "stale" / "layers" / "gone").exists()
    assert not half.exists()
    # The live pod is untouched.
    assert live_daemon is not None and hostproc.alive(live_daemon)
    assert api.pod_status("live").state is PodState.RUNNING
    assert mounts.mounts_under(pods / "live")
    second = api.collect_garbage()
    assert second.removed == [], second
    api.stop_pod("live")


def test_gc_unmounts_the_layers_of_a_pod_whose_delete_was_cut_short(run_root: Path) -> None:
    half = run_root / "pods" / "cut"
    (half / "layers" / "c").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(half / "layers")], check=True)
    (half / "layers" / "c" / "upper").mkdir(parents=True)
    os.utime(half, (time.time() - 3600, time.time() - 3600))
    report = api.collect_garbage()
    assert [line for line in report.removed if "cut" in line], report
    assert not mounts.mounts_under(half)
    assert not half.exists()
