"""The QEMU command line for one VM: :class:`QemuCommand` renders the argv.

Everything here is pure: a :class:`VMConfig`, an accelerator, a machine and
the devices in, a list of strings out.  :mod:`virtcontainers.hypervisor.qemu.driver`
runs the result; the virtio-fs socket path comes from
:mod:`virtcontainers.hypervisor.qemu.virtiofsd`, which serves it.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.base import Accelerator, VMConfig
from virtcontainers.hypervisor.devices import (
    BlockDevice,
    Device,
    GenerationIdDevice,
    NetDevice,
    SerialPortDevice,
    SharedFsDevice,
    SharedFsKind,
)
from virtcontainers.hypervisor.qemu.confine import QEMU_SANDBOX
from virtcontainers.hypervisor.qemu.virtiofsd import virtiofs_devices, virtiofs_socket

DEFAULT_BINARY = "qemu-system-x86_64"
MEMORY_BACKEND_ID = "vc-mem"
MICROVM = "microvm"
Q35 = "q35"
MACHINES = (MICROVM, Q35)
DEFAULT_MACHINE = MICROVM
# Empty pcie-root-ports rendered on q35 so that devices can be hot-plugged.
Q35_HOTPLUG_PORTS = 4
HOTPLUG_PORT_PREFIX = "vc-hp"
# microvm's ACPI tables have no MCFG, so Linux finds no extended config space
# when it would ask the firmware (_OSC) for native PCIe hot-plug, asks for
# nothing, and leaves the root ports' slots without a driver.  The guest is
# told to drive them natively instead (pciehp is built into its kernel).
NATIVE_PCIE_PARAM = "pcie_ports=native"
VIRTIO_SERIAL_ID = "vc-vser"
# The TCG translation buffer, MiB (QEMU's default is 1 GiB): what a pod's
# guest translates fills it, and every page it filled stays in QEMU's PSS.
# An idle pod had filled 82 MiB of it; at 32 MiB (QEMU's own default before
# 5.2) it holds 31 MiB, and a cold start's first container comes ≈0.5 s
# later (its crun is translated after the buffer filled; docs/measurements.md).
TCG_TB_MIB = 32
BALLOON_ID = "vc-balloon"
TCG_IDLE_PARAMS = ("sysctl.vm.compaction_proactiveness=0", "nowatchdog", "psi=0")
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
    incoming_fd: int | None = None
    """The open saved state that ``-incoming fd:N`` reads (``VMConfig.incoming``)."""

    @property
    def qmp_socket(self) -> Path:
        return self.config.run_dir / "qmp.sock"

    def kernel_cmdline(self) -> str:
        extra = self.config.kernel_params
        if self.machine == MICROVM and self.port_ids():
            extra = (NATIVE_PCIE_PARAM, *extra)
        return kernel_cmdline(self.accelerator, self.tsc_khz, extra)

    @property
    def shared_memory(self) -> bool:
        """vhost-user devices (virtio-fs) need guest RAM the backend can map."""
        return bool(virtiofs_devices(self.devices))

    @property
    def memory_backend(self) -> bool:
        """Guest RAM is a named backend object, not QEMU's anonymous memory."""
        return self.shared_memory or self.config.memory_file is not None

    def memory_args(self) -> list[str]:
        size = f"{self.config.memory_mib}M"
        file = self.config.memory_file
        if file is not None:
            backend = (
                f"memory-backend-file,id={MEMORY_BACKEND_ID},size={size},"
                f"mem-path={_opt(file.path)},share={_onoff(file.shared)}"
            )
            return ["-m", size, "-object", backend]
        if not self.shared_memory:
            return ["-m", size]
        backend = f"memory-backend-memfd,id={MEMORY_BACKEND_ID},size={size},share=on"
        return ["-m", size, "-object", backend]

    def migration_args(self) -> list[str]:
        """A VM that resumes a saved state waits for it (``-incoming defer``): both
        ends must agree on ``x-ignore-shared``, which QEMU 7.2 takes over QMP only,
        and the driver then starts the load (``migrate-incoming``)."""
        return [] if self.incoming_fd is None else ["-incoming", "defer"]

    @property
    def incoming_uri(self) -> str:
        """Where ``migrate-incoming`` reads the saved state: the inherited fd."""
        if self.incoming_fd is None:
            raise ConfigError("incoming", "the VM resumes no saved state")
        return f"fd:{self.incoming_fd}"

    @property
    def spare_ports(self) -> int:
        """Empty PCIe root ports for devices hot-plugged later."""
        if self.config.hotplug_ports is not None:
            return self.config.hotplug_ports
        return Q35_HOTPLUG_PORTS if self.machine == Q35 else 0

    def cold_ports(self) -> dict[str, str]:
        """The root port of each cold-plugged NIC, by device id (none without spare ports).

        A NIC in a root port of its own can be unplugged like a hot-plugged one;
        the root bus itself cannot unplug anything.
        """
        if not self.spare_ports:
            return {}
        nics = [d.id for d in self.devices if isinstance(d, NetDevice)]
        return {ident: hotplug_port_id(n) for n, ident in enumerate(nics)}

    def port_ids(self) -> list[str]:
        """Every root port, in order: the cold-plugged NICs' first, then the spare ones."""
        count = len(self.cold_ports()) + self.spare_ports
        return [hotplug_port_id(n) for n in range(count)]

    def machine_args(self) -> list[str]:
        memory = f",memory-backend={MEMORY_BACKEND_ID}" if self.memory_backend else ""
        machine = f"microvm,pcie=on,rtc=on{memory}" if self.machine == MICROVM else f"q35{memory}"
        args = ["-M", machine]
        for n, port in enumerate(self.port_ids()):
            # Distinct slot numbers: the guest names its hot-plug slots by them.
            args += ["-device", f"pcie-root-port,id={port},bus=pcie.0,chassis={n + 1},slot={n}"]
        return args

    def accel_args(self) -> list[str]:
        if self.accelerator is Accelerator.KVM:
            return ["-accel", "kvm", "-cpu", "host"]
        # Measured: with 2 vCPUs on 2 host cores, single-threaded TCG boots faster.
        thread = self.tcg_thread or ("single" if self.config.vcpus > 1 else None)
        accel = f"tcg,tb-size={TCG_TB_MIB}"
        accel += "" if thread is None else f",thread={thread}"
        return ["-accel", accel, "-cpu", "max"]

    @property
    def free_page_reporting(self) -> bool:
        """The guest hands its free pages back (virtio-balloon free page
        reporting), so that pages it touched once and freed leave QEMU's RSS.

        Only for QEMU's own anonymous RAM: QEMU 7.2 discards reported pages of
        file-backed RAM by punching holes in the file, which for a clone's
        private copy of a template would zero its siblings' memory; and a
        template's devices must be its clones'."""
        return not self.memory_backend

    def device_args(self) -> list[str]:
        args: list[str] = []
        if any(isinstance(d, SerialPortDevice) for d in self.devices):
            args += ["-device", f"virtio-serial-pci,id={VIRTIO_SERIAL_ID}"]
        ports = self.cold_ports()
        for device in self.devices:
            args += render_device(device, self.config.run_dir, ports.get(device.id))
        # Last: the root disk stays first on the bus, where the guest finds it.
        if self.free_page_reporting:
            args += ["-device", f"virtio-balloon-pci,id={BALLOON_ID},free-page-reporting=on"]
        return args

    def passed_fds(self) -> tuple[int, ...]:
        """The fds that the argv names, which QEMU must inherit (tap queues, a saved state)."""
        taps = tuple(
            d.tap_fd for d in self.devices if isinstance(d, NetDevice) and d.tap_fd is not None
        )
        return taps if self.incoming_fd is None else (*taps, self.incoming_fd)

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
            *self.migration_args(),
        ]  # fmt: skip


