"""The guest root's kernel modules: the tree under /usr/lib/modules and the modprobe helper."""

from __future__ import annotations

from pathlib import Path

from virtcontainers.image.rootfs import install_kernel_modules


def test_modules_land_in_lib_modules_with_modprobe_where_the_kernel_runs_it(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "kernel" / "lib" / "modules"
    release = tree / "6.1.0-57-amd64"
    (release / "kernel/net/bridge").mkdir(parents=True)
    (release / "kernel/net/bridge/bridge.ko").write_bytes(b"\x7fELF")
    (release / "modules.alias").write_text("alias rtnl-link-bridge bridge\n")
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/sbin").mkdir()
    (root / "usr/bin/busybox").write_bytes(b"busybox")
    (root / "sbin").symlink_to("usr/sbin")
    (root / "lib").symlink_to("usr/lib")

    install_kernel_modules(root, tree)

    guest = root / "lib/modules/6.1.0-57-amd64"
    assert (guest / "kernel/net/bridge/bridge.ko").read_bytes() == b"\x7fELF"
    assert (guest / "modules.alias").read_text() == "alias rtnl-link-bridge bridge\n"
    # The kernel's usermode helper is /sbin/modprobe (merged /usr: usr/sbin).
    assert (root / "sbin/modprobe").resolve() == (root / "usr/bin/busybox").resolve()
