"""What a VM template is: the shape of the VM it was made of
(:class:`TemplateShape`, whose key says which pods it fits) and its record on
disk (:class:`Template`).  Values only: making one is :mod:`maker`'s, keeping
them :mod:`templates`' (see their docstrings and docs/factory.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtcontainers.config import ImagePaths, PodConfig
from virtcontainers.errors import ConfigError, TemplateError
from virtcontainers.hypervisor import (
    generation_id_machine,
    guest_kernel_cmdline,
    hypervisor_binary,
)
from virtcontainers.hypervisor.base import Accelerator, HypervisorKind, MemoryFile, VMConfig
from virtcontainers.hypervisor.devices import (
    BlockDevice,
    Device,
    GenerationIdDevice,
    SerialPortDevice,
    SharedFsDevice,
    SharedFsKind,
)

FORMAT = 3
"""Bumped when what a template holds, or how a clone starts from it, changes."""
HYPERVISOR = HypervisorKind.QEMU
"""Templates are QEMU's: a template is a QEMU migration stream and memory file."""
TEMPLATE_HOTPLUG_PORTS = 8
"""Empty PCIe slots of every template VM, hence of its clones: a clone's NICs
are hot-plugged into them after its restore, and its block volumes later.
Enough for a network namespace of 4 interfaces plus the 4 spare slots a pod
with one keeps; the guest loads the NIC and ext4 modules for them at boot."""
TEMPLATE_PARAM = "vc.template"
"""On the template VM's kernel command line: init.sh leaves the shared directory
unmounted (a guest that has mounted a 9p share cannot be saved)."""
AGENT_PORT_NAME = "agent"
TEMPLATE_MACHINE = generation_id_machine(HYPERVISOR)
"""Template VMs (and so clones) are of a machine type whose guests learn of
each restore through their VM generation id (QEMU: q35, while cold pods are
microvm)."""
GENERATION_ID_DEVICE = "vc-genid"
"""Every template VM and clone has a VM generation id, new at each launch:
a clone's kernel reseeds its random pool as it resumes."""
SHARED_FS_TAG = "vcshared"
KEY_LENGTH = 16
LOCK_FILE = "lock"
RECORD_FILE = "template.json"
Progress = Callable[[str], None]


def pod_devices(
    rootfs: Path, agent_socket: Path, shared_dir: Path, shared_fs: SharedFsKind
) -> tuple[Device, ...]:
    """The devices of every pod VM, in this order: booted cold, made a template,
    or cloned (a clone must have its template's devices; their host ends differ)."""
    return (
        BlockDevice("root", rootfs, read_only=True),
        SerialPortDevice("agent", agent_socket, AGENT_PORT_NAME),
        SharedFsDevice("shared", shared_dir, SHARED_FS_TAG, shared_fs),
    )


def _file_identity(what: str, path: Path) -> dict[str, object]:
    """A file as a template depends on it: a new build or upgrade changes one of these."""
    try:
        info = path.stat()
    except OSError as exc:
        raise TemplateError(f"the {what} {path} cannot be read: {exc.strerror}") from None
    return {
        "path": str(path),
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "ino": info.st_ino,
    }


def _hypervisor_binary() -> Path:
    try:
        return hypervisor_binary(HYPERVISOR)
    except ConfigError as exc:
        raise TemplateError(exc.reason) from None


