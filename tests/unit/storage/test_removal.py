"""Deleting a tree the guest wrote: as deep as it likes, symlinks and mounts left alone."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import short_temp_dir
from virtcontainers.errors import VcError
from virtcontainers.storage import mounts
from virtcontainers.storage.removal import remove_tree

DEPTH = 3000
"""Deeper than Python's recursion limit, and than PATH_MAX can name."""


@pytest.fixture
def base() -> Iterator[Path]:
    path = short_temp_dir("vc-rm-")
    try:
        yield path
    finally:
        mounts.detach_all_under(path)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def nest(top: Path, depth: int, leaf: str = "") -> None:
    """``depth`` directories below ``top``, made through fds (no path could reach the
    bottom); a symlink named ``escape`` to ``leaf`` at the bottom when one is given."""
    current = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=current)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=current)
            os.close(current)
            current = below
        os.close(os.open("file", os.O_WRONLY | os.O_CREAT, dir_fd=current))
        if leaf:
            os.symlink(leaf, "escape", dir_fd=current)
    finally:
        os.close(current)


def test_a_tree_deeper_than_recursion_and_path_max_goes(base: Path) -> None:
    tree = base / "tree"
    tree.mkdir()
    nest(tree, DEPTH)
    remove_tree(tree, "pod 'p'")
    assert not tree.exists()


def test_a_symlink_to_outside_goes_and_its_target_stays(base: Path) -> None:
    outside = base / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    tree = base / "tree"
    tree.mkdir()
    nest(tree, 5, leaf=str(outside))
    (tree / "top-link").symlink_to(outside)
    remove_tree(tree, "pod 'p'")
    assert not tree.exists()
    assert (outside / "precious").read_text() == "keep me"


def test_a_wide_tree_and_a_symlink_as_the_tree_itself(base: Path) -> None:
    tree = base / "tree"
    for branch in range(50):
        nest_path = tree / f"b{branch}" / "x" / "y"
        nest_path.mkdir(parents=True)
        (nest_path / "f").write_text("x")
    remove_tree(tree, "pod 'p'")
    assert not tree.exists()
    target = base / "target"
    target.mkdir()
    (target / "f").write_text("keep")
    (base / "link").symlink_to(target)
    remove_tree(base / "link", "pod 'p'")
    assert not (base / "link").is_symlink()
    assert (target / "f").read_text() == "keep"


def test_nothing_is_deleted_through_a_mount(base: Path) -> None:
    victim = base / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    tree = base / "tree"
    (tree / "mnt").mkdir(parents=True)
    mounts.bind(victim, tree / "mnt", read_only=False)
    try:
        with pytest.raises(VcError, match=r"pod 'p': .* still has mounts"):
            remove_tree(tree, "pod 'p'")
    finally:
        mounts.detach(tree / "mnt")
    assert (victim / "precious").read_text() == "keep me"


def test_a_missing_tree_is_an_error(base: Path) -> None:
    with pytest.raises(FileNotFoundError):
        remove_tree(base / "missing", "pod 'p'")


def test_a_mount_the_walk_meets_stops_it(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount made after the check (here: one the check is blinded to) is not entered."""
    tree = base / "tree"
    (tree / "deep" / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tree / "deep" / "mnt")], check=True)
    (tree / "deep" / "mnt" / "precious").write_text("keep me")
    monkeypatch.setattr(mounts, "mounts_under", lambda _: [])
    try:
        with pytest.raises(VcError, match="pod 'p': a mount inside"):
            remove_tree(tree, "pod 'p'")
        assert (tree / "deep" / "mnt" / "precious").read_text() == "keep me"
    finally:
        mounts.detach(tree / "deep" / "mnt")
