"""The mock hypervisor's lifecycle rules, the factory, and what a VM of each
kind boots with on this host."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from virtcontainers.errors import (
    ConfigError,
    HypervisorError,
    NotFoundError,
    StateError,
    VMLaunchError,
)
from virtcontainers.hypervisor import (
    default_machine,
    guest_kernel_cmdline,
    hypervisor_binary,
    new_hypervisor,
)
from virtcontainers.hypervisor.accel import cached_host_tsc_khz
from virtcontainers.hypervisor.base import (
    Accelerator,
    Hypervisor,
    HypervisorKind,
    VMConfig,
    VMState,
)
from virtcontainers.hypervisor.devices import BlockDevice, NetDevice, SerialPortDevice
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.hypervisor.qemu.command import kernel_cmdline
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor


@pytest.fixture
def config(tmp_path: Path) -> VMConfig:
    (tmp_path / "k").write_bytes(b"")
    (tmp_path / "i").write_bytes(b"")
    return VMConfig(vm_id="m1", kernel=tmp_path / "k", initrd=tmp_path / "i", run_dir=tmp_path)


def test_factory() -> None:
    assert isinstance(new_hypervisor(HypervisorKind.MOCK), MockHypervisor)
    qemu = new_hypervisor(HypervisorKind.QEMU)
    assert isinstance(qemu, QemuHypervisor)
    assert isinstance(qemu, Hypervisor)
    assert isinstance(new_hypervisor(HypervisorKind.MOCK), Hypervisor)
    with pytest.raises(ConfigError):
        new_hypervisor(HypervisorKind.MOCK, binary="qemu")


def test_what_a_vm_of_each_kind_boots_with_on_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_machine(HypervisorKind.QEMU) == "microvm"
    assert default_machine(HypervisorKind.MOCK) == MockHypervisor().capabilities().machine
    cmdline = guest_kernel_cmdline(HypervisorKind.QEMU, Accelerator.TCG, ("vc.x",))
    assert cmdline == kernel_cmdline(Accelerator.TCG, cached_host_tsc_khz(), ("vc.x",))
    assert guest_kernel_cmdline(HypervisorKind.MOCK, Accelerator.TCG, ("a", "b")) == "a b"
    real = tmp_path / "qemu-7.2"
    real.write_bytes(b"")
    real.chmod(0o755)
    (tmp_path / "qemu-system-x86_64").symlink_to(real)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hypervisor_binary(HypervisorKind.QEMU) == real
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="qemu-system-x86_64 not found; install QEMU"):
        hypervisor_binary(HypervisorKind.QEMU)
    with pytest.raises(ConfigError, match="runs no binary"):
        hypervisor_binary(HypervisorKind.MOCK)


def test_lifecycle(config: VMConfig) -> None:
    async def scenario() -> None:
        vm = MockHypervisor()
        await vm.create(config)
        vm.add_device(BlockDevice("d", config.kernel))
        await vm.start()
        assert vm.running and vm.pid is None
        with pytest.raises(StateError, match="running"):
            await vm.start()
        with pytest.raises(StateError):
            vm.add_device(BlockDevice("e", config.kernel))
        await vm.pause()
        with pytest.raises(StateError, match="paused"):
            await vm.pause()
        await vm.resume()
        with pytest.raises(StateError):
            await vm.resume()
        await vm.hotplug_device(BlockDevice("h", config.kernel))
        await vm.stop()
        await vm.stop()
        assert vm.state is VMState.STOPPED
        assert await vm.wait() == 0
        names = [name for name, _ in vm.calls]
        assert names == ["create", "add_device", "start", "pause", "resume",
                         "hotplug_device", "stop", "exit"]  # fmt: skip

    asyncio.run(scenario())


def test_wait_returns_exit_code(config: VMConfig) -> None:
    async def scenario() -> int:
        vm = MockHypervisor()
        await vm.create(config)
        await vm.start()
        waiter = asyncio.create_task(vm.wait())
        await asyncio.sleep(0)
        vm.exit(3)
        return await waiter

    assert asyncio.run(scenario()) == 3


def test_operations_before_start(config: VMConfig) -> None:
    async def scenario() -> None:
        vm = MockHypervisor()
        with pytest.raises(StateError, match="new"):
            await vm.start()
        await vm.create(config)
        for op in (vm.pause(), vm.resume(), vm.wait(), vm.stop(),
                   vm.hotplug_device(BlockDevice("d", config.kernel))):  # fmt: skip
            with pytest.raises(StateError, match="created"):
                await op

    asyncio.run(scenario())


def test_fail_start_and_no_hotplug(config: VMConfig) -> None:
    async def scenario() -> None:
        vm = MockHypervisor(hotplug=False)
        await vm.create(config)
        vm.fail_start = "kernel panic"
        with pytest.raises(VMLaunchError, match="kernel panic"):
            await vm.start()
        assert vm.state is VMState.CREATED
        vm.fail_start = None
        await vm.start()
        with pytest.raises(HypervisorError, match="not supported"):
            await vm.hotplug_device(BlockDevice("d", config.kernel))
        assert not vm.capabilities().hotplug_block

    asyncio.run(scenario())


def test_missing_kernel(config: VMConfig, tmp_path: Path) -> None:
    bad = VMConfig(vm_id="m1", kernel=tmp_path / "nope", initrd=config.initrd, run_dir=tmp_path)
    with pytest.raises(ConfigError, match="kernel"):
        asyncio.run(MockHypervisor().create(bad))


def test_nics_keep_their_taps_open_while_plugged_as_qemu_would(config: VMConfig) -> None:
    boot_r, boot_w = os.pipe()
    hot_r, hot_w = os.pipe()

    def write_end_open(read_end: int) -> bool:
        os.set_blocking(read_end, False)
        try:
            return os.read(read_end, 1) != b""
        except BlockingIOError:
            return True  # no data, and a writer still holds the pipe

    async def scenario() -> None:
        vm = MockHypervisor()
        boot = NetDevice("net0", "tap0", "02:00:00:00:00:01", tap_fd=boot_w)
        await vm.create(replace(config, devices=(boot,)))
        await vm.start()
        await vm.hotplug_device(NetDevice("net1", "tap1", "02:00:00:00:00:02", tap_fd=hot_w))
        os.close(boot_w)  # the daemon closes its copies; the "VM" holds its own
        os.close(hot_w)
        assert write_end_open(boot_r) and write_end_open(hot_r)
        with pytest.raises(ConfigError, match="already used"):
            await vm.hotplug_device(NetDevice("net1", "tap1", "02:00:00:00:00:02"))
        await vm.unplug_device("net1")
        assert not write_end_open(hot_r)
        await vm.unplug_device("net0")
        with pytest.raises(NotFoundError):
            await vm.unplug_device("net0")
        await vm.hotplug_device(BlockDevice("disk", config.kernel))
        await vm.unplug_device("disk")
        await vm.hotplug_device(SerialPortDevice("port", config.run_dir / "port.sock", "port"))
        with pytest.raises(HypervisorError, match="cannot be unplugged"):
            await vm.unplug_device("port")
        await vm.stop()
        assert not write_end_open(boot_r)

    try:
        asyncio.run(scenario())
    finally:
        os.close(boot_r)
        os.close(hot_r)
