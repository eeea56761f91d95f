"""Host mounts, made through the new mount API (file descriptors, not paths).

A bind is cloned from its source with ``open_tree`` (recursively, so the
source's submounts come along), made read-only with ``mount_setattr`` and
``AT_RECURSIVE`` when asked (every submount too, not only the top one), and
attached with ``move_mount`` to a target opened with ``O_NOFOLLOW``.

Targets and detached paths are only ever in directories that the host alone
can write (a pod's run directory and its read-only skeleton, see
:mod:`virtcontainers.storage.shareddir`): this module never resolves a path that a
guest could have changed.  A lazy unmount of a mount takes its submounts
with it, so nothing below a guest-writable directory is looked up to remove.
"""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

from virtcontainers.errors import VcError

# The same numbers on every Linux architecture (the unified table of 5.1+).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
MAX_STACKED = 64

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise VcError(f"{what}: {os.strerror(errno)}")
    return result


def clone_tree(
    source: Path, *, read_only: bool, recursive: bool = True, propagation: str = "private"
) -> int:
    """A detached copy of the mount tree at ``source`` (only its top mount
    unless ``recursive``), as an fd.

    ``read_only`` applies to every mount of the copy.  The copy is private: mounts
    made in it never reach the source.  With ``propagation`` ``slave`` or
    ``rslave``, mounts made later under the source reach the copy, when the
    source is shared.  The caller closes the fd (a copy that
    is never attached vanishes with it).
    """
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = _check(
        _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source), flags), f"clone {source}"
    )
    try:
        # A mount made private loses its master for good, so a slave top mount
        # cannot have private submounts: ``slave`` makes them slaves too.
        every = MS_SLAVE if propagation in ("slave", "rslave") else MS_PRIVATE
        attr = _MountAttr(attr_set=MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, propagation=every)
        if read_only:
            attr.attr_set |= MOUNT_ATTR_RDONLY
        _check(
            _libc.syscall(
                SYS_MOUNT_SETATTR,
                tree,
                b"",
                AT_EMPTY_PATH | AT_RECURSIVE,
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"set the attributes of a copy of {source}",
        )
    except BaseException:
        os.close(tree)
        raise
    return tree


def attach(tree: int, target: Path) -> None:
    """Attach a detached mount tree on ``target`` (never through a symlink)."""
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        target_fd = os.open(target, flags)
    except OSError as exc:
        raise VcError(f"cannot open mount point {target}: {exc.strerror}") from exc
    try:
        if stat.S_ISLNK(os.fstat(target_fd).st_mode):
            raise VcError(f"mount point {target} is a symlink: not following it")
        _check(
            _libc.syscall(
                SYS_MOVE_MOUNT,
                tree,
                b"",
                target_fd,
                b"",
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
            ),
            f"mount on {target}",
        )
    finally:
        os.close(target_fd)


def bind(
    source: Path,
    target: Path,
    *,
    read_only: bool,
    recursive: bool = True,
    propagation: str = "private",
) -> None:
    """Bind ``source`` and its submounts (unless not ``recursive``) on ``target``,
    all read-only if asked; ``propagation`` as in :func:`clone_tree`."""
    tree = clone_tree(source, read_only=read_only, recursive=recursive, propagation=propagation)
    try:
        attach(tree, target)
    finally:
        os.close(tree)


def mount(kind: str, target: Path, options: str, flags: int = 0) -> None:
    """Mount a new filesystem of ``kind`` (tmpfs, overlay) on ``target``."""
    _check(
        _libc.mount(kind.encode(), os.fsencode(target), kind.encode(), flags, options.encode()),
        f"mount {kind} on {target}",
    )


def detach(target: Path) -> None:
    """Lazily unmount every mount stacked on ``target``, with all their submounts."""
    for _ in range(MAX_STACKED):
        if _libc.umount2(os.fsencode(target), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
            errno = ctypes.get_errno()
            if errno in (22, 2):  # EINVAL: not a mount point (any more); ENOENT: gone
                return
            raise VcError(f"unmount {target}: {os.strerror(errno)}")
    raise VcError(f"mounts on {target} keep coming back")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, outermost first."""
    prefix = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts))


def detach_all_under(directory: Path) -> None:
    """Detach the outermost mounts at or below ``directory`` (their submounts go too)."""
    points = mounts_under(directory)
    for point in points:
        if not any(other in point.parents for other in points):
            detach(point)
