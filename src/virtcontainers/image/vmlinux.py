"""Extract an ELF vmlinux from a bzImage (vmlinuz) and check its PVH entry note.

QEMU's microvm boots an uncompressed ELF kernel directly through its PVH entry
point, which skips the real-mode setup and the in-guest decompression: both are
slow under TCG.
"""

from __future__ import annotations

import bz2
import lzma
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable

from virtcontainers.errors import ImageError

ELF_MAGIC = b"\x7fELF"
_PT_NOTE = 4
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def _xz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _lzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)


def _gzip(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=31).decompress(data)


def _bzip2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data)


def _external(tool: str) -> Callable[[bytes], bytes]:
    """Decompress with a host tool (the stdlib has no zstd or lz4 in 3.11)."""

    def decompress(data: bytes) -> bytes:
        exe = shutil.which(tool)
        if exe is None:
            raise ImageError(
                f"{tool} not found (needed to unpack the kernel): apt-get install {tool}"
            )
        # The payload has trailing bytes after the stream: the tool reports an
        # error for them but has already written the decompressed kernel.
        done = subprocess.run([exe, "-dc"], input=data, capture_output=True, check=False)
        return done.stdout

    return decompress


# Magic bytes of each compressor the kernel build supports, most common first.
_FORMATS: tuple[tuple[str, bytes, Callable[[bytes], bytes]], ...] = (
    ("xz", b"\xfd7zXZ\x00", _xz),
    ("zstd", b"\x28\xb5\x2f\xfd", _external("zstd")),
    ("gzip", b"\x1f\x8b\x08", _gzip),
    ("lz4", b"\x02\x21\x4c\x18", _external("lz4")),
    ("bzip2", b"BZh", _bzip2),
    ("lzma", b"\x5d\x00\x00", _lzma),
)

# A false magic match is cheap to reject, but do not try forever on junk.
_MAX_TRIES_PER_FORMAT = 64


def extract_vmlinux(image: bytes) -> bytes:
    """Return the ELF kernel inside `image` (a bzImage, or already an ELF).

    Raises:
        ImageError: no compressed payload in `image` decompresses to an ELF file.
    """
    if image.startswith(ELF_MAGIC):
        return image
    for _name, magic, decompress in _FORMATS:
        start = 0
        for _ in range(_MAX_TRIES_PER_FORMAT):
            offset = image.find(magic, start)
            if offset < 0:
                break
            start = offset + 1
            try:
                payload = decompress(image[offset:])
            except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError):
                continue
            if payload.startswith(ELF_MAGIC):
                return payload
    raise ImageError(
        "no ELF vmlinux found inside the kernel image: give an ELF vmlinux or a bzImage "
        "compressed with xz, zstd, gzip, lz4, bzip2 or lzma"
    )


def has_pvh_note(elf: bytes) -> bool:
    """True when the ELF kernel carries the Xen PHYS32_ENTRY note QEMU uses for PVH boot."""
    if not elf.startswith(ELF_MAGIC) or len(elf) < 64 or elf[4] != 2:  # ELFCLASS64 only
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        base = phoff + index * phentsize
        if base + 56 > len(elf):
            return False
        (p_type,) = struct.unpack_from("<I", elf, base)
        if p_type != _PT_NOTE:
            continue
        (p_offset,) = struct.unpack_from("<Q", elf, base + 8)
        (p_filesz,) = struct.unpack_from("<Q", elf, base + 32)
        if _notes_have_pvh(elf[p_offset : p_offset + p_filesz]):
            return True
    return False


def _notes_have_pvh(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, n_type = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\x00")
        if name == b"Xen" and n_type == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        # Name and descriptor are each padded to 4 bytes.
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False
