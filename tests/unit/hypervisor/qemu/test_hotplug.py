"""NIC hot-plug and unplug by the QEMU driver, against a fake QEMU at the QMP socket.

The driver launches tests/unit/fake_qemu.py in QEMU's place (same argv, same
confinement) and speaks QMP to it: the commands, the fd passed with
SCM_RIGHTS and the DEVICE_DELETED events cross a real socket.  What QEMU
itself does with them is the integration tests' part (test_pod_hotplug.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from virtcontainers.errors import ConfigError, HypervisorError, NotFoundError
from virtcontainers.hypervisor.base import Accelerator, VMConfig
from virtcontainers.hypervisor.devices import BlockDevice, NetDevice, SerialPortDevice
from virtcontainers.hypervisor.qemu.command import QemuCommand
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor

MAC = "02:00:00:00:00:01"
OTHER_MAC = "02:00:00:00:00:02"


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A descriptor to stand in for a tap queue (the fake only looks at its inode)."""
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def commands(log: Path, *names: str) -> list[dict[str, Any]]:
    """The commands the fake received, those named (all but the handshake if none)."""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    if names:
        return [e for e in entries if e["execute"] in names]
    return [e for e in entries if e["execute"] != "quit"]


def config(tmp_path: Path, **kw: Any) -> VMConfig:
    for name in ("vmlinux", "initrd.img"):
        (tmp_path / name).write_bytes(b"")
    return VMConfig(
        vm_id="hp",
        kernel=tmp_path / "vmlinux",
        initrd=tmp_path / "initrd.img",
        run_dir=tmp_path / "run",
        accelerator=Accelerator.TCG,
        **kw,
    )


@asynccontextmanager
async def running(binary: Path, cfg: VMConfig) -> AsyncIterator[QemuHypervisor]:
    vm = QemuHypervisor(str(binary))
    await vm.create(cfg)
    await vm.start(timeout=30)
    try:
        yield vm
    finally:
        await vm.stop(timeout=5)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


# -- the command line ---------------------------------------------------------


def _argv(tmp_path: Path, machine: str = "microvm", **kw: Any) -> list[str]:
    devices = kw.pop("devices", ())
    command = QemuCommand(config(tmp_path, **kw), Accelerator.TCG, machine, devices)
    return command.argv()


def _devices(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]


def test_a_vm_with_hotplug_ports_puts_each_nic_in_a_root_port_of_its_own(tmp_path: Path) -> None:
    nic = NetDevice("net0", "tap0", MAC, tap_fd=9)
    argv = _argv(tmp_path, hotplug_ports=2, devices=(nic,))
    ports = [d for d in _devices(argv) if d.startswith("pcie-root-port")]
    assert ports == [
        f"pcie-root-port,id=vc-hp{n},bus=pcie.0,chassis={n + 1},slot={n}" for n in range(3)
    ]
    assert f"virtio-net-pci,netdev=net0,mac={MAC},id=net0,bus=vc-hp0" in _devices(argv)
    # microvm's firmware does not hand PCIe hot-plug to the guest: the guest takes it.
    assert "pcie_ports=native" in argv[argv.index("-append") + 1].split()


def test_a_vm_without_hotplug_ports_keeps_its_nics_on_the_root_bus(tmp_path: Path) -> None:
    argv = _argv(tmp_path, devices=(NetDevice("net0", "tap0", MAC, tap_fd=9),))
    assert not [d for d in _devices(argv) if d.startswith("pcie-root-port")]
    assert f"virtio-net-pci,netdev=net0,mac={MAC},id=net0" in _devices(argv)
    assert "pcie_ports" not in argv[argv.index("-append") + 1]


def test_q35_has_its_ports_and_needs_no_native_param(tmp_path: Path) -> None:
    argv = _argv(tmp_path, machine="q35")
    assert len([d for d in _devices(argv) if d.startswith("pcie-root-port")]) == 4
    assert "pcie_ports" not in argv[argv.index("-append") + 1]


