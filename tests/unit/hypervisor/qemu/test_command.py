"""QEMU argv rendering and create()-time validation (no QEMU is run)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from virtcontainers.errors import ConfigError, StateError
from virtcontainers.hypervisor.base import Accelerator, MemoryFile, VMConfig, VMState
from virtcontainers.hypervisor.devices import (
    BlockDevice,
    NetDevice,
    SerialPortDevice,
    SharedFsDevice,
)
from virtcontainers.hypervisor.qemu.command import (
    TCG_IDLE_PARAMS,
    TCG_TB_MIB,
    QemuCommand,
    render_device,
)
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor


def _config(tmp_path: Path, **kw: object) -> VMConfig:
    kernel = tmp_path / "vmlinux"
    initrd = tmp_path / "initrd.img"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    return VMConfig(vm_id="vm1", kernel=kernel, initrd=initrd, run_dir=tmp_path / "run", **kw)  # type: ignore[arg-type]


def _command(tmp_path: Path, **kw: object) -> QemuCommand:
    defaults: dict[str, object] = {
        "accelerator": Accelerator.TCG,
        "machine": "microvm",
        "devices": (),
    }
    defaults.update(kw)
    return QemuCommand(config=_config(tmp_path), **defaults)  # type: ignore[arg-type]


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_block_device() -> None:
    dev = BlockDevice("root", Path("/img/root.squashfs"))
    assert render_device(dev) == [
        "-drive", "id=root,file=/img/root.squashfs,format=raw,if=none,read-only=on",
        "-device", "virtio-blk-pci,drive=root,id=root",
    ]  # fmt: skip
    rw = render_device(BlockDevice("data", Path("/img/a,b.raw"), read_only=False))
    assert rw[1] == "id=data,file=/img/a,,b.raw,format=raw,if=none,read-only=off"


def test_shared_fs_device() -> None:
    dev = SharedFsDevice("fs0", Path("/srv/rootfs"), "rootfs")
    assert render_device(dev) == [
        "-fsdev", "local,id=fs0,path=/srv/rootfs,security_model=none",
        "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=rootfs,id=fs0",
    ]  # fmt: skip


def test_serial_port_device() -> None:
    dev = SerialPortDevice("p1", Path("/run/vc/p1.sock"), "logs")
    assert render_device(dev) == [
        "-chardev", "socket,id=p1,path=/run/vc/p1.sock,server=on,wait=off",
        "-device", "virtserialport,bus=vc-vser.0,chardev=p1,name=logs,id=p1",
    ]  # fmt: skip


def test_net_device() -> None:
    dev = NetDevice("eth0", "tap0", "52:54:00:12:34:56")
    assert render_device(dev) == [
        "-netdev", "tap,id=eth0,ifname=tap0,script=no,downscript=no,vhost=off",
        "-device", "virtio-net-pci,netdev=eth0,mac=52:54:00:12:34:56,id=eth0",
    ]  # fmt: skip
    with_fd = NetDevice("eth0", "tap0", "52:54:00:12:34:56", tap_fd=7)
    assert render_device(with_fd)[1] == "tap,id=eth0,fd=7,vhost=off"


def test_invalid_devices_rejected() -> None:
    with pytest.raises(ConfigError):
        NetDevice("eth0", "tap0", "not-a-mac")
    with pytest.raises(ConfigError):
        BlockDevice("bad,id", Path("/x"))
    with pytest.raises(ConfigError):
        SharedFsDevice("fs", Path("/x"), "")
    with pytest.raises(ConfigError, match="107"):
        SerialPortDevice("p", Path("/" + "x" * 120), "p")


def test_microvm_tcg_argv(tmp_path: Path) -> None:
    argv = _command(tmp_path, tsc_khz=2100000).argv()
    assert argv[0] == "qemu-system-x86_64"
    assert _pairs(argv, "-M") == ["microvm,pcie=on,rtc=on"]
    assert _pairs(argv, "-accel") == [f"tcg,tb-size={TCG_TB_MIB}"]
    assert _pairs(argv, "-cpu") == ["max"]
    assert _pairs(argv, "-m") == ["512M"]
    assert _pairs(argv, "-smp") == ["1"]
    assert "-daemonize" not in argv
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert flag in argv
    run = tmp_path / "run"
    assert _pairs(argv, "-qmp") == [f"unix:{run}/qmp.sock,server=on,wait=off"]
    assert _pairs(argv, "-sandbox") == [
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    ]
    append = _pairs(argv, "-append")[0].split()
    assert append[0] == "console=ttyS0"
    assert "tsc_early_khz=2100000" in append
    assert "tsc=reliable" in append
    assert "pcie-root-port" not in " ".join(argv)


def test_no_tsc_param_without_value(tmp_path: Path) -> None:
    append = _pairs(_command(tmp_path).argv(), "-append")[0]
    assert "tsc_early_khz" not in append


def test_kvm_uses_host_cpu(tmp_path: Path) -> None:
    argv = _command(tmp_path, accelerator=Accelerator.KVM).argv()
    assert _pairs(argv, "-accel") == ["kvm"]
    assert _pairs(argv, "-cpu") == ["host"]


def test_tcg_thread_option(tmp_path: Path) -> None:
    argv = _command(tmp_path, tcg_thread="single").argv()
    assert _pairs(argv, "-accel") == [f"tcg,tb-size={TCG_TB_MIB},thread=single"]


def test_q35_has_hotplug_ports(tmp_path: Path) -> None:
    argv = _command(tmp_path, machine="q35").argv()
    assert _pairs(argv, "-M") == ["q35"]
    ports = [d for d in _pairs(argv, "-device") if d.startswith("pcie-root-port")]
    assert len(ports) == 4


def test_virtio_serial_rendered_once(tmp_path: Path) -> None:
    devices = (
        SerialPortDevice("a", tmp_path / "a.sock", "agent"),
        SerialPortDevice("b", tmp_path / "b.sock", "logs"),
    )
    argv = _command(tmp_path, devices=devices).argv()
    assert _pairs(argv, "-device").count("virtio-serial-pci,id=vc-vser") == 1


def test_extra_kernel_params_appended(tmp_path: Path) -> None:
    cfg = _config(tmp_path, kernel_params=("root=/dev/vda", "ro"))
    cmd = QemuCommand(config=cfg, accelerator=Accelerator.TCG, machine="microvm", devices=())
    assert cmd.kernel_cmdline().endswith("root=/dev/vda ro")


def test_vmconfig_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vcpus"):
        _config(tmp_path, vcpus=0)
    with pytest.raises(ConfigError, match="memory"):
        _config(tmp_path, memory_mib=8)
    with pytest.raises(ConfigError, match="kernel_params"):
        _config(tmp_path, kernel_params=("a b",))
    with pytest.raises(ConfigError, match="duplicate"):
        _config(tmp_path, devices=(BlockDevice("d", tmp_path), BlockDevice("d", tmp_path)))
    with pytest.raises(ConfigError, match="vm_id"):
        VMConfig(vm_id="../x", kernel=tmp_path, initrd=tmp_path, run_dir=tmp_path)


def test_create_adds_agent_port_and_block_first(tmp_path: Path) -> None:
    root = tmp_path / "root.img"
    root.write_bytes(b"")
    vm = QemuHypervisor("true")
    cfg = _config(tmp_path, accelerator=Accelerator.TCG, devices=(BlockDevice("root", root),))
    asyncio.run(vm.create(cfg))
    assert vm.state is VMState.CREATED
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
    vm.add_device(SharedFsDevice("fs0", tmp_path, "rootfs"))
    argv = vm.command().argv()
    assert argv[0] == "true"
    devices = _pairs(argv, "-device")
    assert devices[0] == "virtio-serial-pci,id=vc-vser"
    assert devices[1] == "virtio-blk-pci,drive=root,id=root"
    assert devices[-2].endswith("name=agent,id=vc-agent")
    assert devices[-1].startswith("virtio-balloon-pci,")
    assert vm.agent_socket_path() == tmp_path / "run" / "agent.sock"
    assert vm.console_path() == tmp_path / "run" / "console.log"
    caps = vm.capabilities()
    assert not caps.hotplug_block and caps.hotplug_serial_port and caps.shared_fs == "virtio-9p"


def test_custom_agent_port_replaces_default(tmp_path: Path) -> None:
    port = SerialPortDevice("ag", tmp_path / "custom.sock", "agent")
    vm = QemuHypervisor("true")
    asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.TCG, devices=(port,))))
    assert vm.agent_socket_path() == tmp_path / "custom.sock"
    assert "vc-agent" not in " ".join(vm.command().argv())


def test_create_errors(tmp_path: Path) -> None:
    vm = QemuHypervisor("true")
    cfg = _config(tmp_path, accelerator=Accelerator.TCG)
    with pytest.raises(ConfigError, match="kernel"):
        asyncio.run(
            vm.create(
                VMConfig(
                    vm_id="x", kernel=tmp_path / "nope", initrd=cfg.initrd, run_dir=cfg.run_dir
                )
            )
        )
    with pytest.raises(ConfigError, match="machine"):
        asyncio.run(vm.create(_config(tmp_path, machine="pc", accelerator=Accelerator.TCG)))
    with pytest.raises(ConfigError, match="does not exist"):
        asyncio.run(vm.create(_config(tmp_path, devices=(BlockDevice("d", tmp_path / "no"),))))
    long_dir = tmp_path / ("d" * 100)
    with pytest.raises(ConfigError, match="AF_UNIX"):
        asyncio.run(
            vm.create(
                VMConfig(
                    vm_id="x",
                    kernel=cfg.kernel,
                    initrd=cfg.initrd,
                    run_dir=long_dir,
                    accelerator=Accelerator.TCG,
                )
            )
        )
    with pytest.raises(ConfigError, match="qemu binary"):
        asyncio.run(QemuHypervisor("no-such-qemu-binary").create(cfg))
    assert vm.state is VMState.NEW


def test_create_probes_the_accelerator_only_when_not_given_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe fails on this value, so a create that succeeds did not probe.
    monkeypatch.setenv("VC_ACCEL", "bogus")
    vm = QemuHypervisor("true")
    asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.KVM)))
    assert vm.command().accelerator is Accelerator.KVM
    with pytest.raises(ConfigError, match="VC_ACCEL"):
        asyncio.run(QemuHypervisor("true").create(_config(tmp_path)))


def test_qemu_state_rules_without_process(tmp_path: Path) -> None:
    vm = QemuHypervisor("true")
    with pytest.raises(StateError):
        vm.add_device(BlockDevice("d", tmp_path))
    with pytest.raises(StateError):
        asyncio.run(vm.start())
    asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.TCG)))
    for op in (vm.pause(), vm.resume(), vm.wait(), vm.stop()):
        with pytest.raises(StateError, match="created"):
            asyncio.run(op)
    with pytest.raises(ConfigError, match="already used"):
        vm.add_device(BlockDevice("d", tmp_path))
        vm.add_device(BlockDevice("d", tmp_path))
    assert vm.pid is None and not vm.running


def test_tcg_single_thread_by_default_with_several_vcpus(tmp_path: Path) -> None:
    cfg = _config(tmp_path, vcpus=2)
    cmd = QemuCommand(config=cfg, accelerator=Accelerator.TCG, machine="microvm", devices=())
    assert _pairs(cmd.argv(), "-accel") == [f"tcg,tb-size={TCG_TB_MIB},thread=single"]
    multi = QemuCommand(
        config=cfg, accelerator=Accelerator.TCG, machine="microvm", devices=(), tcg_thread="multi"
    )
    assert _pairs(multi.argv(), "-accel") == [f"tcg,tb-size={TCG_TB_MIB},thread=multi"]


def test_mitigations_are_off_only_under_tcg(tmp_path: Path) -> None:
    for accelerator, expected in ((Accelerator.TCG, True), (Accelerator.KVM, False)):
        config = VMConfig(
            vm_id="m",
            kernel=tmp_path / "k",
            initrd=tmp_path / "i",
            run_dir=tmp_path,
            accelerator=accelerator,
        )
        command = QemuCommand(config=config, accelerator=accelerator, machine="microvm", devices=())
        cmdline = command.kernel_cmdline()
        assert ("mitigations=off" in cmdline.split()) is expected
        for param in TCG_IDLE_PARAMS:
            assert (param in cmdline.split()) is expected


def test_free_page_reporting_only_for_anonymous_guest_ram(tmp_path: Path) -> None:
    balloon = "virtio-balloon-pci,id=vc-balloon,free-page-reporting=on"
    assert balloon in _pairs(_command(tmp_path).argv(), "-device")
    # A template's RAM file, or a clone's private copy of it: QEMU would punch
    # the reported pages out of the file, under the template's other clones.
    for shared in (True, False):
        config = _config(tmp_path, memory_file=MemoryFile(tmp_path / "memory", shared=shared))
        cmd = QemuCommand(config=config, accelerator=Accelerator.TCG, machine="microvm", devices=())
        assert not any("balloon" in d for d in _pairs(cmd.argv(), "-device"))


def test_devices_say_what_the_host_lacks(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    with pytest.raises(ConfigError, match=r"device d.*does not exist"):
        BlockDevice("d", tmp_path / "missing").check_host()
    with pytest.raises(ConfigError, match=r"device s.*is not a directory"):
        SharedFsDevice("s", tmp_path / "file", "tag").check_host()
    BlockDevice("d", tmp_path / "file").check_host()
    SharedFsDevice("s", tmp_path, "tag").check_host()
    SerialPortDevice("p", tmp_path / "p.sock", "port").check_host()  # made by QEMU itself
