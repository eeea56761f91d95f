"""The QEMU command line for one VM: :class:`QemuCommand` renders the argv.

Everything here is pure: a :class:`VMConfig`, an accelerator, a machine and
the devices in, a list of strings out.  :mod:`virtcontainers.hypervisor.qemu`
runs the result; the virtio-fs socket path comes from
:mod:`virtcontainers.hypervisor.virtiofsd`, which serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.base import (
    Accelerator,
    BlockDevice,
    Device,
    NetDevice,
    SerialPortDevice,
    SharedFsDevice,
    SharedFsKind,
    VMConfig,
)
from virtcontainers.hypervisor.confine import QEMU_SANDBOX
from virtcontainers.hypervisor.virtiofsd import virtiofs_devices, virtiofs_socket

DEFAULT_BINARY = "qemu-system-x86_64"
MEMORY_BACKEND_ID = "vc-mem"
MICROVM = "microvm"
Q35 = "q35"
MACHINES = (MICROVM, Q35)
DEFAULT_MACHINE = MICROVM
# Empty pcie-root-ports rendered on q35 so that devices can be hot-plugged.
Q35_HOTPLUG_PORTS = 4
VIRTIO_SERIAL_ID = "vc-vser"
BASE_KERNEL_PARAMS = (
    "console=ttyS0",
    "quiet",
    "panic=-1",
    "tsc=reliable",
    "no_timer_check",
    "rcupdate.rcu_expedited=1",
    "i8042.noaux=1",
    "8250.nr_uarts=1",
    "cryptomgr.notests",
)


def _opt(value: object) -> str:
    """Escape a value for QEMU's option syntax (a comma is written twice)."""
    return str(value).replace(",", ",,")


def _onoff(flag: bool) -> str:
    return "on" if flag else "off"


@dataclass(frozen=True)
class QemuCommand:
    """The QEMU command line for one VM, rendered by :meth:`argv`.

    *devices* are all devices to cold-plug, in order (the config's, those added
    with ``add_device``, and the agent port).
    """

    config: VMConfig
    accelerator: Accelerator
    machine: str
    devices: tuple[Device, ...]
    tsc_khz: int | None = None
    binary: str = DEFAULT_BINARY
    tcg_thread: str | None = None

    @property
    def qmp_socket(self) -> Path:
        return self.config.run_dir / "qmp.sock"

    def kernel_cmdline(self) -> str:
        params = list(BASE_KERNEL_PARAMS)
        if self.tsc_khz:
            params.insert(3, f"tsc_early_khz={self.tsc_khz}")
        if self.accelerator is Accelerator.TCG:
            # TCG does not execute speculatively, so Spectre-class mitigations
            # cost boot and run time without protecting anything (measured:
            # bare boot 3.21 s -> 2.96 s, median of 5). Under KVM they stay on.
            params.append("mitigations=off")
        params.extend(self.config.kernel_params)
        return " ".join(params)

    @property
    def shared_memory(self) -> bool:
        """vhost-user devices (virtio-fs) need guest RAM the backend can map."""
        return bool(virtiofs_devices(self.devices))

    def memory_args(self) -> list[str]:
        size = f"{self.config.memory_mib}M"
        if not self.shared_memory:
            return ["-m", size]
        backend = f"memory-backend-memfd,id={MEMORY_BACKEND_ID},size={size},share=on"
        return ["-m", size, "-object", backend]

    def machine_args(self) -> list[str]:
        memory = f",memory-backend={MEMORY_BACKEND_ID}" if self.shared_memory else ""
        if self.machine == MICROVM:
            return ["-M", f"microvm,pcie=on,rtc=on{memory}"]
        args = ["-M", f"q35{memory}"]
        for n in range(Q35_HOTPLUG_PORTS):
            args += ["-device", f"pcie-root-port,id=vc-hp{n},bus=pcie.0,chassis={n + 1}"]
        return args

    def accel_args(self) -> list[str]:
        if self.accelerator is Accelerator.KVM:
            return ["-accel", "kvm", "-cpu", "host"]
        # Measured: with 2 vCPUs on 2 host cores, single-threaded TCG boots faster.
        thread = self.tcg_thread or ("single" if self.config.vcpus > 1 else None)
        accel = "tcg" if thread is None else f"tcg,thread={thread}"
        return ["-accel", accel, "-cpu", "max"]

    def device_args(self) -> list[str]:
        args: list[str] = []
        if any(isinstance(d, SerialPortDevice) for d in self.devices):
            args += ["-device", f"virtio-serial-pci,id={VIRTIO_SERIAL_ID}"]
        for device in self.devices:
            args += render_device(device, self.config.run_dir)
        return args

    def passed_fds(self) -> tuple[int, ...]:
        """The fds that the argv names, which QEMU must inherit (tap queues)."""
        return tuple(
            d.tap_fd for d in self.devices if isinstance(d, NetDevice) and d.tap_fd is not None
        )

    def argv(self) -> list[str]:
        cfg = self.config
        return [
            self.binary,
            "-name", f"vc-{cfg.vm_id}",
            *self.machine_args(),
            *self.accel_args(),
            *self.memory_args(),
            "-smp", str(cfg.vcpus),
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-chardev", "stdio,id=vc-con,signal=off",
            "-serial", "chardev:vc-con",
            "-qmp", f"unix:{_opt(self.qmp_socket)},server=on,wait=off",
            "-sandbox", QEMU_SANDBOX,
            "-kernel", str(cfg.kernel),
            "-initrd", str(cfg.initrd),
            "-append", self.kernel_cmdline(),
            *self.device_args(),
        ]  # fmt: skip


