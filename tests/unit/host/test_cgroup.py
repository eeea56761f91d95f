"""The pod's host cgroup: the host's hierarchies, and a real cgroup."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtcontainers.cgroupconfig import CgroupConfig
from virtcontainers.errors import VcError
from virtcontainers.host.cgroup import VM_OVERHEAD_MIB, HostCgroup, hierarchies


def test_hierarchies_of_a_hybrid_host(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    found = {
        (str(h.mount), h.version, tuple(sorted(h.controllers))) for h in hierarchies(str(mountinfo))
    }
    assert found == {
        ("/sys/fs/cgroup/cpu,cpuacct", 1, ("cpu", "cpuacct")),
        ("/sys/fs/cgroup/memory", 1, ("memory",)),
        ("/sys/fs/cgroup/systemd", 1, ("name=systemd",)),
        ("/sys/fs/cgroup/unified", 2, ()),
    }  # cpuset is left out: the VM's CPUs are not the engine's to pin through it


@pytest.fixture
def test_parent() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"vctest-{os.getpid()}-{secrets.token_hex(3)}"
    yield name
    for hierarchy in hierarchies():
        for directory in sorted(hierarchy.mount.joinpath(name).glob("**/"), reverse=True):
            if directory.is_dir():
                directory.rmdir()


def test_a_real_cgroup_holds_its_process_and_limits_and_goes_away(test_parent: str) -> None:
    cgroup = HostCgroup(CgroupConfig(f"/{test_parent}/pod", cpus=0.5))
    cgroup.create(memory_mib=128)
    # It works (and so is charged) only once it is in the cgroup: it waits for a line.
    script = "read line; head -c 4000000 /dev/zero | tail -c 1 >/dev/null; exec sleep 60"
    child = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE)
    try:
        cgroup.enter(child.pid)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        lines = Path(f"/proc/{child.pid}/cgroup").read_text().splitlines()
        assert all(line.endswith(f"/{test_parent}/pod") for line in lines if "memory" in line)
        for hierarchy in hierarchies():
            directory = hierarchy.mount / test_parent / "pod"
            assert str(child.pid) in (directory / "cgroup.procs").read_text().split()
            if "memory" in hierarchy.controllers:
                limit = int((directory / "memory.limit_in_bytes").read_text())
                assert limit == (128 + VM_OVERHEAD_MIB) << 20
            if "cpu" in hierarchy.controllers:
                assert (directory / "cpu.cfs_quota_us").read_text().strip() == "50000"
        while cgroup.usage()[1] == 0:  # the work lands in a moment
            time.sleep(0.05)
        assert cgroup.usage()[0] > 0
        with pytest.raises(VcError, match="still has processes"):
            _quick_remove(cgroup)
    finally:
        child.kill()
        child.wait()
    cgroup.remove()
    assert not any((h.mount / test_parent / "pod").exists() for h in hierarchies())


def _quick_remove(cgroup: HostCgroup) -> None:
    import virtcontainers.host.cgroup as module

    tries = module._REMOVE_TRIES
    module._REMOVE_TRIES = 2
    try:
        cgroup.remove()
    finally:
        module._REMOVE_TRIES = tries
