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

What a template is lives in :mod:`virtcontainers.factory.template`, how one is
made in :mod:`virtcontainers.factory.maker`; this module keeps them: the
:class:`Factory` of one directory, and :func:`init_template` for
``virtc factory init``.

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
    .auto.lock             flock: held by the background builder while it runs
    .auto.log              what the last background build said

Automatic templates: a pod with ``boot="auto"`` that finds no template
boots cold and calls :meth:`Factory.start_auto_build`, which starts
``python -m virtcontainers.factory`` in a session of its own (not the pod's
child, nor in its cgroup) unless one already runs.  It builds the shape
under the builder lock, then removes stale templates and all but the
:data:`AUTO_TEMPLATES_KEPT` newest automatic ones.  ``VC_AUTO_TEMPLATES=0``
turns this off.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from virtcontainers.config import ImagePaths, PodConfig, Resources
from virtcontainers.errors import TemplateError
from virtcontainers.factory.maker import make_template
from virtcontainers.factory.pool import POOL_FILE, factory_root
from virtcontainers.factory.template import (
    LOCK_FILE,
    RECORD_FILE,
    Progress,
    Template,
    TemplateShape,
)
from virtcontainers.host.pythonenv import spawn_detached
from virtcontainers.hypervisor.accel import detect_accelerator
from virtcontainers.hypervisor.devices import SharedFsKind
from virtcontainers.store import run_root

ENV_AUTO_TEMPLATES = "VC_AUTO_TEMPLATES"
BUILD_TIMEOUT = 300.0
AUTO_TEMPLATES_KEPT = 3
"""Automatic templates kept (the newest); templates made by hand are never
removed for room, only when stale."""
AUTO_LOCK = ".auto.lock"
AUTO_LOG = ".auto.log"
_OFF = frozenset({"0", "no", "false", "off"})


def auto_templates_enabled() -> bool:
    """False when ``$VC_AUTO_TEMPLATES`` says no (0, no, false, off)."""
    return os.environ.get(ENV_AUTO_TEMPLATES, "1").strip().lower() not in _OFF


def factory_dir(root: Path | None = None) -> Path:
    """``$VC_FACTORY_DIR``, else ``factory`` under the run root (*root*, else the default)."""
    return factory_root(root if root is not None else run_root())


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
        automatic: bool = False,
        progress: Progress | None = None,
        timeout: float = BUILD_TIMEOUT,
    ) -> Template:
        """The template of *shape*: found, or made (boot, wait for the agent, save).

        ``force`` makes it again; ``automatic`` marks it made in the background.
        Raises TemplateError (virtio-fs pods cannot be templated; the VM
        failed), HypervisorError, and leaves nothing behind on failure.
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
                made = await make_template(shape, key, staging, progress, timeout)
                template = replace(made, automatic=automatic)
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
                (self.root / POOL_FILE).unlink(missing_ok=True)  # nothing left to clone
                self._remove_idle_auto_files()
        if key is None:
            with contextlib.suppress(OSError):
                self.root.rmdir()
        return sorted(e.name for e in entries)

    def _remove_idle_auto_files(self) -> None:
        """The background builder's lock and log, unless a builder runs (it keeps
        both, and the directory with them)."""
        try:
            fd = os.open(self.root / AUTO_LOCK, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for name in (AUTO_LOCK, AUTO_LOG):  # still held: no builder starts meanwhile
                (self.root / name).unlink(missing_ok=True)
        except BlockingIOError:
            return
        finally:
            os.close(fd)

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

    def prune_automatic(self, kept: int = AUTO_TEMPLATES_KEPT) -> list[str]:
        """Remove stale templates, then the automatic ones beyond the *kept* newest."""
        removed = self.prune()
        with self._builder_lock():
            automatic = [t for t in self.templates() if t.automatic]
            automatic.sort(key=lambda t: t.created_at, reverse=True)
            for template in automatic[kept:]:
                self._remove(template.path)
                removed.append(template.key)
        return removed

    def start_auto_build(self, shape: TemplateShape) -> bool:
        """Start making *shape*'s template in the background, unless a background
        build already runs (False).  The builder holds :data:`AUTO_LOCK`, taken
        here and inherited, so two pods that miss at once start one builder.
        Raises OSError, subprocess.CalledProcessError, TemplateError."""
        self._prepare_root()
        fd = os.open(self.root / AUTO_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            log_fd = os.open(
                self.root / AUTO_LOG,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
            try:
                args = ["--lock-fd", str(fd), str(self.root), json.dumps(shape.to_json())]
                spawn_detached("virtcontainers.factory", args, log_fd, pass_fds=(fd,))
            finally:
                os.close(log_fd)
            return True
        finally:
            os.close(fd)

    def _remove(self, path: Path) -> None:
        """Wait for clones loading it, take it out of sight, delete it."""
        dead = self.root / f".dead-{path.name}-{os.getpid()}"
        with _flocked(path / LOCK_FILE, fcntl.LOCK_EX, create=True):
            path.rename(dead)
        shutil.rmtree(dead)


def current_shape(vcpus: int, memory_mib: int, kernel_params: tuple[str, ...]) -> TemplateShape:
    """The shape of a pod of this size on the built image, this host's accelerator
    and shared filesystem.  Raises ConfigError, ImageNotBuiltError, TemplateError."""
    from virtcontainers.image import find_image
    from virtcontainers.storage.sharedfs import choose_shared_fs

    config = PodConfig(
        id="template", resources=Resources(vcpus, memory_mib), kernel_params=kernel_params
    )
    image = find_image()
    accelerator, _reason = detect_accelerator()
    shared_fs = choose_shared_fs(None, accelerator)
    paths = ImagePaths(image.kernel, image.initrd, image.rootfs)
    return TemplateShape.for_pod(config, paths, accelerator, shared_fs)


def init_template(
    vcpus: int = 1,
    memory_mib: int = 512,
    kernel_params: tuple[str, ...] = (),
    *,
    force: bool = False,
    progress: Progress | None = None,
    factory: Factory | None = None,
) -> tuple[Template, list[str]]:
    """Make (or find) the template that pods of this size start from, then remove
    the stale ones (made of an image or a QEMU that changed since).  Returns the
    template and the keys removed."""
    shape = current_shape(vcpus, memory_mib, kernel_params)
    factory = factory or Factory()
    template = asyncio.run(factory.build(shape, force=force, progress=progress))
    return template, factory.prune()
