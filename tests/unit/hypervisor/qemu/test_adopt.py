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
from typing import cast

import pytest

from tests.unit.hypervisor.qemu.test_hotplug import config
from virtcontainers.errors import HypervisorError
from virtcontainers.host import proc as hostproc
from virtcontainers.hypervisor.base import VMConfig, VMState
from virtcontainers.hypervisor.devices import BlockDevice, NetDevice
from virtcontainers.hypervisor.qemu.driver import ADOPTED_EXIT_CODE, QemuHypervisor
from virtcontainers.hypervisor.qemu.hotplug import RootPorts, query_root_ports
from virtcontainers.hypervisor.qemu.session import QmpSession

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


def launched_by_a_dead_parent(binary: Path, tmp_path: Path, vm: VMConfig | None = None) -> int:
    cfg = pickle.dumps(vm or config(tmp_path)).hex()
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
        with pytest.raises(HypervisorError, match="hot-plug ports"):
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


def test_an_adopted_vm_knows_its_root_ports_from_qemu_and_hot_plugs_again(
    tmp_path: Path, fake_binary: Path
) -> None:
    nic = NetDevice("net0", "vctap0", "52:54:00:12:34:56")
    pid = launched_by_a_dead_parent(
        fake_binary, tmp_path, config(tmp_path, hotplug_ports=2, devices=(nic,))
    )
    ref = hostproc.of(pid)
    assert ref is not None

    async def scenario() -> None:
        vm = QemuHypervisor(str(fake_binary))
        await vm.adopt(config(tmp_path, devices=(nic,)), ref, timeout=10)
        assert vm.capabilities().hotplug_net
        await vm.hotplug_device(BlockDevice("blk0", tmp_path / "vmlinux", serial="b0"))
        await vm.unplug_device("net0", timeout=5)
        await vm.hotplug_device(NetDevice("net1", "vctap1", "52:54:00:12:34:57"))
        await vm.hotplug_device(BlockDevice("blk1", tmp_path / "vmlinux", serial="b1"))
        with pytest.raises(HypervisorError, match="no free hot-plug slot"):
            await vm.hotplug_device(BlockDevice("blk2", tmp_path / "vmlinux", serial="b2"))
        await vm.stop(timeout=5)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        hostproc.kill(ref)
    sent = [json.loads(line) for line in (tmp_path / "qmp.jsonl").read_text().splitlines()]
    buses = {
        e["arguments"]["id"]: e["arguments"].get("bus")
        for e in sent
        if e["execute"] == "device_add"
    }
    # net0 was cold-plugged into vc-hp0: blk0 takes the next port, and the
    # port net0 leaves is the one net1 gets.
    assert buses == {"blk0": "vc-hp1", "net1": "vc-hp0", "blk1": "vc-hp2"}
    assert [e["arguments"] for e in sent if e["execute"] in ("device_del", "netdev_del")] == [
        {"id": "net0"},
        {"id": "net0"},
    ]


class AnswersQueryPci:
    """A QMP session that gives one answer to query-pci: what QEMU would send."""

    what = "VM 'hp'"

    def __init__(self, reply: object) -> None:
        self.reply = reply

    async def execute(self, cmd: str, args: object = None) -> object:
        assert cmd == "query-pci"
        return self.reply


def root_ports(reply: object) -> RootPorts:
    return asyncio.run(query_root_ports(cast(QmpSession, AnswersQueryPci(reply))))


def port(n: int, *children: str) -> dict[str, object]:
    return {"qdev_id": f"vc-hp{n}", "pci_bridge": {"devices": [{"qdev_id": c} for c in children]}}


def test_root_ports_are_read_from_query_pci() -> None:
    devices = [{"qdev_id": ""}, port(0, "net0"), port(1), port(2, "blk0"), {"qdev_id": "vsock"}]
    assert root_ports([{"bus": 0, "devices": devices}]) == RootPorts(
        3, {"net0": "vc-hp0", "blk0": "vc-hp2"}
    )
    assert root_ports([{"bus": 0, "devices": []}]) == RootPorts(0, {})


@pytest.mark.parametrize(
    "reply",
    [
        {"bus": 0},
        [{"bus": 0, "devices": "vc-hp0"}],
        [{"bus": 0, "devices": [port(0), port(2)]}],  # a gap: not ports we rendered
        [{"bus": 0, "devices": [{"qdev_id": "vc-hp0", "pci_bridge": {"devices": ["net0"]}}]}],
    ],
)
def test_a_query_pci_answer_that_is_not_ours_is_refused(reply: object) -> None:
    with pytest.raises(HypervisorError, match="QEMU"):
        root_ports(reply)
