"""The host cgroup an engine names: both path styles, and paths that cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtcontainers.cgroupconfig import CgroupConfig, relative_path
from virtcontainers.errors import ConfigError


@pytest.mark.parametrize(
    ("path", "relative"),
    [
        ("/libpod_parent/libpod-3f5a", "libpod_parent/libpod-3f5a"),
        ("machine.slice:libpod:3f5a", "machine.slice/libpod-3f5a.scope"),
        (
            "kubepods-burstable-pod12.slice:cri-containerd:ab12",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/"
            "cri-containerd-ab12.scope",
        ),
        ("-.slice:docker:x", "docker-x.scope"),
        ("vc/pod", "vc/pod"),
    ],
)
def test_both_path_styles(path: str, relative: str) -> None:
    assert relative_path(path) == Path(relative)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "not a cgroup path"),
        ("/", "root cgroup"),
        ("/a/../b", "'..' is not a cgroup name"),
        ("/a/b c", "not a cgroup name"),
        ("machine:libpod:x", "not a systemd slice"),
        ("a--b.slice:p:x", "not a systemd slice"),
    ],
)
def test_bad_paths_are_refused(path: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        CgroupConfig(path)
