"""Which rootfs mounts from containerd the shim hands to the VM as a block device
(root: a loop device, nothing mounted)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopdev import loop_device
from virtcontainers.shim.rootfs import BlockRoot, Mount, block_root


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (1 << 20))
    with loop_device(image) as loop:
        yield loop


def test_one_ext4_mount_of_a_block_device_is_a_block_root(device: Path, tmp_path: Path) -> None:
    """What the devmapper snapshotter sends (a loop device is the same to the shim)."""
    assert block_root([Mount("ext4", str(device), ("rw",))]) == BlockRoot(device, "ext4", False)
    assert block_root([Mount("ext2", str(device), ("ro",))]) == BlockRoot(device, "ext2", True)


def test_anything_else_is_mounted_on_the_host(device: Path, tmp_path: Path) -> None:
    overlay = Mount("overlay", "overlay", (f"lowerdir={tmp_path}",))
    for mounts in (
        [],
        [overlay],
        [Mount("xfs", str(device), ("nouuid",))],  # the guest has no xfs driver
        [Mount("ext4", str(tmp_path / "image.ext4"), ("loop",))],  # a file, not a device
        [Mount("ext4", str(device)), overlay],
        [Mount("bind", str(tmp_path), ("rbind",))],
    ):
        assert block_root(mounts) is None, mounts
