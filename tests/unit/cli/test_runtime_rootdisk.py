"""vc-runtime with a bundle rootfs mounted from a block device: detection and the
container and pod it asks for (root: a loop device, nothing mounted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.loopdev import loop_device
from tests.unit.storage.test_blockdev import mountinfo
from virtcontainers.cli.runtime import rootdisk
from virtcontainers.cli.runtime.state import Record
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.storage import blockdev
from virtcontainers.storage.blockdev import BlockMount


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (1 << 20))
    with loop_device(image) as loop:
        yield loop


def test_an_ext4_mount_is_taken_and_other_filesystems_are_left_to_9p(
    device: Path, tmp_path: Path
) -> None:
    found = rootdisk.block_rootfs_at(tmp_path, mountinfo(device, str(tmp_path)))
    assert found is not None and (found.device, found.fstype) == (device, "ext4")
    xfs = mountinfo(device, str(tmp_path), fstype="xfs")
    assert rootdisk.block_rootfs_at(tmp_path, xfs) is None


def test_the_container_runs_from_the_device_in_a_pod_with_a_slot(
    device: Path, tmp_path: Path
) -> None:
    mount = BlockMount(device, tmp_path, "ext4", 0, "")
    config = ContainerConfig("c", tmp_path, Cmd(("true",)), read_only_rootfs=True)
    on_disk = blockdev.on_the_device(config, mount.device, mount.fstype)
    assert (on_disk.rootfs, on_disk.rootfs_fstype, on_disk.read_only_rootfs) == (
        device,
        "ext4",
        True,
    )
    on_disk.check_host()
    assert blockdev.with_a_disk_slot(PodConfig(id="p")).resources.hotplug_slots == 1
    roomy = PodConfig(id="p", resources=Resources(hotplug_slots=3))
    assert blockdev.with_a_disk_slot(roomy).resources.hotplug_slots == 3


def test_the_moved_mount_is_kept_in_the_record(device: Path, tmp_path: Path) -> None:
    mount = BlockMount(device, tmp_path, "ext4", 0x400, "errors=remount-ro")
    record = Record("c", "c", "/b", str(tmp_path), "now", True, moved_mount=mount.to_dict())
    record.save(tmp_path / "root")
    again = Record.load(tmp_path / "root", "c")
    assert again == record and again.moved_mount is not None
    assert BlockMount.from_dict(again.moved_mount) == mount
    assert json.loads(json.dumps(asdict(again))) == asdict(record)
