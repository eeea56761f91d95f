"""The shared directory as the host lays it out: no VM, real mounts (root)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import short_temp_dir
from tests.unit.storage.test_removal import DEPTH, nest
from virtcontainers.config import Cmd, ContainerConfig
from virtcontainers.errors import VcError
from virtcontainers.storage import mounts
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.store import PodPaths
from virtcontainers.volumes import Mount


@pytest.fixture
def base() -> Iterator[Path]:
    path = short_temp_dir("vc-sd-")
    try:
        yield path
    finally:
        mounts.detach_all_under(path)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


@pytest.fixture
def shared(base: Path) -> Iterator[SharedDir]:
    root = base / "pod"
    root.mkdir(mode=0o700)
    shared_dir = SharedDir(PodPaths(root))
    shared_dir.prepare()
    yield shared_dir
    shared_dir.remove()
    assert not mounts.mounts_under(root)


def rootfs(base: Path, name: str = "rootfs") -> Path:
    path = base / name
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "hostname").write_text("base\n")
    return path


def container(cid: str, root: Path, **options: object) -> ContainerConfig:
    return ContainerConfig(cid, root, Cmd(("true",)), **options)  # type: ignore[arg-type]


def assert_read_only(path: Path) -> None:
    with pytest.raises(OSError) as caught:
        path.mkdir()
    assert caught.value.errno == errno.EROFS, caught.value


def test_the_guest_sees_a_read_only_skeleton(shared: SharedDir, base: Path) -> None:
    shared.share(container("c", rootfs(base)))
    export = shared.export
    # What defect 1 needed: a directory of its own to plant a symlink in.
    assert_read_only(export / "evil")
    with pytest.raises(OSError) as caught:
        (export / "evil").symlink_to("/etc")
    assert caught.value.errno == errno.EROFS
    with pytest.raises(OSError) as caught:
        (export / "c").rename(export / "moved")
    assert caught.value.errno in (errno.EROFS, errno.EBUSY)
    with pytest.raises(OSError) as caught:
        (export / "c" / "rootfs").rename(export / "c" / "other")
    assert caught.value.errno in (errno.EROFS, errno.EBUSY)
    # The container's own files stay writable.
    (export / "c" / "rootfs" / "written").write_text("x")
    assert (base / "rootfs" / "written").read_text() == "x"


def test_a_writable_layer_keeps_the_base_untouched(shared: SharedDir, base: Path) -> None:
    root = rootfs(base)
    shared.share(container("a", root, writable_layer=True))
    shared.share(container("b", root, writable_layer=True))
    (shared.export / "a" / "rootfs" / "etc" / "marker").write_text("a\n")
    (shared.export / "a" / "rootfs" / "etc" / "hostname").write_text("changed\n")
    assert not (root / "etc" / "marker").exists()
    assert (root / "etc" / "hostname").read_text() == "base\n"
    assert not (shared.export / "b" / "rootfs" / "etc" / "marker").exists()
    layer = shared.paths.layer("a")
    assert (layer / "upper" / "etc" / "marker").is_file()
    shared.unshare("a")
    assert layer.is_dir()  # kept until the container is deleted
    shared.remove_layer("a")
    assert not layer.exists()


def test_read_only_volumes_are_read_only_all_the_way_down(shared: SharedDir, base: Path) -> None:
    volume = base / "volume"
    (volume / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume / "sub")], check=True)
    try:
        config = container("c", rootfs(base), mounts=(Mount(str(volume), "/v", read_only=True),))
        shared.share(config)
        seen = shared.export / "c" / "mounts" / "0"
        assert_read_only(seen / "top")
        assert_read_only(seen / "sub" / "deeper")
        assert not (volume / "sub" / "deeper").exists()
    finally:
        shared.unshare("c")
        mounts.detach(volume / "sub")


def test_read_only_rootfs_with_a_layer_is_just_read_only(shared: SharedDir, base: Path) -> None:
    shared.share(container("c", rootfs(base), writable_layer=True, read_only_rootfs=True))
    assert_read_only(shared.export / "c" / "rootfs" / "new")
    assert not shared.paths.layer("c").exists()


def test_a_read_only_root_of_its_own_gets_a_layer_for_mount_points(
    shared: SharedDir, base: Path
) -> None:
    # containerd's CRI binds /etc/resolv.conf into a read-only pause rootfs
    # that lacks it: crun in the guest creates the mount point before it
    # makes the root read-only, as runc does on the host.
    source = rootfs(base)
    shared.share(container("c", source, read_only_rootfs=True))
    seen = shared.export / "c" / "rootfs"
    (seen / "etc" / "resolv.conf").touch()
    assert (seen / "etc" / "hostname").read_text() == "base\n"
    assert not (source / "etc" / "resolv.conf").exists()
    assert (shared.paths.layer("c") / "upper" / "etc" / "resolv.conf").exists()
    shared.unshare("c")
    shared.remove_layer("c")
    assert not shared.paths.layer("c").exists()


def test_a_read_only_root_overlayfs_cannot_take_is_bound_read_only(
    shared: SharedDir, base: Path
) -> None:
    shared.share(container("c", rootfs(base, "root,fs"), read_only_rootfs=True))
    assert_read_only(shared.export / "c" / "rootfs" / "new")
    assert not shared.paths.layer("c").exists()


def test_unshare_and_detach_leave_no_mount(shared: SharedDir, base: Path) -> None:
    volume = base / "file-volume"
    volume.write_text("data")
    config = container("c", rootfs(base), mounts=(Mount(str(volume), "/etc/data"),))
    shared.share(config)
    assert (shared.export / "c" / "mounts" / "0").read_text() == "data"
    shared.unshare("c")
    assert not [m for m in mounts.mounts_under(shared.paths.root) if "/c/" in str(m)]
    shared.detach()
    assert not mounts.mounts_under(shared.paths.root)
    assert volume.read_text() == "data"


def test_removal_refuses_to_delete_through_a_mount(shared: SharedDir, base: Path) -> None:
    shared.share(container("c", rootfs(base), writable_layer=True))
    victim = base / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    upper = shared.paths.layer("c") / "upper"
    (upper / "mnt").mkdir()
    mounts.bind(victim, upper / "mnt", read_only=False)
    try:
        shared.unshare("c")
        with pytest.raises(VcError, match="still has mounts"):
            shared.remove_layer("c")
    finally:
        mounts.detach(upper / "mnt")
    assert (victim / "precious").read_text() == "keep me"


def test_a_failed_share_undoes_what_it_did(shared: SharedDir, base: Path) -> None:
    volume = base / "volume"
    volume.mkdir()
    config = container("c", rootfs(base), mounts=(Mount(str(volume), "/v"),))
    volume.rmdir()  # gone between the config's check and the share
    with pytest.raises(VcError, match="clone"):
        shared.share(config)
    assert not (shared.paths.skel / "c").exists()
    assert not [m for m in mounts.mounts_under(shared.paths.root) if "/c/" in str(m)]


def test_mount_api_errors_name_the_path(base: Path) -> None:
    with pytest.raises(VcError, match=str(base / "missing")):
        mounts.bind(base / "missing", base, read_only=True)
    link = base / "link"
    link.symlink_to(base)
    (base / "src").mkdir()
    with pytest.raises(VcError, match="mount point"):
        mounts.bind(base / "src", link, read_only=False)
    assert not mounts.mounts_under(base)
    assert os.path.islink(link)


def test_a_mapped_root_can_pass_through_to_its_files_under_any_umask(
    shared: SharedDir, base: Path
) -> None:
    """A container in a user namespace reaches its root and volumes as "other"."""
    volume = base / "volume"
    volume.mkdir()
    old = os.umask(0o077)
    try:
        shared.share(container("c", rootfs(base), mounts=(Mount(str(volume), "/v"),)))
    finally:
        os.umask(old)
    for directory in (shared.export / "c", shared.export / "c" / "mounts"):
        assert directory.stat().st_mode & 0o777 == 0o711, directory


@pytest.fixture
def shared_volume(base: Path) -> Iterator[Path]:
    """A volume that is a shared mount, as / is on systemd hosts."""
    volume = base / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(volume)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(volume)], check=True)
        (volume / "later").mkdir()
        yield volume
    finally:
        mounts.detach(volume)


@pytest.mark.parametrize(
    ("options", "seen"),
    [((), False), (("rprivate",), False), (("rslave",), True), (("slave",), True)],
)
def test_later_host_mounts_reach_only_a_slave_volume(
    shared: SharedDir, base: Path, shared_volume: Path, options: tuple[str, ...], seen: bool
) -> None:
    config = container(
        "c", rootfs(base), mounts=(Mount(str(shared_volume), "/v", options=options),)
    )
    shared.share(config)
    later = shared_volume / "later"
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(later)], check=True)
        (later / "file").write_text("made after the share")
        assert (shared.export / "c" / "mounts" / "0" / "later" / "file").exists() is seen
    finally:
        shared.unshare("c")
        mounts.detach(later)


def test_a_plain_bind_leaves_the_sources_submounts_out(shared: SharedDir, base: Path) -> None:
    volume = base / "volume"
    (volume / "sub").mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(volume / "sub")], check=True
    )
    try:
        (volume / "sub" / "file").write_text("on the submount")
        for index, options in enumerate((("bind",), ("rbind",))):
            config = container(f"c{index}", rootfs(base / str(index)), mounts=(
                Mount(str(volume), "/v", options=options),
            ))  # fmt: skip
            shared.share(config)
        assert not (shared.export / "c0" / "mounts" / "0" / "sub" / "file").exists()
        assert (shared.export / "c1" / "mounts" / "0" / "sub" / "file").exists()
    finally:
        shared.unshare("c0")
        shared.unshare("c1")
        mounts.detach(volume / "sub")


def test_a_layer_nested_deeper_than_recursion_goes(shared: SharedDir, base: Path) -> None:
    shared.share(container("c", rootfs(base), writable_layer=True))
    nest(shared.export / "c" / "rootfs", DEPTH)  # as the container would, in its layer
    shared.unshare("c")
    shared.remove_layer("c")
    assert not shared.paths.layer("c").exists()


def test_the_layers_are_on_a_tmpfs_of_their_own_that_fills_up_alone(base: Path) -> None:
    root = base / "small"
    root.mkdir(mode=0o700)
    shared = SharedDir(PodPaths(root), layers_mib=2)
    shared.prepare()
    try:
        shared.share(container("c", rootfs(base), writable_layer=True))
        written = shared.export / "c" / "rootfs" / "big"
        with pytest.raises(OSError) as caught, open(written, "wb") as out:
            for _ in range(3 * 1024):
                out.write(b"x" * 1024)
                out.flush()
        assert caught.value.errno == errno.ENOSPC
        size = os.statvfs(shared.paths.layers)
        assert size.f_blocks * size.f_frsize == 2 << 20
        # Stopping the pod keeps the layers (and their tmpfs) for its next start.
        shared.unshare("c")
        shared.detach()
        assert mounts.mounts_under(root) == [Path(os.path.realpath(shared.paths.layers))]
        assert (shared.paths.layer("c") / "upper" / "big").exists()
    finally:
        shared.remove()
    assert not mounts.mounts_under(root)
    assert not shared.paths.layers.exists()