@dataclass(frozen=True)
class TemplateShape:
    """Everything that shapes a pod VM, hence a template of it.

    Its :attr:`key` hashes these with the kernel command line as the QEMU
    driver renders it (the host's TSC frequency included) and the identity
    (path, size, mtime, inode) of every file the VM is made of: kernel,
    initrd, root image and the QEMU binary.
    """

    image: ImagePaths
    vcpus: int
    memory_mib: int
    kernel_params: tuple[str, ...]
    accelerator: Accelerator
    shared_fs: SharedFsKind = SharedFsKind.VIRTIO_9P
    machine: str = TEMPLATE_MACHINE
    hotplug_ports: int = TEMPLATE_HOTPLUG_PORTS

    @classmethod
    def for_pod(
        cls,
        config: PodConfig,
        image: ImagePaths,
        accelerator: Accelerator,
        shared_fs: SharedFsKind,
    ) -> TemplateShape:
        return cls(
            image=image,
            vcpus=config.resources.vcpus,
            memory_mib=config.resources.memory_mib,
            kernel_params=tuple(config.kernel_params),
            accelerator=accelerator,
            shared_fs=shared_fs,
        )

    @property
    def vm_kernel_params(self) -> tuple[str, ...]:
        """The template VM's own kernel parameters (a clone keeps them)."""
        return (TEMPLATE_PARAM, *self.kernel_params)

    def identity(self) -> dict[str, object]:
        """What the key hashes.  Raises TemplateError when a file is missing."""
        return {
            "format": FORMAT,
            "machine": self.machine,
            "hotplug_ports": self.hotplug_ports,
            "accelerator": self.accelerator.value,
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "cmdline": guest_kernel_cmdline(HYPERVISOR, self.accelerator, self.vm_kernel_params),
            "shared_fs": self.shared_fs.value,
            "devices": [
                *(d.id for d in pod_devices(Path(), Path(), Path(), self.shared_fs)),
                GENERATION_ID_DEVICE,
            ],
            "files": {
                "kernel": _file_identity("kernel", self.image.kernel),
                "initrd": _file_identity("initrd", self.image.initrd),
                "rootfs": _file_identity("root image", self.image.rootfs),
                "qemu": _file_identity("QEMU binary", _hypervisor_binary()),
            },
        }

    @property
    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]

    def describe(self) -> str:
        params = " ".join(self.kernel_params) or "none"
        return (
            f"{self.vcpus} vCPU, {self.memory_mib} MiB, kernel params: {params}, "
            f"image {self.image.rootfs.parent}, {self.accelerator.value}, {self.shared_fs.value}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.image.to_dict(),
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "kernel_params": list(self.kernel_params),
            "accelerator": self.accelerator.value,
            "shared_fs": self.shared_fs.value,
            "machine": self.machine,
            "hotplug_ports": self.hotplug_ports,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TemplateShape:
        """The shape :meth:`to_json` wrote.  Raises ValueError, KeyError,
        TypeError or ConfigError for anything else."""
        return cls(
            image=ImagePaths.from_dict(data["image"]),
            vcpus=_typed(data, "vcpus", int),
            memory_mib=_typed(data, "memory_mib", int),
            kernel_params=_strings(data, "kernel_params"),
            accelerator=Accelerator(data["accelerator"]),
            shared_fs=SharedFsKind(data["shared_fs"]),
            machine=_typed(data, "machine", str),
            hotplug_ports=_typed(data, "hotplug_ports", int),
        )

    def vm_config(
        self,
        vm_id: str,
        run_dir: Path,
        agent_socket: Path,
        shared_dir: Path,
        memory_file: MemoryFile,
        incoming: Path | None = None,
    ) -> VMConfig:
        """A VM of this shape: the template's (RAM shared into *memory_file*), or
        a clone's (RAM mapped copy-on-write from it, state loaded from *incoming*)."""
        return VMConfig(
            vm_id=vm_id,
            kernel=self.image.kernel,
            initrd=self.image.initrd,
            run_dir=run_dir,
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            kernel_params=self.vm_kernel_params,
            machine=self.machine,
            accelerator=self.accelerator,
            hotplug_ports=self.hotplug_ports,
            devices=(
                *pod_devices(self.image.rootfs, agent_socket, shared_dir, self.shared_fs),
                GenerationIdDevice(GENERATION_ID_DEVICE),
            ),
            memory_file=memory_file,
            incoming=incoming,
        )


@dataclass(frozen=True)
class Template:
    """A template on disk, as ``template.json`` describes it."""

    path: Path
    key: str
    shape: TemplateShape
    created_at: float
    boot_seconds: float
    """From the template VM's launch until its agent answered."""
    identity: Mapping[str, object] = field(default_factory=dict)
    automatic: bool = False
    """Made in the background for a pod that found none (not by ``virtc factory init``)."""

    @property
    def memory(self) -> Path:
        return self.path / "memory"

    @property
    def state(self) -> Path:
        return self.path / "state"

    def current(self) -> bool:
        """True while a pod of this shape would start from it (nothing it was
        made of has changed since)."""
        try:
            return self.shape.key == self.key
        except TemplateError:
            return False

    def disk_bytes(self) -> int:
        """What the template's files take (the memory file is sparse)."""
        total = 0
        for entry in (self.memory, self.state):
            with contextlib.suppress(OSError):
                total += entry.stat().st_blocks * 512
        return total

    def clone_config(
        self, vm_id: str, run_dir: Path, agent_socket: Path, shared_dir: Path
    ) -> VMConfig:
        """The VM of a pod that starts from this template."""
        memory = MemoryFile(self.memory, shared=False)
        return self.shape.vm_config(
            vm_id, run_dir, agent_socket, shared_dir, memory, incoming=self.state
        )

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "key": self.key,
            **self.shape.to_json(),
            "created_at": self.created_at,
            "boot_seconds": self.boot_seconds,
            "identity": dict(self.identity),
            "automatic": self.automatic,
        }

    @classmethod
    def load(cls, path: Path) -> Template:
        """Read ``<path>/template.json``.  Raises TemplateError if it is unusable."""
        try:
            data = json.loads((path / RECORD_FILE).read_text())
            if data.get("format") != FORMAT or data.get("key") != path.name:
                raise ValueError(f"format {data.get('format')!r}, key {data.get('key')!r}")
            automatic = data.get("automatic", False)
            if not isinstance(automatic, bool):
                raise ValueError(f"automatic is {automatic!r}")
            return cls(
                path=path,
                key=path.name,
                shape=TemplateShape.from_json(data),
                created_at=float(data["created_at"]),
                boot_seconds=float(data["boot_seconds"]),
                identity=_typed(data, "identity", dict),
                automatic=automatic,
            )
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            raise TemplateError(f"template {path} is unusable ({exc}); remove it") from None


def _typed(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} is {value!r}")
    return value


def _strings(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    values = _typed(data, name, list)
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name} is {values!r}")
    return tuple(values)
