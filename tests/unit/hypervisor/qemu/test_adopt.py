"""Adopting a QEMU that another process launched and left running (a pod
daemon that died): the driver watches it through a pidfd and drives it over
QMP again.  tests/unit/fake_qemu.py stands in for QEMU, listening again when
its monitor's client goes away, as QEMU's ``server=on`` monitor does."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit import fake_qemu
from tests.unit.hypervisor.qemu.test_hotplug import config
from virtcontainers.errors import HypervisorError
from virtcontainers.host import proc as hostproc
from virtcontainers.hypervisor.base import VMState
from virtcontainers.hypervisor.devices import BlockDevice
from virtcontainers.hypervisor.qemu.driver import ADOPTED_EXIT_CODE, QemuHypervisor

LAUNCH_AND_DIE = """
import asyncio, os, pickle, sys
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor
async def main():
    vm = QemuHypervisor(sys.argv[1])
    await vm.create(pickle.loads(bytes.fromhex(sys.argv[2])))
    await vm.start(timeout=30)
    print(vm.pid, flush=True)
    os._exit(0)  # as a pod daemon killed with SIGKILL: no stop
asyncio.run(main())
"""


@pytest.fixture
def fake_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_QEMU_LOG", str(tmp_path / "qmp.jsonl"))
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text(f"#!{sys.executable}\n" + Path(fake_qemu.__file__).read_text())
    binary.chmod(0o755)
    return binary


def launched_by_a_dead_parent(binary: Path, tmp_path: Path) -> int:
    cfg = pickle.dumps(config(tmp_path)).hex()
    out = subprocess.run(
        [sys.executable, "-c", LAUNCH_AND_DIE, str(binary), cfg],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout.split()[0])


def test_a_vm_whose_parent_died_is_adopted_driven_and_stopped(
    tmp_path: Path, fake_binary: Path
) -> None:
    pid = launched_by_a_dead_parent(fake_binary, tmp_path)
    ref = hostproc.of(pid)
    assert ref is not None

    async def scenario() -> None:
        vm = QemuHypervisor(str(fake_binary))
        await vm.adopt(config(tmp_path), ref, timeout=10)
        assert vm.state is VMState.RUNNING and vm.pid == pid
        await vm.pause()
        await vm.resume()
        with pytest.raises(HypervisorError, match="reattached"):
            await vm.hotplug_device(BlockDevice("blk0", tmp_path / "vmlinux"))
        await vm.stop(timeout=5)
        assert await vm.wait() == ADOPTED_EXIT_CODE

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        hostproc.kill(ref)
    assert not hostproc.alive(ref)
    sent = [
        json.loads(line)["execute"] for line in (tmp_path / "qmp.jsonl").read_text().splitlines()
    ]
    assert sent[-3:] == ["stop", "cont", "quit"]


def test_a_vm_that_is_gone_cannot_be_adopted(tmp_path: Path, fake_binary: Path) -> None:
    pid = launched_by_a_dead_parent(fake_binary, tmp_path)
    ref = hostproc.of(pid)
    assert ref is not None and hostproc.kill(ref)

    async def scenario() -> None:
        vm = QemuHypervisor(str(fake_binary))
        with pytest.raises(HypervisorError, match="gone"):
            await vm.adopt(config(tmp_path), ref, timeout=10)
        assert vm.state is VMState.NEW

    for _ in range(100):
        if not hostproc.alive(ref):
            break
        asyncio.run(asyncio.sleep(0.05))
    asyncio.run(scenario())
