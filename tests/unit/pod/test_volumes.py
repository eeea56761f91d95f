"""Block volumes: their config, virtc's option, the QEMU rendering, and the pod's
plug-mount-unplug sequence with the mock VM and agent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
import pytest

from tests.unit.conftest import mock_pod, started_here
from virtcontainers import api
from virtcontainers.agent.mock import MockAgent
from virtcontainers.cli.virtc.blockvolumes import parse_block_volume
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths, PodConfig, Resources
from virtcontainers.errors import AgentError, ConfigError
from virtcontainers.hypervisor.devices import BlockDevice
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.hypervisor.qemu.command import render_device
from virtcontainers.pod.volumes import PodVolumes
from virtcontainers.spec import container_spec
from virtcontainers.volumes import BlockVolume, guest_path, volume_id


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 4096)
    return path


# -- config ---------------------------------------------------------------------


def test_a_volume_round_trips_and_bad_fields_are_named(disk: Path) -> None:
    volume = BlockVolume(disk, "/data", format="qcow2", fstype="xfs", read_only=True)
    assert BlockVolume.from_dict(json.loads(json.dumps(volume.to_dict()))) == volume
    for field, bad in [
        ("source", {"source": "rel/disk", "destination": "/d"}),
        ("destination", {"source": str(disk), "destination": "d"}),
        ("format", {"source": str(disk), "destination": "/d", "format": "vmdk"}),
        ("fstype", {"source": str(disk), "destination": "/d", "fstype": "ntfs"}),
        ("read_only", {"source": str(disk), "destination": "/d", "read_only": "yes"}),
    ]:
        with pytest.raises(ConfigError, match=f"block_volume.{field}"):
            BlockVolume.from_dict(bad)
    with pytest.raises(ConfigError, match="unknown field"):
        BlockVolume.from_dict({"source": str(disk), "destination": "/d", "cache": "none"})
    with pytest.raises(ConfigError, match="is not a file"):
        BlockVolume(disk.parent / "missing.img", "/d").check_host()


def test_a_container_carries_its_volumes_and_binds_them(disk: Path, tmp_path: Path) -> None:
    volume = BlockVolume(disk, "/data", read_only=True)
    container = ContainerConfig("c", tmp_path, Cmd(("true",)), block_volumes=(volume,))
    assert ContainerConfig.from_dict(container.to_dict()) == container
    mounts = container_spec(container, "host", lambda _: 1)["mounts"]
    assert mounts[-1] == {
        "destination": "/data",
        "type": "bind",
        "source": guest_path("c", 0),
        "options": ["rbind", "ro"],
    }
    with pytest.raises(ConfigError, match="at most 8"):
        ContainerConfig("c", tmp_path, Cmd(("true",)), block_volumes=(volume,) * 9)


def test_volume_ids_are_valid_serials_and_differ_by_container() -> None:
    ids = {volume_id(c, i) for c in ("a", "b") for i in range(8)}
    assert len(ids) == 16
    assert all(len(i) <= 20 and i.isalnum() for i in ids)


def test_a_pod_keeps_as_many_slots_as_it_needs(disk: Path, tmp_path: Path) -> None:
    volume = BlockVolume(disk, "/data")
    two = ContainerConfig("c", tmp_path, Cmd(("true",)), block_volumes=(volume, volume))
    assert PodConfig(id="p").hotplug_slots() == 0
    assert PodConfig(id="p", containers=(two,)).hotplug_slots() == 2
    assert PodConfig(id="p", resources=Resources(hotplug_slots=3)).hotplug_slots() == 3
    assert PodConfig(id="p", netns="/run/netns/x").hotplug_slots() == 4
    with pytest.raises(ConfigError, match=r"resources\.hotplug_slots"):
        Resources(hotplug_slots=17)


def test_virtc_parses_a_block_volume(disk: Path) -> None:
    volume = parse_block_volume(f"{disk}:/data:ro,qcow2,xfs")
    assert volume == BlockVolume(disk, "/data", format="qcow2", fstype="xfs", read_only=True)
    assert parse_block_volume(f"{disk}:/data") == BlockVolume(disk, "/data")
    for text, what in [
        ("/x", "is not IMAGE:CONTAINER"),
        (f"{disk}:/data:vmdk", "unknown option 'vmdk'"),
        (f"{disk}:data", "is not absolute"),
        (f"{disk}.missing:/data", "is not a file"),
    ]:
        with pytest.raises(click.BadParameter, match=what):
            parse_block_volume(text)


# -- QEMU -----------------------------------------------------------------------


def test_a_raw_disk_is_a_drive_and_a_qcow2_disk_has_no_backing_file(disk: Path) -> None:
    raw = render_device(BlockDevice("d1", disk, read_only=False, serial="vol1"))
    assert raw == [
        "-drive", f"id=d1,file={disk},format=raw,if=none,read-only=off",
        "-device", "virtio-blk-pci,drive=d1,id=d1,serial=vol1",
    ]  # fmt: skip
    qcow2 = render_device(BlockDevice("d2", disk, format="qcow2"))
    assert qcow2[0] == "-blockdev"
    assert json.loads(qcow2[1]) == {
        "driver": "qcow2",
        "node-name": "d2",
        "read-only": True,
        "file": {"driver": "file", "filename": str(disk), "read-only": True},
        "backing": None,
    }
    assert qcow2[2:] == ["-device", "virtio-blk-pci,drive=d2,id=d2"]
    with pytest.raises(ConfigError, match="format 'vmdk'"):
        BlockDevice("d", disk, format="vmdk")
    with pytest.raises(ConfigError, match="serial"):
        BlockDevice("d", disk, serial="x" * 21)


# -- the pod --------------------------------------------------------------------


class UnmountableAgent(MockAgent):
    """A guest whose kernel cannot mount the disk."""

    async def mount_block(self, volume_id: str, serial: str, fstype: str, read_only: bool) -> None:
        await super().mount_block(volume_id, serial, fstype, read_only)
        raise AgentError("mount_block", "mount", "mount: wrong fs type")


def test_a_container_s_volumes_are_plugged_mounted_then_unmounted_and_unplugged(
    run_root: Path, image: ImagePaths, rootfs: Path, disk: Path
) -> None:
    agent, hypervisor = MockAgent(), MockHypervisor(hotplug=True)
    volumes = (BlockVolume(disk, "/a"), BlockVolume(disk, "/b", read_only=True))
    container = ContainerConfig("c", rootfs, Cmd(("true",)), block_volumes=volumes)
    ids = [volume_id("c", 0), volume_id("c", 1)]

    async def scenario() -> None:
        pod = await started_here(mock_pod("vols", image), hypervisor, agent)
        try:
            await pod.create_container(container, None)
            assert [d.id for d in hypervisor.hotplugged] == ids
            await pod.delete_container("c")
            assert hypervisor.hotplugged == []
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    ops = [(op, args.get("volume_id")) for op, args in agent.calls if "block" in op]
    assert ops == [
        ("mount_block", ids[0]), ("mount_block", ids[1]),
        ("unmount_block", ids[0]), ("unmount_block", ids[1]),
    ]  # fmt: skip
    assert [c for c in hypervisor.calls if c[0] == "unplug_device"] == [
        ("unplug_device", ids[0]), ("unplug_device", ids[1]),
    ]  # fmt: skip
    api.delete_pod("vols")


def test_a_volume_the_guest_cannot_mount_is_unplugged_and_no_container_is_made(
    run_root: Path, image: ImagePaths, rootfs: Path, disk: Path
) -> None:
    hypervisor = MockHypervisor(hotplug=True)
    container = ContainerConfig(
        "c", rootfs, Cmd(("true",)), block_volumes=(BlockVolume(disk, "/a"),)
    )

    async def scenario() -> None:
        pod = await started_here(mock_pod("vols", image), hypervisor, UnmountableAgent())
        try:
            with pytest.raises(AgentError, match="wrong fs type"):
                await pod.create_container(container, None)
            assert hypervisor.hotplugged == [] and pod.containers == {}
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    api.delete_pod("vols")


def test_a_reattaching_daemon_knows_each_disk_as_it_was_plugged(
    run_root: Path, image: ImagePaths, rootfs: Path, disk: Path
) -> None:
    """A new daemon's PodVolumes names every disk as the dead one plugged it,
    from the containers' configs alone, and claims each block rootfs again."""
    agent, hypervisor = MockAgent(), MockHypervisor(hotplug=True)
    volumes = (BlockVolume(disk, "/a"), BlockVolume(disk, "/b", read_only=True))
    container = ContainerConfig("c", rootfs, Cmd(("true",)), block_volumes=volumes)
    root = ContainerConfig("r", disk, Cmd(("true",)), rootfs_fstype="ext4", read_only_rootfs=True)

    async def scenario() -> None:
        pod = await started_here(mock_pod("vols", image), hypervisor, agent)
        try:
            await pod.create_container(container, None)
            await pod.create_container(root, None)
            plugged = {d.id: d for d in hypervisor.hotplugged}
            fresh = PodVolumes(pod.vm)
            restored = fresh.restore([container, root])
            assert {d.id: d for d in restored} == plugged and len(restored) == 3
            assert set(fresh.claims) == {"r"}
            fresh.release_claims()
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    api.delete_pod("vols")
