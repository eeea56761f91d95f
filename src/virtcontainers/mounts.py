"""Host bind mounts that expose container files through the pod's shared dir."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from virtcontainers.errors import VcError

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise VcError(f"{what}: {os.strerror(errno)}")


def bind_mount(source: Path, target: Path, read_only: bool = False) -> None:
    """Bind ``source`` on ``target`` (created as a dir or empty file to match)."""
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    src, dst = os.fsencode(source), os.fsencode(target)
    _check(_libc.mount(src, dst, None, MS_BIND | MS_REC, None), f"bind mount {source} on {target}")
    try:
        # A private mount keeps our bind out of other namespaces and vice versa.
        _check(_libc.mount(None, dst, None, MS_PRIVATE | MS_REC, None), f"make {target} private")
        if read_only:
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY
            _check(_libc.mount(None, dst, None, flags, None), f"remount {target} read-only")
    except VcError:
        unmount(target)
        raise


def unmount(target: Path) -> None:
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH), f"unmount {target}")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest first."""
    prefix = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(directory: Path) -> None:
    """Remove every mount below ``directory``; repeated binds are stacked, so loop."""
    for _ in range(64):
        points = mounts_under(directory)
        if not points:
            return
        for point in points:
            unmount(point)
    raise VcError(f"mounts under {directory} keep coming back")