def kernel_cmdline(accelerator: Accelerator, tsc_khz: int | None, extra: tuple[str, ...]) -> str:
    """The guest kernel's command line: the base parameters, the host's TSC
    frequency where known, what the accelerator calls for, then *extra*."""
    params = list(BASE_KERNEL_PARAMS)
    if tsc_khz:
        params.insert(3, f"tsc_early_khz={tsc_khz}")
    if accelerator is Accelerator.TCG:
        # TCG does not execute speculatively, so Spectre-class mitigations
        # cost boot and run time without protecting anything (measured:
        # bare boot 3.21 s -> 2.96 s, median of 5). Under KVM they stay on.
        params.append("mitigations=off")
        # Every guest wakeup is emulated: an idle guest's periodic kernel work
        # is most of an idle pod's host CPU.  Off: proactive compaction's
        # kcompactd (2 wakeups/s), the lockup watchdog, pressure (PSI)
        # averaging.  Measured: 1.11% -> 0.71% of a core per idle pod.
        params.extend(TCG_IDLE_PARAMS)
    params.extend(extra)
    return " ".join(params)


def blockdev_node(device: BlockDevice) -> dict[str, object]:
    """The block node that serves *device*, as blockdev-add takes it.

    The format is given, never probed, and a qcow2 image gets no backing
    file: what the image says cannot make QEMU open another file.
    """
    ro = device.read_only
    file = {"driver": _file_driver(device.path), "filename": str(device.path), "read-only": ro}
    node: dict[str, object] = {
        "driver": device.format,
        "node-name": device.id,
        "read-only": ro,
        "file": file,
    }
    if device.format == "qcow2":
        node["backing"] = None
    return node


