"""Fixtures for unit tests that run the real daemon with the mock hypervisor and agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtcontainers import api
from virtcontainers.agent.mock import MockAgent
from virtcontainers.config import ContainerConfig, ImagePaths, PodConfig
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.pod.pod import Pod
from virtcontainers.states import PodState
from virtcontainers.store import Store


@pytest.fixture
def image(tmp_path: Path) -> ImagePaths:
    for name in ("kernel", "initrd", "rootfs"):
        (tmp_path / name).write_bytes(b"not a real image: the mock never boots it")
    return ImagePaths(tmp_path / "kernel", tmp_path / "initrd", tmp_path / "rootfs")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs-dir"
    (root / "bin").mkdir(parents=True)
    return root


def mock_pod(pod_id: str, image: ImagePaths, *containers: ContainerConfig) -> PodConfig:
    return PodConfig(id=pod_id, hypervisor="mock", image=image, containers=containers)


async def started_here(config: PodConfig, hypervisor: MockHypervisor, agent: MockAgent) -> Pod:
    """A Pod on the record the API made, started in this process as its daemon
    would start it, so that a test holds its mock VM and agent."""
    api.create_pod(config)
    store = Store()
    record = store.load(config.id)
    record.state = PodState.STARTING
    store.save(record)
    pod = Pod(store, record, hypervisor, agent)
    await pod.start()
    return pod
