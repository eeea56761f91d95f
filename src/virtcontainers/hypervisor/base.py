"""The hypervisor interface: what a pod daemon needs from a VM.

One :class:`Hypervisor` instance drives one VM.  Its lifecycle::

    NEW --create--> CREATED --start--> RUNNING <--pause/resume--> PAUSED
                                          │                          │
                                          └──stop / VM exit──> STOPPED <┘

``create`` may be called again on a STOPPED instance to boot a fresh VM.
``stop`` on a STOPPED instance does nothing, so a caller that saw the VM exit
(``wait``) may still call ``stop`` unconditionally.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from virtcontainers import states
from virtcontainers.config import MAX_HOTPLUG_SLOTS, MAX_SOCKET_PATH
from virtcontainers.errors import ConfigError
from virtcontainers.ids import ID_PATTERN

_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
# How much of a VM's logs a launch error quotes, in bytes.
OUTPUT_TAIL = 4096
MAX_HOTPLUG_PORTS = MAX_HOTPLUG_SLOTS  # a pod asks for its slots in its config
DISK_FORMATS = ("raw", "qcow2")
# virtio-blk carries at most 20 bytes of serial.
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")


class HypervisorKind(enum.Enum):
    QEMU = "qemu"
    MOCK = "mock"


class Accelerator(enum.Enum):
    KVM = "kvm"
    TCG = "tcg"


class SharedFsKind(enum.Enum):
    """How a :class:`SharedFsDevice` reaches the guest."""

    VIRTIO_9P = "virtio-9p"  # in QEMU itself (-fsdev local)
    VIRTIO_FS = "virtio-fs"  # vhost-user: a virtiofsd process serves the directory


class VMState(states.Lifecycle):
    NEW = "new"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


states.register(
    VMState,
    "VM",
    {
        "new": "created",
        "created": "created running",
        "running": "paused stopped",
        "paused": "running stopped",
        "stopped": "created stopped",
    },
)


def check_id(field: str, value: str) -> None:
    """Raise :class:`ConfigError` unless *value* is a safe QEMU/qdev id."""
    if not ID_PATTERN.match(value):
        raise ConfigError(field, f"{value!r} must match {ID_PATTERN.pattern}")


def check_socket_path(field: str, path: Path) -> None:
    """Raise :class:`ConfigError` if *path* cannot be bound as a unix socket."""
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ConfigError(field, f"{path} is longer than {MAX_SOCKET_PATH} bytes (AF_UNIX limit)")


@dataclass(frozen=True)
class Device:
    """A device attached to the VM; ``id`` is unique within the VM."""

    id: str

    def __post_init__(self) -> None:
        check_id("device id", self.id)


@dataclass(frozen=True)
class BlockDevice(Device):
    """A disk image, raw or qcow2.  The first block device is the guest's /dev/vda.

    ``serial`` is what the guest's kernel shows for the disk
    (``/sys/block/vdX/serial``), so that it can find a hot-plugged disk by
    name rather than by the order of its arrival.  A qcow2 image is opened
    without its backing file, so an image cannot make QEMU read another file.
    """

    path: Path
    read_only: bool = True
    format: str = "raw"
    serial: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in DISK_FORMATS:
            raise ConfigError(
                f"device {self.id}", f"format {self.format!r} is not one of {DISK_FORMATS}"
            )
        if self.serial is not None and not _SERIAL_RE.match(self.serial):
            raise ConfigError(
                f"device {self.id}", f"serial {self.serial!r}: 1 to 20 of A-Z a-z 0-9 _ . -"
            )


@dataclass(frozen=True)
class SharedFsDevice(Device):
    """A host directory shared with the guest, mounted there by *mount_tag*.

    *kind* picks the transport: virtio-9p (QEMU serves the directory) or
    virtio-fs (a virtiofsd child serves it; the VM's RAM is then shared memory).
    """

    host_path: Path
    mount_tag: str
    kind: SharedFsKind = SharedFsKind.VIRTIO_9P

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mount_tag or len(self.mount_tag) > 31 or "," in self.mount_tag:
            raise ConfigError("mount_tag", f"{self.mount_tag!r}: 1 to 31 characters, no comma")


@dataclass(frozen=True)
class SerialPortDevice(Device):
    """A virtserialport named *name*; QEMU listens on the unix socket *socket_path*."""

    socket_path: Path
    name: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("serial port name", self.name)
        check_socket_path("serial port socket_path", self.socket_path)


@dataclass(frozen=True)
class NetDevice(Device):
    """A virtio-net NIC backed by an existing tap interface.

    With ``tap_fd`` QEMU is handed the tap's queue, opened by the caller (in
    the tap's network namespace, which QEMU need not see, and without the
    capability to open taps itself); else QEMU opens ``tap_name``.
    """

    tap_name: str
    mac: str
    tap_fd: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tap_name or len(self.tap_name) > 15 or "," in self.tap_name:
            raise ConfigError("tap_name", f"{self.tap_name!r}: 1 to 15 characters, no comma")
        if not _MAC_RE.match(self.mac):
            raise ConfigError("mac", f"{self.mac!r} is not a MAC address like 52:54:00:12:34:56")


@dataclass(frozen=True)
class MemoryFile:
    """Guest RAM kept in a file, as a VM template's is (see factory.py).

    ``shared``: the VM's writes reach the file, which then holds its RAM when
    it stops (a template being made).  Otherwise the file is mapped
    copy-on-write: the VM starts from its content and never changes it (a
    clone), and clones share the pages they have not written.
    """

    path: Path
    shared: bool


@dataclass(frozen=True, kw_only=True)
class VMConfig:
    """Everything needed to boot one VM.

    *run_dir* holds the VM's sockets and logs (``qmp.sock``, ``console.log``,
    ``agent.sock``, ``qemu.log``); it is created with mode 0700 if missing.
    *machine* ``None`` means the driver's default, *accelerator* ``None`` means
    detect.  *kernel_params* are appended to the driver's command line.

    *memory_file* keeps guest RAM in a file (:class:`MemoryFile`).
    *incoming* is a device state that ``save_state`` wrote: the VM resumes
    where the saved one stopped instead of booting.  Its devices must then be
    the saved VM's (same ids, same order); their host ends may differ.
    *hotplug_ports* is how many devices can be hot-plugged later (empty PCIe
    slots); ``None`` means the machine's default.  A VM with hot-plug slots
    also gives each cold-plugged NIC a slot of its own, so that every NIC can
    be unplugged.
    """

    vm_id: str
    kernel: Path
    initrd: Path
    run_dir: Path
    vcpus: int = 1
    memory_mib: int = 512
    kernel_params: tuple[str, ...] = ()
    machine: str | None = None
    accelerator: Accelerator | None = None
    devices: tuple[Device, ...] = ()
    memory_file: MemoryFile | None = None
    incoming: Path | None = None
    hotplug_ports: int | None = None

    def __post_init__(self) -> None:
        check_id("vm_id", self.vm_id)
        if self.hotplug_ports is not None and not 0 <= self.hotplug_ports <= MAX_HOTPLUG_PORTS:
            raise ConfigError(
                "hotplug_ports", f"{self.hotplug_ports}: must be between 0 and {MAX_HOTPLUG_PORTS}"
            )
        if not 1 <= self.vcpus <= 255:
            raise ConfigError("vcpus", f"{self.vcpus}: must be between 1 and 255")
        if self.memory_mib < 64:
            raise ConfigError("memory_mib", f"{self.memory_mib}: must be at least 64")
        for param in self.kernel_params:
            if not param or any(c.isspace() for c in param):
                raise ConfigError("kernel_params", f"{param!r}: one word per parameter")
        if self.incoming is not None and self.memory_file is not None and self.memory_file.shared:
            raise ConfigError(
                "memory_file",
                "a VM that resumes a saved state maps its memory file copy-on-write "
                "(shared=False): shared, it would change the saved VM's RAM",
            )
        ids = [d.id for d in self.devices]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError("devices", f"duplicate device ids {duplicates}")


@dataclass(frozen=True)
class Capabilities:
    """What the VM can do, honestly, for the machine type it runs on."""

    machine: str
    accelerator: Accelerator | None
    hotplug_block: bool
    hotplug_cpu: bool
    hotplug_memory: bool
    hotplug_net: bool
    hotplug_serial_port: bool
    shared_fs: str
    pause: bool


class Lifecycle:
    """One VM's current state (a :class:`VMState`); shared by every driver."""

    def __init__(self) -> None:
        self.vm_id = ""
        self.state = VMState.NEW

    @property
    def what(self) -> str:
        return f"VM {self.vm_id}" if self.vm_id else "VM"

    def require(self, operation: str, *allowed: VMState) -> None:
        """Raise :class:`StateError` unless the current state is one of *allowed*."""
        self.state.require(self.vm_id, operation, *allowed)

    def move(self, new: VMState) -> None:
        """Enter *new*; raises :class:`StateError` if the table forbids it."""
        self.state = self.state.moved_to(self.vm_id, new)


