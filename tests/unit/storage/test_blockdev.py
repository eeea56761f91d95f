"""Finding the block device under a directory in mountinfo, and the kernel's
exclusive claim (root: a loop device, nothing mounted)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopdev import loop_device
from virtcontainers.errors import ConfigError
from virtcontainers.storage.blockdev import BlockMount, block_mount_at, claim, is_block_device


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (1 << 20))
    with loop_device(image) as loop:
        yield loop


def mountinfo(device: Path, point: str, fstype: str = "ext4", options: str = "rw,relatime") -> str:
    rdev = device.stat().st_rdev
    dev = f"{os.major(rdev)}:{os.minor(rdev)}"
    return (
        "22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/a\n"
        f"40 22 {dev} / {point} {options} shared:7 - {fstype} {device} rw,errors=remount-ro\n"
    )


def test_the_block_device_mounted_at_a_directory_is_found(device: Path, tmp_path: Path) -> None:
    found = block_mount_at(tmp_path, mountinfo(device, str(tmp_path), options="ro,nosuid"))
    assert found == BlockMount(device, tmp_path, "ext4", 0x1 | 0x2, "errors=remount-ro")
    assert BlockMount.from_dict(found.to_dict()) == found


def test_an_escaped_mount_point_is_decoded(device: Path, tmp_path: Path) -> None:
    spaced = tmp_path / "a dir"
    spaced.mkdir()
    text = mountinfo(device, str(tmp_path).replace(" ", "\\040") + "/a\\040dir")
    found = block_mount_at(spaced, text)
    assert found is not None and found.target == spaced


def test_no_mount_or_a_filesystem_on_no_block_device_is_none(device: Path, tmp_path: Path) -> None:
    assert block_mount_at(tmp_path / "elsewhere", mountinfo(device, str(tmp_path))) is None
    overlay = f"22 1 0:21 / {tmp_path} rw - overlay overlay rw,lowerdir=/a\n"
    assert block_mount_at(tmp_path, overlay) is None
    # The mount on top counts: an overlay stacked over the device's mount hides it.
    assert block_mount_at(tmp_path, mountinfo(device, str(tmp_path)) + overlay) is None
    assert block_mount_at(tmp_path, "garbage\n\n1 2 3 - x\n") is None
    # A bind of a subdirectory of the filesystem is not the whole device.
    subdir = mountinfo(device, str(tmp_path)).replace(f" / {tmp_path} ", f" /sub {tmp_path} ")
    assert block_mount_at(tmp_path, subdir) is None


def test_a_claimed_device_cannot_be_claimed_again(device: Path) -> None:
    assert is_block_device(device) and not is_block_device(device.parent)
    fd = claim(device, "container 'c'")
    try:
        with pytest.raises(ConfigError, match=r"in use on the host.*container 'c'"):
            claim(device, "container 'c'")
    finally:
        os.close(fd)
    os.close(claim(device, "container 'c'"))
    with pytest.raises(ConfigError, match="cannot open"):
        claim(device.parent / "no-such-device", "container 'c'")
