"""busybox-static: the initrd's tools, the guest root's shell, the default container."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from virtcontainers.errors import ImageError
from virtcontainers.image.cache import cache_lock, remove_stale_staging, resolve_cache_dir

BUSYBOX = Path("/bin/busybox")
_INSTALL_HINT = "apt-get install busybox-static"
Progress = Callable[[str], None]

# Bump when the container rootfs layout changes, to invalidate cached copies.
ROOTFS_LAYOUT_VERSION = 1

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"


def busybox_binary(path: Path = BUSYBOX) -> Path:
    """Return the host's busybox after checking it is statically linked.

    Raises:
        ImageError: busybox is missing, or dynamic (the busybox package, not busybox-static).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path} not found: {_INSTALL_HINT}") from exc
    if not data.startswith(b"\x7fELF"):
        raise ImageError(f"{path} is not an ELF binary: {_INSTALL_HINT}")
    if not is_static_elf(data):
        raise ImageError(f"{path} is dynamically linked: {_INSTALL_HINT}")
    return path


def is_static_elf(data: bytes) -> bool:
    """True when an ELF64 file has no PT_INTERP segment (needs no dynamic loader)."""
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    pt_interp = 3
    for index in range(phnum):
        base = phoff + index * phentsize
        if int.from_bytes(data[base : base + 4], "little") == pt_interp:
            return False
    return True


def applets(busybox: Path) -> list[str]:
    """Names of the applets compiled into `busybox`."""
    try:
        out = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"cannot list the applets of {busybox}: {exc}") from exc
    return [name for name in out.split() if name and "/" not in name]


def install_busybox(busybox: Path, bindir: Path) -> None:
    """Copy busybox into `bindir` with a symlink per applet, keeping existing files."""
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, bindir / "busybox")
    for name in applets(busybox):
        link = bindir / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to("busybox")


def write_etc(etc: Path, hostname: str) -> None:
    """Write the minimal /etc every root here needs: passwd, group, hostname."""
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (etc / "hostname").write_text(hostname + "\n")


def populate_container_rootfs(root: Path, busybox: Path) -> None:
    """Lay out a busybox container rootfs in the empty directory `root`."""
    install_busybox(busybox, root / "bin")
    write_etc(root / "etc", "busybox")
    for name, mode in (
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
    ):
        (root / name).mkdir()
        os.chmod(root / name, mode)  # chmod: mkdir's mode is filtered by the umask


def build_busybox_rootfs(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """Return a cached busybox container rootfs directory, building it on first use.

    The directory is cache_dir/rootfs/busybox-<digest>; treat it as read-only
    (share or copy it, do not write into it).

    Raises:
        ImageError: busybox-static is missing or the cache is not writable.
    """
    say = progress or (lambda _msg: None)
    cache = resolve_cache_dir(cache_dir)
    binary = busybox_binary()
    digest = hashlib.sha256(
        binary.read_bytes() + f"layout={ROOTFS_LAYOUT_VERSION}".encode()
    ).hexdigest()[:16]
    final = cache / "rootfs" / f"busybox-{digest}"
    if final.is_dir():
        return final
    with cache_lock(cache):
        if final.is_dir():
            return final
        say("building the busybox container rootfs")
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final.parent)
        staged = Path(tempfile.mkdtemp(dir=final.parent, prefix=".busybox-"))
        try:
            os.chmod(staged, 0o755)
            populate_container_rootfs(staged, binary)
            os.rename(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return final
