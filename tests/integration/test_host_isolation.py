"""An untrusted guest stays inside its VM: regression tests for defects 1-4 of
the reliability issue, each driven from inside a real guest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import read_all, shell
from tests.integration.test_sharedfs import KINDS, virtiofsd_pids
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.hypervisor.qemu.confine import QEMU_CAPABILITIES
from virtcontainers.storage import mounts
from virtcontainers.volumes import Mount

CAP_MKNOD = 27
CAP_SETFCAP = 31

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def in_guest(pod: str, script: str) -> tuple[int, str]:
    """Run ``script`` in the VM, outside containers; (exit code, stdout+stderr)."""
    read_end, write_end = os.pipe()
    handle = api.enter_pod(pod, shell(script), api.Stdio(stdout=write_end, stderr=write_end))
    os.close(write_end)
    output = read_all(read_end).decode(errors="replace")
    return api.wait_process(pod, None, handle.exec_id).exit_code, output


def in_container(pod: str, container: str, script: str) -> tuple[int, str]:
    read_end, write_end = os.pipe()
    stdio = api.Stdio(stdout=write_end, stderr=write_end)
    handle = api.enter_container(pod, container, shell(script), stdio)
    os.close(write_end)
    output = read_all(read_end).decode(errors="replace")
    return api.wait_process(pod, container, handle.exec_id).exit_code, output


def sleeper(cid: str, rootfs: Path, *volumes: Mount) -> ContainerConfig:
    return ContainerConfig(cid, rootfs, Cmd(("sleep", "1000")), volumes, writable_layer=True)


def test_guest_cannot_make_the_host_mount_over_its_directories(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """Defect 1: a symlink planted in the shared directory redirected a host mount."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("host data\n")
    api.run_pod(PodConfig(id="iso1", containers=(sleeper("c", busybox_rootfs),)))
    code, output = in_guest(
        "iso1",
        f"mkdir /run/vc/shared/evil && ln -s {victim} /run/vc/shared/evil/rootfs",
    )
    assert code != 0 and "Read-only file system" in output, output
    code, output = in_guest("iso1", "mv /run/vc/shared/c /run/vc/shared/x")
    assert code != 0, output
    code, output = in_guest(
        "iso1", "rm -rf /run/vc/shared/c/rootfs; ln -s / /run/vc/shared/c/mounts"
    )
    assert code != 0, output

    api.create_container("iso1", sleeper("evil", busybox_rootfs))
    api.start_container("iso1", "evil")
    assert not mounts.mounts_under(victim)
    assert [p.name for p in victim.iterdir()] == ["precious"]
    code, output = in_container("iso1", "evil", "cat /etc/hostname; ls /")
    assert code == 0 and "bin" in output, output
    api.stop_pod("iso1")
    api.delete_pod("iso1")
    assert not mounts.mounts_under(no_leaks)
    assert (victim / "precious").read_text() == "host data\n"


def test_each_container_writes_to_its_own_layer(no_leaks: Path, busybox_rootfs: Path) -> None:
    """Defect 2: a write in one pod's default rootfs was seen by every later pod."""
    api.run_pod(PodConfig(id="iso2a", containers=(sleeper("c", busybox_rootfs),)))
    code, output = in_container("iso2a", "c", "echo x > /etc/marker && cat /etc/marker")
    assert (code, output) == (0, "x\n")
    api.run_pod(PodConfig(id="iso2b", containers=(sleeper("c", busybox_rootfs),)))
    code, output = in_container("iso2b", "c", "test ! -e /etc/marker && echo clean")
    assert (code, output) == (0, "clean\n")
    assert not (busybox_rootfs / "etc" / "marker").exists()
    for pod in ("iso2a", "iso2b"):
        api.stop_pod(pod)
        api.delete_pod(pod)
    assert not (busybox_rootfs / "etc" / "marker").exists()


def process_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, value in (line.split(":", 1) for line in lines)}


@pytest.mark.parametrize("shared_fs", [kind.values[0] for kind in KINDS], ids=str)
def test_qemu_is_confined(
    no_leaks: Path,
    busybox_rootfs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_fs: str,
) -> None:
    """Defect 3: QEMU ran as full root, unsandboxed, making setuid files for the guest."""
    monkeypatch.setenv("VC_SHARED_FS", shared_fs)
    volume = tmp_path / "volume"
    volume.mkdir()
    config = PodConfig(
        id="iso3", containers=(sleeper("c", busybox_rootfs, Mount(str(volume), "/v")),)
    )
    status = api.run_pod(config)
    assert status.vm_pid is not None
    fields = process_status(status.vm_pid)
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"
    assert int(fields["Seccomp_filters"]) >= 2  # ours and QEMU's -sandbox
    assert int(fields["CapBnd"], 16) == sum(1 << c for c in QEMU_CAPABILITIES)
    assert int(fields["CapEff"], 16) == sum(1 << c for c in QEMU_CAPABILITIES)
    for pid in virtiofsd_pids(no_leaks):
        fields = process_status(pid)
        assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"
        assert not int(fields["CapEff"], 16) & (1 << CAP_MKNOD | 1 << CAP_SETFCAP)

    code, output = in_container(
        "iso3",
        "c",
        "cp /bin/busybox /v/shell && chmod 755 /v/shell && echo copied; "
        "chmod u+s /v/shell || echo no-setuid; chmod g+s /v/shell || echo no-setgid; "
        "mknod /v/mem c 1 1 || echo no-device; "
        "mkdir /v/dir && chown 1000:1000 /v/dir && echo chowned",
    )
    assert code == 0 and "copied" in output and "chowned" in output, output
    assert "no-setuid" in output and "no-setgid" in output and "no-device" in output, output
    mode = (volume / "shell").stat().st_mode
    assert not mode & 0o6000, oct(mode)
    assert not (volume / "mem").exists()
    assert (volume / "dir").stat().st_uid == 1000
    api.stop_pod("iso3")
    api.delete_pod("iso3")


def test_read_only_volumes_are_read_only_below_their_top(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """Defect 4: a ``:ro`` volume's submounts stayed writable to the guest."""
    volume = tmp_path / "ro-volume"
    (volume / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume / "sub")], check=True)
    try:
        readonly = Mount(str(volume), "/v", read_only=True)
        api.run_pod(PodConfig(id="iso4", containers=(sleeper("c", busybox_rootfs, readonly),)))
        code, output = in_container("iso4", "c", "touch /v/sub/x; a=$?; touch /v/x; echo $a $?")
        assert code == 0 and output.endswith("1 1\n"), output
        assert output.count("Read-only file system") == 2, output
        assert not list((volume / "sub").iterdir())
        api.stop_pod("iso4")
        api.delete_pod("iso4")
    finally:
        mounts.detach(volume / "sub")
