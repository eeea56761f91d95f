"""The tiny initrd: busybox, the guest's kernel modules and init.sh as /init.

Kept small on purpose: under TCG every megabyte of initrd costs ≈50 ms to
unpack, so the root filesystem lives in a squashfs disk instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from virtcontainers.image.busybox import applets
from virtcontainers.image.cpio import CpioWriter, write_gzip_cpio

_DIRS = ("bin", "dev", "lib", "lib/modules", "newroot", "proc", "sys", "run", "tmp")


def init_script() -> bytes:
    """The bytes of init.sh, the initrd's /init (package data)."""
    return resources.files("virtcontainers.image").joinpath("init.sh").read_bytes()


def build_initrd(dest: Path, busybox: Path, modules: Sequence[Path]) -> None:
    """Write the gzip cpio initrd to `dest`.

    `modules` are plain .ko files whose names sort in load order.
    """
    busybox_data = busybox.read_bytes()
    names = applets(busybox)
    script = init_script()

    def fill(writer: CpioWriter) -> None:
        for name in _DIRS:
            writer.directory(name)
        # The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
        writer.char_device("dev/console", 5, 1)
        writer.file("bin/busybox", busybox_data, 0o755)
        for applet in names:
            if applet != "busybox":
                writer.symlink(f"bin/{applet}", "busybox")
        for module in modules:
            writer.file(f"lib/modules/{module.name}", module.read_bytes())
        writer.file("init", script, 0o755)

    write_gzip_cpio(dest, fill)
