"""The busybox container rootfs and the initrd archive (no QEMU)."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from virtcontainers.image import build_busybox_rootfs
from virtcontainers.image.busybox import BUSYBOX, is_static_elf
from virtcontainers.image.cpio import CpioWriter, write_gzip_cpio
from virtcontainers.image.initrd import build_initrd

needs_busybox = pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed")


@needs_busybox
def test_busybox_rootfs_layout(tmp_path: Path) -> None:
    root = build_busybox_rootfs(tmp_path)
    assert is_static_elf((root / "bin/busybox").read_bytes())
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.readlink(root / "bin/ls") == "busybox"
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert (root / "etc/group").read_text().startswith("root:x:0:")
    assert (root / "etc/hostname").is_file()
    for name in ("proc", "sys", "dev", "root", "tmp"):
        assert (root / name).is_dir()
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777


@needs_busybox
def test_busybox_rootfs_is_cached_and_safe_to_build_concurrently(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(build_busybox_rootfs(tmp_path)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert len(list((tmp_path / "rootfs").iterdir())) == 1  # no leftover staging dirs
    assert build_busybox_rootfs(tmp_path) == results[0]


def _cpio_list(archive: Path) -> list[str]:
    data = gzip.decompress(archive.read_bytes())
    done = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True)
    return done.stdout.decode().split()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_cpio_writer_round_trips(tmp_path: Path) -> None:
    def fill(writer: CpioWriter) -> None:
        writer.directory("dev")
        writer.char_device("dev/console", 5, 1)
        writer.file("odd", b"abc", 0o755)
        writer.symlink("link", "odd")

    write_gzip_cpio(tmp_path / "a.img", fill)
    assert _cpio_list(tmp_path / "a.img") == ["dev", "dev/console", "odd", "link"]


@needs_busybox
@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_initrd_contents(tmp_path: Path) -> None:
    module = tmp_path / "00-virtio.ko"
    module.write_bytes(b"\x7fELF")
    build_initrd(tmp_path / "initrd.img", BUSYBOX, [module])
    names = _cpio_list(tmp_path / "initrd.img")
    for name in (
        "init",
        "bin/busybox",
        "bin/sh",
        "bin/insmod",
        "bin/switch_root",
        "dev/console",
        "lib/modules/00-virtio.ko",
        "newroot",
    ):
        assert name in names
