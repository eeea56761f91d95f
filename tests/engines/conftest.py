"""Real container engines (podman, containerd) driving vc-runtime.

Each engine keeps its state in the test's temp dir; containerd is started by
the fixture and stopped afterwards, whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import short_temp_dir
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
"""


def run_engine(
    argv: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """An engine command with its output captured and no stdin; never raises on failure."""
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


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

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_engine([*self.base, *args], self.env, timeout)


@pytest.fixture
def podman(run_root: Path, tmp_path: Path, busybox_rootfs: Path, lab: Lab) -> Iterator[Podman]:
    need("podman")
    conf = tmp_path / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
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
        VC_RUNTIME,
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
        _unmount_under(tmp_path)
        _unmount_under(runroot)
        shutil.rmtree(runroot, ignore_errors=True)


@dataclass
class Containerd:
    address: str
    env: dict[str, str]

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", self.address, "--namespace", "vctest", *args]
        return run_engine(argv, self.env, timeout)


@pytest.fixture
def containerd(run_root: Path, tmp_path: Path, busybox_rootfs: Path) -> Iterator[Containerd]:
    need("containerd")
    need("ctr")
    base = short_temp_dir("vcctd-")  # its ttrpc socket path must fit in 104 bytes
    address = str(base / "containerd.sock")
    (base / "config.toml").write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        f'[grpc]\n  address = "{address}"\n[ttrpc]\n  address = "{address}.ttrpc"\n'
        '[plugins]\n  [plugins."io.containerd.grpc.v1.cri"]\n    disable_cgroup = true\n'
    )
    env = {**os.environ, "VC_RUN_DIR": str(run_root)}
    log = (base / "containerd.log").open("w")
    daemon = subprocess.Popen(
        ["containerd", "--config", str(base / "config.toml")],
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    engine = Containerd(address, env)
    try:
        deadline = time.monotonic() + 30
        while engine.ctr("version").returncode != 0:
            assert daemon.poll() is None, (base / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.2)
        image = oci_layout_tar(busybox_rootfs, tmp_path / "image.tar", CTR_IMAGE)
        imported = engine.ctr("images", "import", "--digests=false", str(image))
        assert imported.returncode == 0, imported.stderr
        yield engine
    finally:
        for task in engine.ctr("tasks", "ls", "-q").stdout.split():
            engine.ctr("tasks", "kill", "-s", "SIGKILL", task)
            engine.ctr("tasks", "delete", "--force", task)
        for container in engine.ctr("containers", "ls", "-q").stdout.split():
            engine.ctr("containers", "delete", container)
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log.close()
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def _unmount_under(path: Path) -> None:
    """containerd leaves its snapshot and rootfs mounts behind when killed."""
    from virtcontainers import mounts

    mounts.detach_all_under(path)
