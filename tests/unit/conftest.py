"""Fixtures for unit tests that run the real daemon with the mock hypervisor and agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtcontainers.config import ContainerConfig, ImagePaths, PodConfig


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
