"""What a guest can make the host store stops at its cap; the pod keeps answering."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell
from virtcontainers import api
from virtcontainers.config import ContainerConfig, PodConfig, Resources
from virtcontainers.errors import DaemonError, StateError
from virtcontainers.states import ContainerState
from virtcontainers.storage import mounts
from virtcontainers.store import Store

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

MIB = 1 << 20
RELAY_CHUNK = 64 * 1024  # the most one write of the relay adds past the cap


def wait_for_log_line(path: Path, line: bytes, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().endswith(line):
            return
        time.sleep(0.5)
    raise AssertionError(f"{path} never ended with {line!r}")


def test_a_log_flood_stops_at_the_cap_and_the_pod_still_answers(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    flood = "yes 0123456789abcdef | head -c 6291456; echo flood-done; exec sleep 1000"
    config = PodConfig(
        id="logcap",
        resources=Resources(log_mib=1),
        containers=(ContainerConfig("c", busybox_rootfs, shell(flood), writable_layer=True),),
    )
    api.run_pod(config)
    logs = Store().paths("logcap").root / "logs"
    wait_for_log_line(logs / "c.log", b"flood-done\n")
    assert sorted(p.name for p in logs.iterdir()) == ["c.log", "c.log.1"]
    for name in ("c.log", "c.log.1"):
        assert (logs / name).stat().st_size <= MIB + RELAY_CHUNK
    assert run_exec("logcap", "c", shell("echo still here")) == (b"still here\n", b"", 0)
    api.delete_pod("logcap", force=True)


def test_a_rootfs_flood_gets_enospc_at_the_layer_cap_and_the_pod_still_answers(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    sleeper = ContainerConfig("c", busybox_rootfs, shell("exec sleep 1000"), writable_layer=True)
    config = PodConfig(id="layercap", resources=Resources(layers_mib=16), containers=(sleeper,))
    api.run_pod(config)
    _, err, code = run_exec("layercap", "c", shell("dd if=/dev/zero of=/big bs=1M count=64"))
    assert code != 0
    assert b"No space left on device" in err, err
    layers = os.statvfs(Store().paths("layercap").layers)
    assert layers.f_blocks * layers.f_frsize == 16 * MIB
    assert layers.f_bavail == 0
    assert run_exec("layercap", "c", shell("rm /big; echo freed")) == (b"freed\n", b"", 0)
    api.delete_pod("layercap", force=True)


@pytest.fixture
def small_run_root(no_leaks: Path) -> Iterator[Path]:
    """The run root on a tmpfs of its own, small enough to fill."""
    no_leaks.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(no_leaks)], check=True)
    try:
        yield no_leaks
    finally:
        (no_leaks / "filler").unlink(missing_ok=True)
        for status in api.list_pods():
            api.delete_pod(status.id, force=True)
        mounts.detach(no_leaks)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to its last byte."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    out.write(b"x" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_with_the_run_root_full_start_and_create_fail_and_status_agrees(
    small_run_root: Path, busybox_rootfs: Path
) -> None:
    def sleeper(container_id: str) -> ContainerConfig:
        return ContainerConfig(
            container_id, busybox_rootfs, shell("exec sleep 1000"), writable_layer=True
        )

    api.run_pod(PodConfig(id="full"))
    api.create_container("full", sleeper("c"))
    filler = fill(small_run_root)

    with pytest.raises(DaemonError, match=r"No space left on device.*'c' was not started"):
        api.start_container("full", "c")
    assert api.container_status("full", "c").state is ContainerState.CREATED
    with pytest.raises(StateError):
        run_exec("full", "c", shell("true"))
    with pytest.raises(DaemonError, match=r"No space left on device.*'d' was not created"):
        api.create_container("full", sleeper("d"))
    assert [c.id for c in api.pod_status("full").containers] == ["c"]

    filler.unlink()
    api.start_container("full", "c")
    assert api.container_status("full", "c").state is ContainerState.RUNNING
    assert run_exec("full", "c", shell("echo up")) == (b"up\n", b"", 0)
    # The failed create left nothing that appears once the record is saved again.
    assert [c.id for c in api.pod_status("full").containers] == ["c"]
    api.create_container("full", sleeper("d"))
    api.delete_pod("full", force=True)


DEPTH = 3000
"""Deeper than Python's recursion limit (shutil.rmtree recursed once per level)."""

CHUNK = 5
NEST_HALF = (
    f"p=d; i=1; while [ $i -lt {CHUNK} ]; do p=$p/d; i=$((i+1)); done; "
    f"for _ in $(seq {DEPTH // 2 // CHUNK}); do mkdir -p $p && cd $p || exit 1; done"
)
"""Half the tree: the guest's 9p server refuses a path past PATH_MAX on the
host (about 2,000 levels of ``d/``), so the guest nests two halves and moves one
to the bottom of the other, as a hostile container can.  ``mkdir -p`` of a few
levels at a time: one process per level costs a fork each under TCG, and many
levels at a time cost a 9p walk of every prefix."""


def depth_below(top: Path) -> int:
    """How many directories named ``d`` nest below ``top``, walked through fds
    (a path to the bottom would be longer than PATH_MAX)."""
    levels = 0
    current = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            try:
                below = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=current)
            except FileNotFoundError:
                return levels
            os.close(current)
            current = below
            levels += 1
    finally:
        os.close(current)


def test_a_container_that_nests_3000_directories_in_its_layer_is_deleted_cleanly(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    nester = ContainerConfig("c", busybox_rootfs, shell("exec sleep 1000"), writable_layer=True)
    api.run_pod(PodConfig(id="deep", containers=(nester,)))
    nest = (
        f"mkdir /tmp/a /tmp/b && cd /tmp/a && {NEST_HALF} && cd /tmp/b && {NEST_HALF} "
        "&& mv /tmp/a/d d && echo nested"
    )
    out, err, code = run_exec("deep", "c", shell(nest))
    assert (out, code) == (b"nested\n", 0), err
    paths = Store().paths("deep")
    assert depth_below(paths.layer("c") / "upper" / "tmp" / "b") == DEPTH
    api.delete_pod("deep", force=True)
    assert not paths.root.exists()
