"""Real container engines (podman, containerd) driving vc-runtime.

Each engine keeps its state in the test's temp dir; containerd is started by
the fixture and stopped afterwards, whatever the test did.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import short_temp_dir
from tests.engines.containerd import Containerd, run_engine, running_containerd, unmount_under
from tests.engines.images import oci_layout_tar, rootfs_tar
from tests.netlab import Lab, ip

VC_RUNTIME = str(Path(sys.executable).with_name("vc-runtime"))
IMAGE = "localhost/vc-busybox:latest"
CTR_IMAGE = "docker.io/library/vc-busybox:latest"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
conmon_env_vars = {conmon_env}
"""
CONMON_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def containers_conf(**vc_env: str) -> str:
    """podman's settings; *vc_env* reaches vc-runtime create, which conmon runs
    with conmon_env_vars only (podman passes its own environment to neither).
    Automatic templates are off unless a test turns them on."""
    env = {"VC_AUTO_TEMPLATES": "0", **vc_env}
    entries = [CONMON_PATH, *(f"{name}={value}" for name, value in env.items())]
    return CONTAINERS_CONF.format(conmon_env=json.dumps(entries))


def runtime_for_podman(directory: Path) -> str:
    """vc-runtime as podman must run it.  podman runs the runtime with an
    environment of its own making (conmon's for create), so with PYTHONPATH
    set (sources under test) it gets a wrapper that sets it for every command."""
    pythonpath = os.environ.get("PYTHONPATH")
    if pythonpath is None:
        return VC_RUNTIME
    wrapper = directory / "vc-runtime"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH={shlex.quote(pythonpath)} exec {shlex.quote(VC_RUNTIME)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed (make test installs it)")


@dataclass
class Podman:
    base: list[str]
    env: dict[str, str]
    netns: str
    """The test's network namespace podman runs in: its bridge and port
    forwarding live there, never in the host's namespace."""

    @property
    def enter(self) -> list[str]:
        """A command prefix that runs a program in :attr:`netns`."""
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    def set_vc_env(self, **vc_env: str) -> None:
        """The environment of vc-runtime create for the next podman commands."""
        Path(self.env["CONTAINERS_CONF"]).write_text(containers_conf(**vc_env))

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_engine([*self.base, *args], self.env, timeout)


@pytest.fixture
def podman(run_root: Path, tmp_path: Path, busybox_rootfs: Path, lab: Lab) -> Iterator[Podman]:
    need("podman")
    conf = tmp_path / "containers.conf"
    conf.write_text(containers_conf())
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "VC_RUN_DIR": str(run_root)}
    runroot = short_temp_dir("vcpm-")  # podman wants <= 50 chars
    netns, _ = lab.netns()
    ip("-n", netns, "link", "set", "lo", "up")
    # nsenter, not `ip netns exec`: that one gives each command a mount namespace
    # of its own, so the netns bind mounts netavark makes in one podman command
    # are not seen by the next (podman exec then fails to join the network).
    base = [
        "nsenter",
        f"--net=/run/netns/{netns}",
        "podman",
        "--root",
        str(tmp_path / "storage"),
        "--runroot",
        str(runroot),
        "--runtime",
        runtime_for_podman(tmp_path),
        "--tmpdir",
        str(tmp_path / "tmp"),
    ]
    engine = Podman(base, env, netns)
    imported = engine.run("import", str(rootfs_tar(busybox_rootfs, tmp_path / "rootfs.tar")), IMAGE)
    assert imported.returncode == 0, imported.stderr
    yield engine
    try:
        engine.run("rm", "--all", "--force", "--time", "0", timeout=120)
        engine.run("system", "reset", "--force", timeout=120)
    finally:
        unmount_under(tmp_path)
        unmount_under(runroot)
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def containerd(run_root: Path, tmp_path: Path, busybox_rootfs: Path) -> Iterator[Containerd]:
    need("containerd")
    need("ctr")
    with running_containerd({**os.environ, "VC_RUN_DIR": str(run_root)}) as engine:
        image = oci_layout_tar(busybox_rootfs, tmp_path / "image.tar", CTR_IMAGE)
        imported = engine.ctr("images", "import", "--digests=false", str(image))
        assert imported.returncode == 0, imported.stderr
        yield engine
