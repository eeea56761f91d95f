"""vmlinux extraction and PVH note detection on synthetic kernels (no QEMU)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct

import pytest

from virtcontainers.errors import ImageError
from virtcontainers.image.vmlinux import extract_vmlinux, has_pvh_note

# Junk that contains stray magic bytes, as a real setup header can.
_SETUP = b"MZ" + b"\x00" * 100 + b"\x1f\x8b\x08garbage" + b"\xfd7zXZ\x00bad" + b"\x5d\x00\x00x"


def _elf_with_notes(notes: bytes) -> bytes:
    """A minimal ELF64 file with one PT_NOTE program header."""
    phoff, phentsize = 64, 56
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4] = 2  # ELFCLASS64
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, 1)
    data_offset = phoff + phentsize
    phdr = struct.pack("<IIQQQQQQ", 4, 0, data_offset, 0, 0, len(notes), len(notes), 4)
    return bytes(header) + phdr + notes


def _note(name: bytes, n_type: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\x00" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), n_type) + pad(name) + pad(desc)


PVH_ELF = _elf_with_notes(_note(b"GNU\x00", 3, b"id") + _note(b"Xen\x00", 18, b"\x00" * 4))


@pytest.mark.parametrize(
    "compress",
    [
        lzma.compress,
        gzip.compress,
        bz2.compress,
        lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    ],
    ids=["xz", "gzip", "bzip2", "lzma"],
)
def test_extract_finds_the_compressed_elf(compress: object) -> None:
    packed = compress(PVH_ELF)  # type: ignore[operator]
    image = _SETUP + packed + b"\x00\x10\x00\x00trailer"
    assert extract_vmlinux(image) == PVH_ELF


def test_extract_returns_an_elf_unchanged() -> None:
    assert extract_vmlinux(PVH_ELF) is PVH_ELF


def test_extract_rejects_a_payload_that_is_not_elf() -> None:
    with pytest.raises(ImageError, match="no ELF vmlinux"):
        extract_vmlinux(_SETUP + lzma.compress(b"not an elf at all"))


def test_pvh_note_is_detected() -> None:
    assert has_pvh_note(PVH_ELF)


def test_elf_without_pvh_note() -> None:
    assert not has_pvh_note(_elf_with_notes(_note(b"Xen\x00", 17, b"\x00" * 4)))
    assert not has_pvh_note(b"not an elf")
