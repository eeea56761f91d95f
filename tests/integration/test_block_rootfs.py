"""Block-device rootfs: a loop device over an ext4 image as a container's root, in the VM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell
from tests.loopdev import image_file, loop_device, make_ext4_image
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import ConfigError
from virtcontainers.store import Store

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def host_mount(device: Path, target: Path) -> subprocess.CompletedProcess[str]:
    target.mkdir(exist_ok=True)
    return subprocess.run(
        ["mount", "-t", "ext4", str(device), str(target)],
        check=False,
        capture_output=True,
        text=True,
    )


def test_a_loop_device_is_the_root_and_the_host_cannot_mount_it_meanwhile(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    image = make_ext4_image(tmp_path / "root.img", busybox_rootfs, 32)
    with loop_device(image) as device:
        config = ContainerConfig("c", device, shell("exec sleep 1000"), rootfs_fstype="ext4")
        api.run_pod(PodConfig(id="broot", resources=Resources(hotplug_slots=1)))
        api.create_container("broot", config)
        api.start_container("broot", "c")

        out, _, code = run_exec("broot", "c", shell("ls /bin/busybox && mount | grep ' / '"))
        assert code == 0 and out.startswith(b"/bin/busybox\n") and b"ext4" in out, out
        _, _, code = run_exec("broot", "c", shell("echo written in the VM > /written; sync"))
        assert code == 0
        # Nothing of the root is shared: the container's skeleton has no rootfs.
        shared = Store().paths("broot").shared / "c"
        assert not (shared / "rootfs").exists()
        # The pod holds the device: the host's mount is refused while the guest has it.
        refused = host_mount(device, tmp_path / "host")
        assert refused.returncode != 0 and "busy" in refused.stderr.lower(), refused.stderr

        api.stop_container("broot", "c", timeout=1)
        api.delete_container("broot", "c")
        assert image_file(image, "written") == "written in the VM\n"
        # Unplugged and released: the host may mount it again, and it is consistent.
        mounted = host_mount(device, tmp_path / "host")
        assert mounted.returncode == 0, mounted.stderr
        assert (tmp_path / "host" / "written").read_text() == "written in the VM\n"

        # A device the host has mounted is refused, and the pod stays healthy.
        with pytest.raises(ConfigError, match="in use on the host"):
            api.create_container("broot", config)
        subprocess.run(["umount", str(tmp_path / "host")], check=True)
        read_only = ContainerConfig(
            "r", device, Cmd(("cat", "/written")), rootfs_fstype="ext4", read_only_rootfs=True
        )
        api.create_container("broot", read_only)
        api.start_container("broot", "r")
        assert api.wait_container("broot", "r").exit_code == 0
        api.delete_pod("broot", force=True)
