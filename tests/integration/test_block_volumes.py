"""Block volumes: raw and qcow2 images hot-plugged into a running pod and read in the guest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell, virtc
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import ConfigError
from virtcontainers.volumes import BlockVolume

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def ext4_image(path: Path, text: str) -> Path:
    """A 16 MiB raw ext4 image whose /hello.txt holds *text*."""
    content = path.with_suffix(".d")
    content.mkdir()
    (content / "hello.txt").write_text(text)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(content), str(path), "16M"],
        check=True,
        capture_output=True,
    )
    return path


def qcow2_of(raw: Path) -> Path:
    out = raw.with_suffix(".qcow2")
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def image_file(image: Path, name: str) -> str:
    """A file's text in an ext4 image, read on the host (debugfs: nothing mounted)."""
    done = subprocess.run(
        ["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, text=True, check=True
    )
    return done.stdout


def guest_disks(pod_id: str) -> list[str]:
    out_r, out_w = os.pipe()
    handle = api.enter_pod(pod_id, Cmd(("ls", "/sys/block")), api.Stdio(stdout=out_w))
    os.close(out_w)
    with os.fdopen(out_r, "rb") as output:
        names = output.read().decode().split()
    assert api.wait_process(pod_id, None, handle.exec_id).exit_code == 0
    return names


def test_raw_and_qcow2_images_are_plugged_read_and_unplugged(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    raw = ext4_image(tmp_path / "data.raw", "from the raw image\n")
    qcow2 = qcow2_of(ext4_image(tmp_path / "other.raw", "from the qcow2 image\n"))
    volumes = (
        BlockVolume(raw, "/data"),
        BlockVolume(qcow2, "/ro", format="qcow2", read_only=True),
    )
    worker = ContainerConfig(
        "c", busybox_rootfs, shell("exec sleep 1000"), writable_layer=True, block_volumes=volumes
    )
    api.run_pod(PodConfig(id="blk", resources=Resources(hotplug_slots=2)))
    assert guest_disks("blk") == ["vda"]
    api.create_container("blk", worker)
    api.start_container("blk", "c")
    assert sorted(guest_disks("blk")) == ["vda", "vdb", "vdc"]

    out, _, code = run_exec("blk", "c", Cmd(("cat", "/data/hello.txt", "/ro/hello.txt")))
    assert (out, code) == (b"from the raw image\nfrom the qcow2 image\n", 0)
    _, err, code = run_exec("blk", "c", shell("echo no > /ro/new"))
    assert code != 0 and b"Read-only file system" in err
    _, _, code = run_exec("blk", "c", shell("echo written in the guest > /data/new.txt; sync"))
    assert code == 0

    api.stop_container("blk", "c", timeout=1)
    api.delete_container("blk", "c")
    assert guest_disks("blk") == ["vda"]  # unplugged: QEMU let go of both images
    # What the guest wrote is in the raw image, read on the host.
    assert image_file(raw, "new.txt") == "written in the guest\n"

    # The slots are free again: the same images plug into a new container.
    again = ContainerConfig(
        "d", busybox_rootfs, Cmd(("cat", "/ro/hello.txt")), block_volumes=volumes
    )
    api.create_container("blk", again)
    api.start_container("blk", "d")
    assert api.wait_container("blk", "d").exit_code == 0
    api.delete_pod("blk", force=True)


def test_a_pod_without_slots_refuses_block_volumes_and_stays_healthy(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    raw = ext4_image(tmp_path / "data.raw", "x\n")
    api.run_pod(PodConfig(id="noslot"))
    disk = ContainerConfig(
        "c", busybox_rootfs, Cmd(("true",)), block_volumes=(BlockVolume(raw, "/data"),)
    )
    with pytest.raises(ConfigError, match=r"no hot-plug slots.*--hotplug-slots"):
        api.create_container("noslot", disk)
    assert api.pod_status("noslot").containers == ()
    plain = ContainerConfig("p", busybox_rootfs, Cmd(("echo", "fine")))
    api.create_container("noslot", plain)
    api.start_container("noslot", "p")
    assert api.wait_container("noslot", "p").exit_code == 0


def test_virtc_run_with_a_block_volume(run_root: Path, tmp_path: Path) -> None:
    raw = ext4_image(tmp_path / "data.raw", "read through virtc\n")
    result = virtc(
        run_root,
        "run",
        "--rm",
        "--block-volume",
        f"{raw}:/data:ro",
        "--",
        "cat",
        "/data/hello.txt",
    )
    assert (result.returncode, result.stdout) == (0, "read through virtc\n"), result.stderr
    assert not any((run_root / "pods").iterdir())
