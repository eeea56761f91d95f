"""Module selection and load order from synthetic modules.dep / modules.builtin."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from virtcontainers.errors import ImageError
from virtcontainers.image.modules import (
    module_name,
    order_modules,
    parse_modules_builtin,
    parse_modules_dep,
    read_module,
)

DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko kernel/fs/fscache/fscache.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
"""
BUILTIN = "kernel/fs/squashfs/squashfs.ko\nkernel/fs/overlayfs/overlay.ko\n"


def _index(order: list[str], name: str) -> int:
    return [module_name(path) for path in order].index(name)


def test_module_name_strips_path_and_suffix() -> None:
    assert module_name("kernel/fs/9p/9p.ko.xz") == "9p"
    assert module_name("kernel/net/x/vsock-loopback.ko") == "vsock_loopback"


def test_dependencies_come_first() -> None:
    deps = parse_modules_dep(DEP)
    order = order_modules(["virtio_pci", "virtio_blk", "9p"], deps, set())
    assert _index(order, "virtio_ring") < _index(order, "virtio_pci")
    assert _index(order, "virtio") < _index(order, "virtio_blk")
    assert _index(order, "netfs") < _index(order, "fscache") < _index(order, "9p")
    assert len(order) == len(set(order))  # each module once


def test_builtin_modules_are_skipped() -> None:
    order = order_modules(
        ["squashfs", "overlay", "virtio_blk"],
        parse_modules_dep(DEP),
        parse_modules_builtin(BUILTIN),
    )
    names = [module_name(path) for path in order]
    assert names == ["virtio", "virtio_ring", "virtio_blk"]


def test_unknown_module_is_an_error() -> None:
    with pytest.raises(ImageError, match="nosuch"):
        order_modules(["nosuch"], parse_modules_dep(DEP), set())


def test_cycle_is_an_error() -> None:
    deps = {"a.ko": ["b.ko"], "b.ko": ["a.ko"]}
    with pytest.raises(ImageError, match="cycle"):
        order_modules(["a"], deps, set())


def test_read_module_decompresses_xz(tmp_path: Path) -> None:
    plain = b"\x7fELF module"
    (tmp_path / "m.ko.xz").write_bytes(lzma.compress(plain))
    (tmp_path / "p.ko").write_bytes(plain)
    assert read_module(tmp_path / "m.ko.xz") == plain
    assert read_module(tmp_path / "p.ko") == plain