def _file_driver(path: Path) -> str:
    """``host_device`` for a block device node (an LVM volume, a loop
    device), ``file`` for a regular file."""
    try:
        return "host_device" if stat.S_ISBLK(path.stat().st_mode) else "file"
    except OSError:
        return "file"  # QEMU says what is wrong with the path


def _disk_device(device: BlockDevice) -> str:
    serial = f",serial={device.serial}" if device.serial else ""
    return f"virtio-blk-pci,drive={device.id},id={device.id}{serial}"


def hotplug_port_id(n: int) -> str:
    return f"{HOTPLUG_PORT_PREFIX}{n}"


def render_device(device: Device, run_dir: Path | None = None, bus: str | None = None) -> list[str]:
    """The QEMU options that cold-plug *device*.

    A virtio-fs device needs *run_dir* (where its virtiofsd socket is).  A
    NIC goes on *bus* (a root port) if given.

    Raises ConfigError for a device type this driver does not know.
    """
    match device:
        case BlockDevice(id=ident, path=path, read_only=ro, format="raw"):
            return [
                "-drive", f"id={ident},file={_opt(path)},format=raw,if=none,read-only={_onoff(ro)}",
                "-device", _disk_device(device),
            ]  # fmt: skip
        case BlockDevice():
            # Only JSON says "no backing file" (null) to -blockdev.
            return ["-blockdev", json.dumps(blockdev_node(device)), "-device", _disk_device(device)]
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
        case GenerationIdDevice(id=ident):
            # guid=auto: a new id per launch; the saved state holds only where
            # the guest keeps it, so a restore writes this launch's id there.
            return ["-device", f"vmgenid,id={ident},guid=auto"]
        case SerialPortDevice(id=ident, socket_path=path, name=name):
            return [
                "-chardev", f"socket,id={ident},path={_opt(path)},server=on,wait=off",
                "-device",
                f"virtserialport,bus={VIRTIO_SERIAL_ID}.0,chardev={ident},name={name},id={ident}",
            ]  # fmt: skip
        case NetDevice(id=ident, tap_name=tap, mac=mac, tap_fd=fd):
            backend = f"fd={fd}" if fd is not None else f"ifname={tap},script=no,downscript=no"
            on_bus = f",bus={bus}" if bus is not None else ""
            return [
                "-netdev", f"tap,id={ident},{backend},vhost=off",
                "-device", f"virtio-net-pci,netdev={ident},mac={mac},id={ident}{on_bus}",
            ]  # fmt: skip
    raise ConfigError("device", f"{type(device).__name__} is not supported by QEMU")
