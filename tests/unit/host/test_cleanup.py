"""Deleting a stopped pod's files, whatever its containers left in their layers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import short_temp_dir
from tests.unit.storage.test_removal import DEPTH, nest
from virtcontainers.host.cleanup import remove_pod_files
from virtcontainers.store import PodPaths


@pytest.fixture
def pod_root() -> Iterator[Path]:
    base = short_temp_dir("vc-cl-")
    try:
        root = base / "pod"
        root.mkdir(mode=0o700)
        yield root
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def test_a_pod_whose_layer_nests_deeper_than_recursion_is_deleted(pod_root: Path) -> None:
    paths = PodPaths(pod_root)
    upper = paths.layer("c") / "upper"
    upper.mkdir(parents=True)
    nest(upper, DEPTH)
    remove_pod_files(paths)
    assert not pod_root.exists()