def test_hotplug_ports_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hotplug_ports"):
        config(tmp_path, hotplug_ports=17)


# -- hot-plug and unplug over QMP ---------------------------------------------


def test_a_nic_is_hot_plugged_with_its_tap_fd_passed_over_qmp(
    tmp_path: Path, fake_binary: Path, qmp_log: Path, pipe: tuple[int, int]
) -> None:
    async def scenario() -> None:
        async with running(fake_binary, config(tmp_path, hotplug_ports=2)) as vm:
            assert vm.capabilities().hotplug_net
            await vm.hotplug_device(NetDevice("net1", "vc0123456789a1", MAC, tap_fd=pipe[0]))

    run(scenario())
    st = os.fstat(pipe[0])
    assert commands(qmp_log) == [
        {"execute": "qmp_capabilities", "arguments": {}},
        {"execute": "getfd", "arguments": {"fdname": "net1-tap"}, "fd": [st.st_dev, st.st_ino]},
        {
            "execute": "netdev_add",
            "arguments": {"type": "tap", "id": "net1", "vhost": False, "fd": "net1-tap"},
        },
        {
            "execute": "device_add",
            "arguments": {
                "driver": "virtio-net-pci",
                "netdev": "net1",
                "mac": MAC,
                "id": "net1",
                "bus": "vc-hp0",
            },
        },
    ]
    os.fstat(pipe[0])  # the caller's own fd stays open: QEMU got a copy


def test_unplug_waits_for_the_guest_then_frees_the_netdev_and_the_slot(
    tmp_path: Path, fake_binary: Path, qmp_log: Path, pipe: tuple[int, int]
) -> None:
    boot_nic = NetDevice("net0", "vc0123456789a0", MAC, tap_fd=pipe[0])

    async def scenario() -> None:
        async with running(
            fake_binary, config(tmp_path, hotplug_ports=1, devices=(boot_nic,))
        ) as vm:
            await vm.unplug_device("net0")  # cold-plugged, in a root port: it comes out too
            second = NetDevice("net1", "vc0123456789a1", OTHER_MAC, tap_fd=pipe[0])
            third = NetDevice("net2", "vc0123456789a2", MAC, tap_fd=pipe[0])
            await vm.hotplug_device(second)  # into the slot net0 left
            await vm.hotplug_device(third)
            with pytest.raises(HypervisorError, match="no free hot-plug slot"):
                await vm.hotplug_device(NetDevice("net3", "vc0123456789a3", MAC, tap_fd=pipe[0]))
            await vm.unplug_device("net1")
            with pytest.raises(NotFoundError, match="device 'net1' not found"):
                await vm.unplug_device("net1")
            # The id is free again once its NIC is gone.
            await vm.hotplug_device(NetDevice("net1", "vc0123456789a1", OTHER_MAC, tap_fd=pipe[0]))

    run(scenario())
    unplugs = [
        (c["execute"], c["arguments"]["id"]) for c in commands(qmp_log, "device_del", "netdev_del")
    ]
    assert unplugs == [
        ("device_del", "net0"),
        ("netdev_del", "net0"),
        ("device_del", "net1"),
        ("netdev_del", "net1"),
    ]
    buses = [c["arguments"]["bus"] for c in commands(qmp_log, "device_add")]
    assert buses == ["vc-hp0", "vc-hp1", "vc-hp0"]


