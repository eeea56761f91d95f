"""VM templates: a pod VM booted once and saved, which pods start from as clones.

A template is made by booting a pod VM whose RAM is a file mapped shared,
waiting until its agent answers, and saving its device state (a QEMU
migration stream that leaves the RAM out: ``x-ignore-shared``).  A pod then
starts by launching QEMU on the same file mapped copy-on-write and loading
that state with ``-incoming``: the clone resumes where the template stopped,
and the agent gives it the pod's identity (``init_clone``).  Clones share the
template's pages until they write them; the template never changes.

A template fits only VMs of its exact shape: the key of its directory is a
hash of everything that shapes it (:class:`TemplateShape`), so a changed
image, VM size, kernel command line, accelerator or QEMU binary finds no
template and boots cold (``boot="auto"``), or fails clearly
(``boot="template"``).  See docs/factory.md.

Layout of the factory directory (``$VC_FACTORY_DIR``, else ``<run root>/factory``)::

    .lock                  flock: one builder (or destroyer) at a time
    <key>/                 one template (0700)
        template.json      what it was made for (Template), when, and how long it took
        memory             guest RAM: the template VM's, written through; clones map it privately
        state              the device state (RAM left out)
        console.log        the template VM's console, for diagnosis
        lock               flock: shared while a clone loads the template, exclusive to remove it
    .build-<key>-<pid>/    a template being made, renamed to <key> when it is complete
    .dead-<key>-<pid>/     a template being removed
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtcontainers.config import ImagePaths, PodConfig
from virtcontainers.errors import ConfigError, TemplateError
from virtcontainers.hypervisor.accel import cached_host_tsc_khz
from virtcontainers.hypervisor.base import Accelerator, MemoryFile, VMConfig
from virtcontainers.hypervisor.devices import (
    BlockDevice,
    Device,
    SerialPortDevice,
    SharedFsDevice,
    SharedFsKind,
)
from virtcontainers.hypervisor.qemu.command import DEFAULT_BINARY, DEFAULT_MACHINE, kernel_cmdline
from virtcontainers.store import run_root

FORMAT = 2
"""Bumped when what a template holds, or how a clone starts from it, changes."""
TEMPLATE_HOTPLUG_PORTS = 8
"""Empty PCIe slots of every template VM, hence of its clones: a clone's NICs
are hot-plugged into them after its restore, and its block volumes later.
Enough for a network namespace of 4 interfaces plus the 4 spare slots a pod
with one keeps; the guest loads the NIC and ext4 modules for them at boot."""
ENV_FACTORY_DIR = "VC_FACTORY_DIR"
TEMPLATE_PARAM = "vc.template"
"""On the template VM's kernel command line: init.sh leaves the shared directory
unmounted (a guest that has mounted a 9p share cannot be saved)."""
AGENT_PORT_NAME = "agent"
SHARED_FS_TAG = "vcshared"
TEMPLATE_VM_ID = "vc-template"
BUILD_TIMEOUT = 300.0
SAVE_TIMEOUT = 120.0
KEY_LENGTH = 16
LOCK_FILE = "lock"
RECORD_FILE = "template.json"
Progress = Callable[[str], None]


def factory_dir(root: Path | None = None) -> Path:
    """``$VC_FACTORY_DIR``, else ``factory`` under the run root (*root*, else the default)."""
    env = os.environ.get(ENV_FACTORY_DIR)
    if env:
        return Path(env)
    return (root if root is not None else run_root()) / "factory"


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


def _qemu_binary() -> Path:
    found = shutil.which(DEFAULT_BINARY)
    if found is None:
        raise TemplateError(f"{DEFAULT_BINARY} not found; install QEMU")
    return Path(found).resolve()


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
    machine: str = DEFAULT_MACHINE
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
            "cmdline": kernel_cmdline(
                self.accelerator, cached_host_tsc_khz(), self.vm_kernel_params
            ),
            "shared_fs": self.shared_fs.value,
            "devices": [d.id for d in pod_devices(Path(), Path(), Path(), self.shared_fs)],
            "files": {
                "kernel": _file_identity("kernel", self.image.kernel),
                "initrd": _file_identity("initrd", self.image.initrd),
                "rootfs": _file_identity("root image", self.image.rootfs),
                "qemu": _file_identity("QEMU binary", _qemu_binary()),
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
            devices=pod_devices(self.image.rootfs, agent_socket, shared_dir, self.shared_fs),
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
        shape = self.shape
        return {
            "format": FORMAT,
            "key": self.key,
            "image": shape.image.to_dict(),
            "vcpus": shape.vcpus,
            "memory_mib": shape.memory_mib,
            "kernel_params": list(shape.kernel_params),
            "accelerator": shape.accelerator.value,
            "shared_fs": shape.shared_fs.value,
            "machine": shape.machine,
            "hotplug_ports": shape.hotplug_ports,
            "created_at": self.created_at,
            "boot_seconds": self.boot_seconds,
            "identity": dict(self.identity),
        }

    @classmethod
    def load(cls, path: Path) -> Template:
        """Read ``<path>/template.json``.  Raises TemplateError if it is unusable."""
        try:
            data = json.loads((path / RECORD_FILE).read_text())
            if data.get("format") != FORMAT or data.get("key") != path.name:
                raise ValueError(f"format {data.get('format')!r}, key {data.get('key')!r}")
            shape = TemplateShape(
                image=ImagePaths.from_dict(data["image"]),
                vcpus=_typed(data, "vcpus", int),
                memory_mib=_typed(data, "memory_mib", int),
                kernel_params=_strings(data, "kernel_params"),
                accelerator=Accelerator(data["accelerator"]),
                shared_fs=SharedFsKind(data["shared_fs"]),
                machine=_typed(data, "machine", str),
                hotplug_ports=_typed(data, "hotplug_ports", int),
            )
            return cls(
                path=path,
                key=path.name,
                shape=shape,
                created_at=float(data["created_at"]),
                boot_seconds=float(data["boot_seconds"]),
                identity=_typed(data, "identity", dict),
            )
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            raise TemplateError(f"template {path} is unusable ({exc}); remove it") from None


def _check_private(root: Path) -> None:
    """Whoever can replace a template's files controls every clone's guest: the
    factory directory must be ours, and nobody else's to write.  Raises
    FileNotFoundError when it does not exist, TemplateError otherwise."""
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise TemplateError(f"the factory directory {root} is not a directory")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise TemplateError(
            f"the factory directory {root} belongs to uid {info.st_uid} or others may "
            "write to it: refusing templates that someone else could replace"
        )


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


@contextlib.contextmanager
def _flocked(path: Path, operation: int, create: bool) -> Iterator[bool]:
    """Hold an flock on *path*; yields False when the file is gone (removed
    before or while waiting for the lock) and *create* is false."""
    while True:
        try:
            flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
            fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            if create:
                raise
            yield False
            return
        try:
            fcntl.flock(fd, operation)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield True
                return
            if not create:
                yield False
                return
        finally:
            os.close(fd)


class Factory:
    """The templates in one factory directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else factory_dir()

    # --- lookups ----------------------------------------------------------------------

    def templates(self) -> list[Template]:
        """Every complete template (in-progress and broken ones are left out)."""
        found = []
        for entry in sorted(self._entries()):
            with contextlib.suppress(TemplateError):
                found.append(Template.load(entry))
        return found

    def broken(self) -> list[Path]:
        """Template directories whose record cannot be read."""
        broken = []
        for entry in sorted(self._entries()):
            try:
                Template.load(entry)
            except TemplateError:
                broken.append(entry)
        return broken

    def _entries(self) -> list[Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except FileNotFoundError:
            return []

    def find(self, key: str) -> Template | None:
        """The template with this key (``TemplateShape.key``), if there is one."""
        path = self.root / key
        return Template.load(path) if (path / RECORD_FILE).exists() else None

    @contextlib.contextmanager
    def lease(self, key: str) -> Iterator[Template | None]:
        """The template with this key, kept from removal while a clone loads it
        (None: there is none).  Raises TemplateError for a broken one, or for a
        factory directory that someone else could have filled."""
        try:
            _check_private(self.root)
        except FileNotFoundError:
            yield None
            return
        with _flocked(self.root / key / LOCK_FILE, fcntl.LOCK_SH, create=False) as present:
            yield Template.load(self.root / key) if present else None

    def missing(self, pod_id: str, shape: TemplateShape) -> TemplateError:
        """The error for a pod that must start from a template and has none."""
        others = self.templates()
        lines = [
            f"pod {pod_id!r} asks to start from a VM template (boot=template), but the factory "
            f"{self.root} has none for its shape ({shape.describe()}).",
        ]
        for template in others:
            state = "current" if template.current() else "stale: its image or QEMU changed"
            lines.append(f"  template {template.key}: {template.shape.describe()} ({state})")
        params = "".join(f" --kernel-param {p}" for p in shape.kernel_params)
        lines.append(
            f"Make one with `virtc factory init --vcpus {shape.vcpus} "
            f"--memory {shape.memory_mib}{params}`, or use boot=auto or cold."
        )
        return TemplateError("\n".join(lines))

    # --- building ---------------------------------------------------------------------

    def _prepare_root(self) -> None:
        """Create the factory directory, or check that nobody else controls it."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(self.root)

    @contextlib.contextmanager
    def _builder_lock(self) -> Iterator[None]:
        self._prepare_root()
        with _flocked(self.root / ".lock", fcntl.LOCK_EX, create=True):
            yield

    def _remove_leftovers(self) -> None:
        """Staging directories of builders and destroyers that died (under the builder lock)."""
        for entry in self.root.glob(".*-*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)

    async def build(
        self,
        shape: TemplateShape,
        *,
        force: bool = False,
        progress: Progress | None = None,
        timeout: float = BUILD_TIMEOUT,
    ) -> Template:
        """The template of *shape*: found, or made (boot, wait for the agent, save).

        ``force`` makes it again.  Raises TemplateError (virtio-fs pods cannot
        be templated; the VM failed), HypervisorError, and leaves nothing
        behind on failure.
        """
        if shape.shared_fs is not SharedFsKind.VIRTIO_9P:
            raise TemplateError(
                f"pods on {shape.shared_fs.value} cannot start from a template: QEMU cannot "
                "save a vhost-user-fs device, and virtiofsd needs the guest RAM shared "
                "(set VC_SHARED_FS=9p to use templates)"
            )
        key = shape.key
        with self._builder_lock():
            self._remove_leftovers()
            existing = self.find(key)
            if existing is not None and not force:
                return existing
            staging = self.root / f".build-{key}-{os.getpid()}"
            staging.mkdir(mode=0o700)
            try:
                from virtcontainers.factory.maker import make_template  # QEMU, QMP: only here

                template = await make_template(shape, key, staging, progress, timeout)
                (staging / RECORD_FILE).write_text(json.dumps(template.to_json(), indent=1))
                if existing is not None:
                    self._remove(existing.path)
                staging.rename(self.root / key)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return Template.load(self.root / key)

    # --- removal ----------------------------------------------------------------------

    def destroy(self, key: str | None = None) -> list[str]:
        """Remove one template (by key) or all of them; with all, the factory
        directory goes too.  Clones that run keep their memory until they stop.
        Returns the keys removed; NotFound is a TemplateError."""
        if not self.root.exists():
            if key is not None:
                raise TemplateError(f"no template {key} in {self.root}")
            return []
        with self._builder_lock():
            self._remove_leftovers()
            entries = self._entries()
            if key is not None:
                entries = [e for e in entries if e.name == key]
                if not entries:
                    raise TemplateError(f"no template {key} in {self.root}")
            for entry in entries:
                self._remove(entry)
            if key is None:
                (self.root / ".lock").unlink(missing_ok=True)
        if key is None:
            with contextlib.suppress(OSError):
                self.root.rmdir()
        return sorted(e.name for e in entries)

    def prune(self) -> list[str]:
        """Remove the templates that no pod would start from any more."""
        removed = []
        with self._builder_lock():
            for template in self.templates():
                if not template.current():
                    self._remove(template.path)
                    removed.append(template.key)
            for entry in self.broken():
                self._remove(entry)
                removed.append(entry.name)
        return removed

    def _remove(self, path: Path) -> None:
        """Wait for clones loading it, take it out of sight, delete it."""
        dead = self.root / f".dead-{path.name}-{os.getpid()}"
        with _flocked(path / LOCK_FILE, fcntl.LOCK_EX, create=True):
            path.rename(dead)
        shutil.rmtree(dead)
