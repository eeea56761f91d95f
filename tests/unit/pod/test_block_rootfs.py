"""Block-device rootfs: its config, the guest's root in the spec, and the pod's
claim-plug-mount-unmount-unplug sequence with the mock VM and agent."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod, started_here
from tests.unit.pod.test_volumes import UnmountableAgent
from virtcontainers import api
from virtcontainers.agent.mock import MockAgent
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths, PodConfig
from virtcontainers.errors import AgentError, ConfigError
from virtcontainers.hypervisor.devices import BlockDevice
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.spec import container_spec
from virtcontainers.storage.blockdev import is_block_device
from virtcontainers.store import Store
from virtcontainers.volumes import guest_rootfs_disk, rootfs_disk_id


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """Stands in for a block device: the pod's O_EXCL open of a regular file
    succeeds (the flag means nothing there), which is all the mock VM needs."""
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 4096)
    return path


def block_root(device: Path, cid: str = "c", **options: object) -> ContainerConfig:
    return ContainerConfig(cid, device, Cmd(("true",)), rootfs_fstype="ext4", **options)  # type: ignore[arg-type]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- config ---------------------------------------------------------------------


def test_a_block_rootfs_round_trips_and_is_validated(device: Path, tmp_path: Path) -> None:
    config = block_root(device, read_only_rootfs=True)
    assert config.block_rootfs
    assert ContainerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match=r"rootfs_fstype.*'xfs' is not one of ext4, ext3, ext2"):
        ContainerConfig("c", device, Cmd(("true",)), rootfs_fstype="xfs")
    with pytest.raises(ConfigError, match="no writable layer"):
        block_root(device, writable_layer=True)
    for not_a_device in (device, tmp_path, tmp_path / "missing"):
        with pytest.raises(ConfigError, match="is not a block device"):
            block_root(not_a_device).check_host()
    # A record without the field (stored before it existed) is a directory rootfs.
    stored = dict(ContainerConfig("c", tmp_path, Cmd(("true",))).to_dict())
    del stored["rootfs_fstype"]
    assert not ContainerConfig.from_dict(stored).block_rootfs


def test_a_block_rootfs_takes_a_slot_and_is_crun_s_root(device: Path) -> None:
    config = block_root(device)
    assert PodConfig(id="p", containers=(config,)).hotplug_slots() == 1
    root = container_spec(config, "host")["root"]
    assert root == {"path": guest_rootfs_disk("c"), "readonly": False}
    assert root["path"] == f"/run/vc/volumes/{rootfs_disk_id('c')}"
    assert len(rootfs_disk_id("c" * 64)) <= 20 and rootfs_disk_id("a") != rootfs_disk_id("b")


# -- the pod --------------------------------------------------------------------


def test_the_root_disk_is_claimed_plugged_mounted_and_nothing_is_shared(
    run_root: Path, image: ImagePaths, device: Path
) -> None:
    agent, hypervisor = MockAgent(), MockHypervisor(hotplug=True)
    ident = rootfs_disk_id("c")
    before = open_fds()

    async def scenario() -> None:
        pod = await started_here(mock_pod("broot", image), hypervisor, agent)
        try:
            await pod.create_container(block_root(device, read_only_rootfs=True), None)
            [plugged] = hypervisor.hotplugged
            assert plugged == BlockDevice(ident, device, read_only=True, serial=ident)
            assert set(pod.volumes.claims) == {"c"}
            assert os.listdir(Store().paths("broot").shared / "c") == []
            await pod.delete_container("c")
            assert hypervisor.hotplugged == [] and pod.volumes.claims == {}
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    blocks = [(op, args) for op, args in agent.calls if "block" in op]
    assert blocks == [
        ("mount_block", {"volume_id": ident, "serial": ident, "fstype": "ext4", "read_only": True}),
        ("unmount_block", {"volume_id": ident}),
    ]
    created = next(args for op, args in agent.calls if op == "create_container")
    assert created["bundle"]["root"]["path"] == guest_rootfs_disk("c")  # type: ignore[index]
    assert open_fds() <= before  # the claim is closed
    api.delete_pod("broot")


def test_a_root_disk_the_guest_cannot_mount_is_unplugged_and_released(
    run_root: Path, image: ImagePaths, device: Path
) -> None:
    hypervisor = MockHypervisor(hotplug=True)
    before = open_fds()

    async def scenario() -> None:
        pod = await started_here(mock_pod("broot", image), hypervisor, UnmountableAgent())
        try:
            with pytest.raises(AgentError, match="wrong fs type"):
                await pod.create_container(block_root(device), None)
            assert hypervisor.hotplugged == [] and pod.containers == {}
            assert pod.volumes.claims == {}
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert open_fds() <= before
    api.delete_pod("broot")


def test_a_pod_without_slots_refuses_a_block_rootfs(
    run_root: Path, image: ImagePaths, device: Path
) -> None:
    async def scenario() -> None:
        pod = await started_here(
            mock_pod("broot", image), MockHypervisor(hotplug=False), MockAgent()
        )
        try:
            with pytest.raises(ConfigError, match="no hot-plug slots"):
                await pod.create_container(block_root(device), None)
            assert pod.volumes.claims == {}
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert not is_block_device(device)
    api.delete_pod("broot")