def test_a_guest_that_does_not_release_the_nic_is_a_clear_error_and_the_nic_stays(
    tmp_path: Path,
    fake_binary: Path,
    qmp_log: Path,
    pipe: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_QEMU_UNPLUG", "never")

    async def scenario() -> None:
        async with running(fake_binary, config(tmp_path, hotplug_ports=1)) as vm:
            await vm.hotplug_device(NetDevice("net1", "vc0123456789a1", MAC, tap_fd=pipe[0]))
            with pytest.raises(HypervisorError, match=r"did not release device net1 within 0\.3s"):
                await vm.unplug_device("net1", timeout=0.3)
            # Asked again while the first request is pending: still waiting, not an error.
            with pytest.raises(HypervisorError, match="still plugged"):
                await vm.unplug_device("net1", timeout=0.3)
            with pytest.raises(ConfigError, match="already used"):
                await vm.hotplug_device(NetDevice("net1", "vc0123456789a1", MAC, tap_fd=pipe[0]))

    run(scenario())
    assert not commands(qmp_log, "netdev_del")


@pytest.mark.parametrize(
    ("failing", "undo"),
    [("netdev_add", "closefd"), ("device_add", "netdev_del")],
)
def test_a_failed_hotplug_undoes_its_first_steps(
    tmp_path: Path,
    fake_binary: Path,
    qmp_log: Path,
    pipe: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
    undo: str,
) -> None:
    monkeypatch.setenv("FAKE_QEMU_FAIL", failing)

    async def scenario() -> None:
        async with running(fake_binary, config(tmp_path, hotplug_ports=1)) as vm:
            nic = NetDevice("net1", "vc0123456789a1", MAC, tap_fd=pipe[0])
            with pytest.raises(HypervisorError, match=f"QMP {failing} failed"):
                await vm.hotplug_device(nic)
            with pytest.raises(NotFoundError):
                await vm.unplug_device("net1")

    run(scenario())
    assert [c["execute"] for c in commands(qmp_log)][-2:] == [failing, undo]


def test_what_cannot_be_hot_plugged_or_unplugged_is_refused(
    tmp_path: Path, fake_binary: Path, qmp_log: Path, pipe: tuple[int, int]
) -> None:
    boot_nic = NetDevice("net0", "vc0123456789a0", MAC, tap_fd=pipe[0])
    port = SerialPortDevice("port", tmp_path / "port.sock", "port")

    async def scenario() -> None:
        async with running(fake_binary, config(tmp_path, devices=(boot_nic, port))) as vm:
            assert not vm.capabilities().hotplug_net
            nic = NetDevice("net1", "vc0123456789a1", OTHER_MAC, tap_fd=pipe[0])
            with pytest.raises(HypervisorError, match="without hot-plug ports"):
                await vm.hotplug_device(nic)
            with pytest.raises(HypervisorError, match="only NICs and disks in a PCIe root port"):
                await vm.unplug_device("net0")  # on the root bus: no slot to empty
            with pytest.raises(HypervisorError, match="only NICs and disks"):
                await vm.unplug_device("port")
            with pytest.raises(NotFoundError):
                await vm.unplug_device("nothing")
            disk = BlockDevice("disk", tmp_path / "vmlinux")
            with pytest.raises(HypervisorError, match="not supported on microvm"):
                await vm.hotplug_device(disk)

    run(scenario())
    assert not commands(qmp_log, "device_del", "netdev_add")


def test_a_disk_is_hot_plugged_into_a_root_port_and_unplugged_with_its_node(
    tmp_path: Path, fake_binary: Path, qmp_log: Path
) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")

    async def scenario() -> None:
        async with running(fake_binary, config(tmp_path, hotplug_ports=1)) as vm:
            assert vm.capabilities().hotplug_block
            await vm.hotplug_device(BlockDevice("vol1", disk, format="qcow2", serial="vol1"))
            await vm.unplug_device("vol1")

    run(scenario())
    plugged = commands(qmp_log, "blockdev-add", "device_add", "device_del", "blockdev-del")
    assert [c["execute"] for c in plugged] == [
        "blockdev-add", "device_add", "device_del", "blockdev-del",
    ]  # fmt: skip
    assert plugged[0]["arguments"]["backing"] is None
    assert plugged[1]["arguments"] == {
        "driver": "virtio-blk-pci", "drive": "vol1", "id": "vol1", "bus": "vc-hp0",
        "serial": "vol1",
    }  # fmt: skip
    assert plugged[3]["arguments"] == {"node-name": "vol1"}
