"""A pod's shared directory: what the guest sees of the host's files.

The guest is untrusted and writes into the shared directory (over virtio-9p
or virtio-fs), so the host never resolves a path that the guest could have
changed.  The directories that the host looks up are a skeleton that the
guest sees read-only; only what containers need is writable, and those are
mount points, which cannot be renamed::

    <pod>/guestfs/skel/         tmpfs, written by the host alone (the pod dir is 0700)
        <container>/rootfs      empty mount points, one per container root (none for
                                a block-device root, which the VM gets as a disk) ...
        <container>/mounts/<n>  ... and per volume
    <pod>/guestfs/shared/       a read-only bind of skel/, exported to the guest;
                                the container roots and volumes are mounted on it
    <pod>/layers/               a tmpfs of its own, of a set size (the guest fills
                                it, not the run root: a full one is ENOSPC in the
                                container), mounted until the pod is deleted
    <pod>/layers/<container>/   a container's own writable layer (upper, work),
                                when its rootfs is a base shared with others, or
                                is read-only (the guest adds mount points there)

Removing a container or the pod detaches mounts at skeleton paths only (a
lazy unmount takes every submount along), so nothing below a directory the
guest can write is ever looked up, followed or deleted through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from virtcontainers.config import DEFAULT_LAYERS_MIB, ContainerConfig
from virtcontainers.errors import ConfigError
from virtcontainers.ids import validate_id
from virtcontainers.storage import mounts
from virtcontainers.storage.removal import remove_tree
from virtcontainers.store import PodPaths

SKELETON_OPTIONS = "mode=0755,size=1m,nr_inodes=16384"
LAYER_INODES_PER_MIB = 128
"""Inodes of the layers' tmpfs per MiB of its size: empty files cost host memory
that ``size`` does not count, so their number is capped too."""
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
OVERLAY_SPECIAL = (",", ":", "\\")


class SharedDir:
    """The shared directory of one pod (see the module docstring)."""

    def __init__(self, paths: PodPaths, layers_mib: int = DEFAULT_LAYERS_MIB) -> None:
        self.paths = paths
        self.layers_mib = layers_mib
        self.log = logging.getLogger(__name__).getChild(paths.root.name)

    @property
    def export(self) -> Path:
        """The directory the hypervisor exports to the guest."""
        return self.paths.shared

    def prepare(self) -> None:
        """Mount an empty skeleton and its read-only view (after any leftovers go)."""
        self.detach()
        self.paths.guestfs.mkdir(mode=0o700, exist_ok=True)
        self.paths.skel.mkdir(mode=0o700, exist_ok=True)
        self.paths.shared.mkdir(mode=0o700, exist_ok=True)
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        mounts.mount("tmpfs", self.paths.skel, SKELETON_OPTIONS, flags)
        try:
            mounts.bind(self.paths.skel, self.paths.shared, read_only=True)
        except BaseException:
            mounts.detach(self.paths.skel)
            raise

    def detach(self) -> None:
        """Unmount the skeleton, its view and everything on it; keep the layers."""
        for path in (self.paths.shared, self.paths.skel):
            mounts.detach(path)
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()
        with contextlib.suppress(FileNotFoundError):
            self.paths.guestfs.rmdir()

    def remove(self) -> None:
        """Detach everything and delete the writable layers too."""
        self.detach()
        mounts.detach(self.paths.layers)
        self._remove_written(self.paths.layers)

    # --- containers ---------------------------------------------------------------------

    def share(self, config: ContainerConfig) -> None:
        """Mount a container's root filesystem (unless it is a block device) and
        volumes where the guest finds them."""
        skeleton = self.paths.skel / validate_id("container", config.id)
        if skeleton.exists():
            self.unshare(config.id)
        try:
            skeleton.mkdir()
            _traversable(skeleton)
            view = self.paths.shared / config.id
            if not config.block_rootfs:
                (skeleton / "rootfs").mkdir()
                self._share_root(config, view / "rootfs")
            for index, volume in enumerate(config.mounts):
                point = skeleton / "mounts" / str(index)
                source = Path(volume.source)
                point.parent.mkdir(exist_ok=True)
                _traversable(point.parent)
                if source.is_dir():
                    point.mkdir()
                else:
                    point.touch()
                target = view / "mounts" / str(index)
                mounts.bind(
                    source,
                    target,
                    read_only=volume.read_only,
                    recursive=volume.recursive,
                    propagation=volume.propagation,
                )
        except BaseException:
            self.unshare(config.id)
            raise

    def _share_root(self, config: ContainerConfig, target: Path) -> None:
        if config.writable_layer != config.read_only_rootfs and _overlayable(config):
            # A layer of its own: a shared base never sees its writes, and a
            # read-only source never sees the mount points crun creates in the
            # guest before it makes the root read-only (as runc does).
            self._mount_layered(config, target)
        else:
            mounts.bind(config.rootfs, target, read_only=config.read_only_rootfs)

    def _mount_layered(self, config: ContainerConfig, target: Path) -> None:
        layer = self.paths.layer(config.id)
        upper, work = layer / "upper", layer / "work"
        if any(c in str(layer) for c in OVERLAY_SPECIAL):
            raise ConfigError(
                "VC_RUN_DIR",
                f"{layer} holds one of {' '.join(OVERLAY_SPECIAL)}, which overlayfs cannot "
                f"take as a layer path (container {config.id!r})",
            )
        self._mount_layers()
        layer.mkdir(mode=0o700, exist_ok=True)
        upper.mkdir(mode=0o755, exist_ok=True)
        work.mkdir(mode=0o700, exist_ok=True)
        options = f"lowerdir={config.rootfs},upperdir={upper},workdir={work}"
        mounts.mount("overlay", target, options, MS_NOSUID | MS_NODEV)

    def _mount_layers(self) -> None:
        """The layers' own size-limited tmpfs, mounted once for the pod's life."""
        self.paths.layers.mkdir(mode=0o700, exist_ok=True)
        if os.path.ismount(self.paths.layers):
            return
        inodes = self.layers_mib * LAYER_INODES_PER_MIB
        options = f"mode=0700,size={self.layers_mib}m,nr_inodes={inodes}"
        mounts.mount("tmpfs", self.paths.layers, options, MS_NOSUID | MS_NODEV)

    def unshare(self, container_id: str) -> None:
        """Unmount a container's files (its writable layer stays until it is deleted)."""
        skeleton = self.paths.skel / validate_id("container", container_id)
        view = self.paths.shared / container_id
        volumes = skeleton / "mounts"
        if volumes.is_dir():
            for name in os.listdir(volumes):
                mounts.detach(view / "mounts" / name)
        mounts.detach(view / "rootfs")
        shutil.rmtree(skeleton, ignore_errors=True)

    def remove_layer(self, container_id: str) -> None:
        """Delete a container's writable layer (after it is unshared)."""
        self._remove_written(self.paths.layer(validate_id("container", container_id)))

    def _remove_written(self, tree: Path) -> None:
        """Delete a tree the guest wrote, if there is one."""
        if tree.exists():
            remove_tree(tree, f"pod {self.paths.root.name!r}")


def _traversable(directory: Path) -> None:
    """Let anyone pass through ``directory`` to the mounts in it, but not list it.

    A container in a user namespace opens its root and volumes as its mapped
    root, which is "other" to these host-root directories; mkdir's mode is
    whittled down by the caller's umask (0700 under a umask of 077).
    """
    os.chmod(directory, 0o711)


def _overlayable(config: ContainerConfig) -> bool:
    """Whether the rootfs can be an overlayfs lower dir (a writable layer's is checked
    when the config is made; a read-only root that cannot is bound read-only)."""
    return config.writable_layer or not any(c in str(config.rootfs) for c in OVERLAY_SPECIAL)
