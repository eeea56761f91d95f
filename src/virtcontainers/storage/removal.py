"""Deleting a tree the guest wrote: however deep, never through a symlink or a mount.

A container can nest directories in its writable layer far deeper than
``shutil.rmtree`` can follow (it recurses once per level: RecursionError at
about 1,000 levels), and deeper than a path can name (PATH_MAX) or than a
process may hold descriptors (one per level).  So the walk holds one
directory open at a time, works relative to it (``dir_fd``, ``O_NOFOLLOW``),
keeps the way back as an explicit stack, and climbs back through ``..`` only
after checking that it lands in the directory it came from.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import VcError
from virtcontainers.storage import mounts

_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_DIRECTORY = (errno.ELOOP, errno.ENOTDIR)  # a symlink (O_NOFOLLOW) or anything else


@dataclass
class _Level:
    """A directory on the way down: its name in its parent, and what is left in it."""

    name: str
    identity: tuple[int, int]
    subdirectories: list[str]


def remove_tree(path: Path, owner: str) -> None:
    """Delete ``path`` and everything below it; a symlink is removed, never followed.

    ``owner`` names what the tree belongs to in errors (``"pod 'p'"``).

    Raises:
        VcError: something is mounted at or below ``path`` (nothing is deleted
            through a mount), or the tree changed under the walk.
        FileNotFoundError: ``path`` does not exist.
        OSError: an entry could not be removed.
    """
    if mounts.mounts_under(path):
        raise VcError(f"{owner}: {path} still has mounts on it; not deleting through them")
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        top = _open_subdirectory(parent, path.name)
        if top is None:
            os.unlink(path.name, dir_fd=parent)
            return
        _empty(top, path, owner)
        os.rmdir(path.name, dir_fd=parent)
    finally:
        os.close(parent)


def _empty(top: int, path: Path, owner: str) -> None:
    """Remove everything in the directory ``top`` (an fd this call closes)."""
    current = top
    try:
        device = os.fstat(current).st_dev
        stack = [_Level(path.name, _identity(current), _remove_files(current))]
        while stack:
            level = stack[-1]
            if not level.subdirectories:
                stack.pop()
                if stack:
                    current = _climb(current, stack[-1].identity, path, owner)
                    os.rmdir(level.name, dir_fd=current)
                continue
            name = level.subdirectories.pop()
            below = _open_subdirectory(current, name)
            if below is None:
                os.unlink(name, dir_fd=current)
                continue
            if os.fstat(below).st_dev != device:
                os.close(below)
                raise VcError(f"{owner}: a mount inside {path}; not deleting through it")
            os.close(current)
            current = below
            stack.append(_Level(name, _identity(current), _remove_files(current)))
    finally:
        os.close(current)


def _climb(directory: int, expected: tuple[int, int], path: Path, owner: str) -> int:
    """The parent of ``directory``, which is closed once the parent is open and
    found to be the directory the walk came down from."""
    parent = os.open("..", _OPEN_DIRECTORY, dir_fd=directory)
    if _identity(parent) != expected:
        os.close(parent)
        raise VcError(f"{owner}: {path} was moved while it was being deleted; delete it again")
    os.close(directory)
    return parent


def _open_subdirectory(parent: int, name: str) -> int | None:
    """An fd of the directory ``name`` in ``parent``, or None if it is not one."""
    try:
        return os.open(name, _OPEN_DIRECTORY, dir_fd=parent)
    except OSError as exc:
        if exc.errno in _NOT_A_DIRECTORY:
            return None
        raise


def _remove_files(directory: int) -> list[str]:
    """Unlink everything in ``directory`` but its subdirectories, which it returns."""
    with os.scandir(directory) as listing:
        entries = list(listing)
    subdirectories = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subdirectories.append(entry.name)
        else:
            os.unlink(entry.name, dir_fd=directory)
    return subdirectories


def _identity(directory: int) -> tuple[int, int]:
    status = os.fstat(directory)
    return status.st_dev, status.st_ino
