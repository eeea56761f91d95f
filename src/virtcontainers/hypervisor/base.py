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

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from virtcontainers import states
from virtcontainers.config import MAX_HOTPLUG_SLOTS
from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.devices import Device, check_id, moved_device, moved_path
from virtcontainers.records import ProcessRef

# How much of a VM's logs a launch error quotes, in bytes.
OUTPUT_TAIL = 4096
# Linux waits 5 s after an unplug request before it powers a slot off, and a
# loaded TCG guest takes longer still.
UNPLUG_TIMEOUT = 60.0
MAX_HOTPLUG_PORTS = MAX_HOTPLUG_SLOTS  # a pod asks for its slots in its config


class HypervisorKind(enum.Enum):
    QEMU = "qemu"
    MOCK = "mock"


class Accelerator(enum.Enum):
    KVM = "kvm"
    TCG = "tcg"


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


@dataclass(frozen=True)
class MemoryFile:
    """Guest RAM kept in a file, as a VM template's is (see factory/).

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

    def relocated(self, moves: Mapping[Path, Path], vm_id: str) -> VMConfig:
        """This VM serving *vm_id*, its run directory and devices' paths
        followed through the renamed directories *moves* (old to new)."""
        return dataclasses.replace(
            self,
            vm_id=vm_id,
            run_dir=moved_path(self.run_dir, moves),
            devices=tuple(moved_device(d, moves) for d in self.devices),
        )

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

    async def adopt(self, config: VMConfig, process: ProcessRef, timeout: float = 60) -> None:
        """Take over a running VM that another process launched (*process*, with
        *config* as it was launched), as :meth:`start` would have left it.

        Raises HypervisorError when the VM is gone or does not answer.
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

    async def unplug_device(self, device_id: str, timeout: float = UNPLUG_TIMEOUT) -> None:
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

    def relocate(self, moves: Mapping[Path, Path], vm_id: str) -> None:
        """The running VM's directories were renamed (each key to its value,
        e.g. its run directory) and it now serves *vm_id*: follow them.  The
        VM keeps its open files and connections; paths are used anew only."""

    def capabilities(self) -> Capabilities:
        """What this VM supports."""

    @property
    def pid(self) -> int | None:
        """The VM process id while it runs, else None."""

    @property
    def running(self) -> bool:
        """True while the VM process is alive (running or paused)."""

    @property
    def vcpus_running(self) -> bool:
        """True while the VM process is alive and its vCPUs run.

        False once they are paused, whoever paused them: :meth:`pause`, or
        someone behind the pod's back (another monitor client, or the VM
        itself, as QEMU does on an I/O error).  The driver keeps it as the VM
        reports each change, so reading it asks the VM nothing.
        """

    @property
    def state(self) -> VMState:
        """The lifecycle state."""