def render_device(device: Device, run_dir: Path | None = None) -> list[str]:
    """The QEMU options that cold-plug *device*.

    A virtio-fs device needs *run_dir* (where its virtiofsd socket is).

    Raises ConfigError for a device type this driver does not know.
    """
    match device:
        case BlockDevice(id=ident, path=path, read_only=ro):
            return [
                "-drive", f"id={ident},file={_opt(path)},format=raw,if=none,read-only={_onoff(ro)}",
                "-device", f"virtio-blk-pci,drive={ident},id={ident}",
            ]  # fmt: skip
        case SharedFsDevice(id=ident, mount_tag=tag, kind=SharedFsKind.VIRTIO_FS):
            if run_dir is None:
                raise ConfigError(f"device {ident}", "a virtio-fs device needs the run directory")
            sock = virtiofs_socket(run_dir, device)
            return [
                "-chardev", f"socket,id={ident},path={_opt(sock)}",
                "-device",
                f"vhost-user-fs-pci,chardev={ident},tag={tag},queue-size=1024,id={ident}",
            ]  # fmt: skip
        case SharedFsDevice(id=ident, host_path=path, mount_tag=tag):
            return [
                "-fsdev", f"local,id={ident},path={_opt(path)},security_model=none",
                "-device", f"virtio-9p-pci,fsdev={ident},mount_tag={tag},id={ident}",
            ]  # fmt: skip
        case SerialPortDevice(id=ident, socket_path=path, name=name):
            return [
                "-chardev", f"socket,id={ident},path={_opt(path)},server=on,wait=off",
                "-device",
                f"virtserialport,bus={VIRTIO_SERIAL_ID}.0,chardev={ident},name={name},id={ident}",
            ]  # fmt: skip
        case NetDevice(id=ident, tap_name=tap, mac=mac, tap_fd=fd):
            backend = f"fd={fd}" if fd is not None else f"ifname={tap},script=no,downscript=no"
            return [
                "-netdev", f"tap,id={ident},{backend},vhost=off",
                "-device", f"virtio-net-pci,netdev={ident},mac={mac},id={ident}",
            ]  # fmt: skip
    raise ConfigError("device", f"{type(device).__name__} is not supported by QEMU")