@runtime_checkable
class Hypervisor(Protocol):
    """One VM.  All coroutines must be awaited on the same event loop."""

    async def create(self, config: VMConfig) -> None:
        """Validate *config* and prepare the run directory; no process yet.

        Raises ConfigError (missing kernel, bad device, path too long) and
        StateError (not NEW or STOPPED).
        """

    def add_device(self, device: Device) -> None:
        """Cold-plug *device* before start; raises StateError after start."""

    async def start(self, timeout: float = 60) -> None:
        """Launch the VM as a child process and connect to its monitor.

        Raises VMLaunchError (with the VM output tail) if it exits or does not
        answer within *timeout*; nothing is left running in that case.
        """

    async def stop(self, timeout: float = 10) -> None:
        """Stop the VM (graceful, then SIGTERM, then SIGKILL) and clean up."""

    async def pause(self) -> None:
        """Freeze the vCPUs."""

    async def resume(self) -> None:
        """Continue a paused VM."""

    async def hotplug_device(self, device: Device) -> None:
        """Attach *device* to the running VM; HypervisorError where unsupported.

        A :class:`NetDevice`'s ``tap_fd`` is duplicated into the VM: the caller
        still owns (and closes) its own.
        """

    async def unplug_device(self, device_id: str, timeout: float = 60) -> None:
        """Detach a NIC or disk from the running VM and free its backend.

        Returns once the VM has let the device go (the guest releases a PCIe
        device when asked, which takes it a few seconds).  Raises
        NotFoundError for an unknown id, HypervisorError if the device cannot
        be unplugged (not a NIC or disk, or in a slot that cannot hot-plug) or the
        guest has not released it within *timeout* seconds (the device then
        stays; calling again asks again), StateError unless running.
        """

    async def wait(self) -> int:
        """Wait until the VM process exits and return its exit code."""

    async def save_state(self, path: Path, timeout: float = 60) -> None:
        """Pause the VM and write its device state to *path*, for ``VMConfig.incoming``.

        RAM in a shared :class:`MemoryFile` is left out: the file holds it.
        The VM stays paused; stop it afterwards.  Raises HypervisorError.
        """

    def console_path(self) -> Path:
        """The guest console log (bounded in size)."""

    def agent_socket_path(self) -> Path:
        """The host unix socket of the virtserialport named ``agent``."""

    def capabilities(self) -> Capabilities:
        """What this VM supports."""

    @property
    def pid(self) -> int | None:
        """The VM process id while it runs, else None."""

    @property
    def running(self) -> bool:
        """True while the VM process is alive (running or paused)."""

    @property
    def state(self) -> VMState:
        """The lifecycle state."""
