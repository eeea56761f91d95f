"""Container root filesystems and volumes over virtio-9p and virtio-fs, in real VMs."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import (
    mounts_of_a_stopped_pod,
    pod_with,
    qemu_pids,
    read_all,
    shell,
    wait_stopped,
)
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.hypervisor.qemu.virtiofsd import find_virtiofsd
from virtcontainers.storage import mounts
from virtcontainers.volumes import Mount

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

KINDS = [
    pytest.param("9p", "9p", id="9p"),
    pytest.param(
        "virtiofs",
        "virtiofs",
        id="virtiofs",
        marks=pytest.mark.skipif(find_virtiofsd() is None, reason="virtiofsd is not installed"),
    ),
]


def virtiofsd_pids(run_root: Path) -> set[int]:
    """virtiofsd processes serving pods under ``run_root``."""
    found = subprocess.run(
        ["pgrep", "-f", f"^\\S*virtiofsd .*{run_root}/"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {int(pid) for pid in found.stdout.split()}


def guest_output(pod: str, cmd: Cmd) -> bytes:
    out_r, out_w = os.pipe()
    handle = api.enter_pod(pod, cmd, api.Stdio(stdout=out_w))
    os.close(out_w)
    out = read_all(out_r)
    assert api.wait_process(pod, None, handle.exec_id).exit_code == 0
    return out


@pytest.mark.parametrize(("choice", "fstype"), KINDS)
def test_bind_mounted_host_files_are_visible_and_writable(
    run_root: Path,
    busybox_rootfs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    choice: str,
    fstype: str,
) -> None:
    monkeypatch.setenv("VC_SHARED_FS", choice)
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "hello").write_text("from the host\n")
    api.run_pod(PodConfig(id="fs"))
    try:
        mounted = guest_output("fs", Cmd(("cat", "/proc/mounts"))).decode()
        line = next(m for m in mounted.splitlines() if " /run/vc/shared " in m)
        assert line.split()[2] == fstype
        if choice == "virtiofs":
            assert virtiofsd_pids(run_root)

        # Containers created after boot: their bind mounts appear under the live share.
        script = "cat /data/hello; echo from the guest > /data/written; ls /bin/busybox"
        config = ContainerConfig(
            "c",
            busybox_rootfs,
            shell(script),
            mounts=(Mount(str(volume), "/data"),),
            writable_layer=True,
        )
        out_r, out_w = os.pipe()
        api.create_container("fs", config, api.Stdio(stdout=out_w, stderr=out_w))
        os.close(out_w)
        api.start_container("fs", "c")
        output = read_all(out_r)
        assert api.wait_container("fs", "c").exit_code == 0, output
        assert output == b"from the host\n/bin/busybox\n"
        assert (volume / "written").read_text() == "from the guest\n"

        # A change on the host is seen by a later container.
        (volume / "hello").write_text("changed\n")
        later = ContainerConfig(
            "d",
            busybox_rootfs,
            shell("cat /data/hello"),
            mounts=(Mount(str(volume), "/data"),),
            writable_layer=True,
        )
        out_r, out_w = os.pipe()
        api.create_container("fs", later, api.Stdio(stdout=out_w))
        os.close(out_w)
        api.start_container("fs", "d")
        assert read_all(out_r) == b"changed\n"
    finally:
        api.stop_pod("fs")
    assert not qemu_pids(run_root)
    assert not virtiofsd_pids(run_root)
    mounts_of_a_stopped_pod(run_root, run_root / "pods" / "fs")
    api.delete_pod("fs")
    assert not mounts.mounts_under(run_root)


@pytest.mark.skipif(find_virtiofsd() is None, reason="virtiofsd is not installed")
def test_virtiofsd_goes_when_qemu_dies(
    run_root: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VC_SHARED_FS", "virtiofs")
    status = api.run_pod(pod_with("crash", busybox_rootfs, c="exec sleep 1000"))
    assert status.vm_pid is not None and virtiofsd_pids(run_root)
    os.kill(status.vm_pid, signal.SIGKILL)
    status = wait_stopped("crash")
    assert status.error is not None and "VM exited unexpectedly" in status.error
    assert not virtiofsd_pids(run_root)
    mounts_of_a_stopped_pod(run_root, run_root / "pods" / "crash")
    api.delete_pod("crash")
    assert not mounts.mounts_under(run_root)


@pytest.mark.skipif(find_virtiofsd() is None, reason="virtiofsd is not installed")
def test_qemu_goes_when_virtiofsd_dies(
    run_root: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VC_SHARED_FS", "virtiofs")
    api.run_pod(pod_with("lost", busybox_rootfs, c="exec sleep 1000"))
    (helper,) = virtiofsd_pids(run_root)
    os.kill(helper, signal.SIGKILL)
    status = wait_stopped("lost")
    assert status.error is not None and "VM exited unexpectedly" in status.error
    assert not qemu_pids(run_root)
    assert not virtiofsd_pids(run_root)
    mounts_of_a_stopped_pod(run_root, run_root / "pods" / "lost")
    api.delete_pod("lost")
    assert not mounts.mounts_under(run_root)
