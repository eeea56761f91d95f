"""A minimal writer for the "newc" cpio format the kernel unpacks as initramfs.

Written in Python so the initrd needs no root (device nodes live only in the
archive) and no cpio tool.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

_TRAILER = "TRAILER!!!"


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class CpioWriter:
    """Append entries to a newc archive; call close() to write the trailer."""

    def __init__(self, out: _Writable) -> None:
        self._out = out
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\x00"
        fields = (
            self._ino,
            mode,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._out.write(header + encoded + _pad(len(header) + len(encoded)))
        self._out.write(data + _pad(len(data)))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        self._entry(_TRAILER, 0)


def _pad(length: int) -> bytes:
    return b"\x00" * (-length % 4)


def write_gzip_cpio(dest: Path, fill: Callable[[CpioWriter], None]) -> None:
    """Write a gzip-compressed newc archive to `dest`, its entries added by `fill`."""
    with dest.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
        writer = CpioWriter(packed)
        fill(writer)
        writer.close()
