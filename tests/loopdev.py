"""Loop devices over ext4 images, for block-device rootfs tests and benchmarks.

Every device is detached and every host mount of it undone when the context
ends, even when the test fails.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


def make_ext4_image(image: Path, content: Path, size_mib: int) -> Path:
    """A raw ext4 image of ``size_mib`` MiB holding a copy of directory ``content``."""
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(content), str(image), f"{size_mib}M"],
        check=True,
        capture_output=True,
    )
    return image


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[Path]:
    """``image`` attached to a free loop device, detached afterwards."""
    done = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    )
    device = Path(done.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["umount", "--all-targets", str(device)], check=False, capture_output=True)
        subprocess.run(["losetup", "--detach", str(device)], check=True, capture_output=True)


def image_file(image: Path, name: str) -> str:
    """A file's text in an ext4 image, read on the host (debugfs: nothing mounted)."""
    done = subprocess.run(
        ["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, text=True, check=True
    )
    return done.stdout
