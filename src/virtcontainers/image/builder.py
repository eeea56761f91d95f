"""build_image() and find_image(): the guest image, built once per set of inputs.

An image is identified by a digest of everything that goes into it (package
versions, the agent and init.sh sources, the builder's own code), so a second
build with the same inputs is a lookup, and a changed input makes a new image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from virtcontainers.errors import ImageError
from virtcontainers.image.busybox import busybox_binary
from virtcontainers.image.cache import (
    cache_lock,
    file_digest,
    files_digest,
    inputs_digest,
    remove_stale_staging,
    resolve_cache_dir,
)
from virtcontainers.image.initrd import build_initrd, init_script
from virtcontainers.image.kernel import (
    KernelPackage,
    prepare_kernel,
    resolve_kernel_package_cached,
    write_vmlinux,
)
from virtcontainers.image.rootfs import (
    AgentSources,
    install_kernel_modules,
    make_squashfs,
    smoke_test,
    stage_root,
)
from virtcontainers.image.tools import find_tool

BUILDER_VERSION = 1
KERNEL_FILE = "vmlinux"
INITRD_FILE = "initrd.img"
ROOTFS_FILE = "rootfs.squashfs"
INPUTS_FILE = "inputs.json"
Progress = Callable[[str], None]

# Host packages whose files end up in the guest.
GUEST_PACKAGES = (
    "busybox-static",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "crun",
    "libc6",
)


class ImageNotBuiltError(ImageError):
    """No cached image matches the current inputs; build it first."""

    def __init__(self, cache_dir: Path, digest: str) -> None:
        super().__init__(
            f"the guest image {digest} is not built in {cache_dir}: "
            "run virtcontainers.image.build_image() (or `virtc image build`)"
        )
        self.cache_dir = cache_dir
        self.digest = digest


@dataclass(frozen=True)
class GuestImage:
    kernel: Path  # ELF vmlinux (PVH entry)
    initrd: Path  # gzip cpio
    rootfs: Path  # squashfs, attached as the first virtio-blk disk (/dev/vda) read-only
    digest: str  # hash of the inputs

    @classmethod
    def in_dir(cls, directory: Path, digest: str) -> GuestImage:
        return cls(
            directory / KERNEL_FILE, directory / INITRD_FILE, directory / ROOTFS_FILE, digest
        )


@dataclass(frozen=True)
class ImageSources:
    """Everything a build reads. Tests swap the agent for a placeholder."""

    agent: AgentSources
    kernel: Path | None = None  # user vmlinux/bzImage, else Debian's kernel
    initrd: Path | None = None  # user initrd, else ours

    @classmethod
    def default(cls, kernel: Path | None = None, initrd: Path | None = None) -> ImageSources:
        package = Path(str(resources.files("virtcontainers")))
        agent = AgentSources(package / "guest" / "agent", package / "agent" / "protocol.py")
        return cls(agent, kernel, initrd)


def _builder_fingerprint() -> str:
    # The builder's own code is an input: a fix to it must rebuild the image.
    digest = hashlib.sha256(f"v{BUILDER_VERSION}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of `names`; a package that is not installed maps to "missing"."""
    versions = dict.fromkeys(names, "missing")
    exe = find_tool("dpkg-query")
    if exe is None:
        return versions
    done = subprocess.run(
        [exe, "-W", "-f", "${Package} ${Version}\\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.splitlines():
        name, _, version = line.partition(" ")
        if name in versions and version:
            versions[name] = version
    return versions


def _kernel_input(sources: ImageSources, package: KernelPackage | None) -> str:
    if package is not None:
        return f"deb:{package.key}"
    return f"file:{file_digest(sources.kernel)}" if sources.kernel else "none"


def image_inputs(
    sources: ImageSources, cache: Path
) -> tuple[dict[str, object], KernelPackage | None]:
    """The digest inputs of a build, and the Debian kernel package when it is used."""
    package = None
    if sources.kernel is None:
        package = resolve_kernel_package_cached(cache / "kernel-package.json")
    inputs: dict[str, object] = {
        "builder": _builder_fingerprint(),
        "kernel": _kernel_input(sources, package),
        "initrd": f"file:{file_digest(sources.initrd)}" if sources.initrd else "ours",
        "packages": _package_versions(GUEST_PACKAGES),
        "agent": files_digest(sources.agent.package, sources.agent.package_files()),
        "protocol": file_digest(sources.agent.protocol),
        "init.sh": hashlib.sha256(init_script()).hexdigest(),
    }
    return inputs, package


def find_image(cache_dir: Path | None = None) -> GuestImage:
    """The image build_image() would return, without building it.

    Raises:
        ImageNotBuiltError: no image for the current inputs is in the cache.
        ImageError: the inputs cannot be resolved (apt-cache missing, ...).
    """
    return find_image_from(ImageSources.default(), cache_dir)


def find_image_from(sources: ImageSources, cache_dir: Path | None = None) -> GuestImage:
    cache = resolve_cache_dir(cache_dir)
    inputs, _package = image_inputs(sources, cache)
    digest = inputs_digest(inputs)
    final = cache / "images" / digest
    if not (final / INPUTS_FILE).is_file():
        raise ImageNotBuiltError(cache, digest)
    return GuestImage.in_dir(final, digest)


def build_image(
    cache_dir: Path | None = None,
    kernel: Path | None = None,
    initrd: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> GuestImage:
    """Build the guest image (or return the cached one for the same inputs).

    `kernel` is an ELF vmlinux or a bzImage to use instead of Debian's kernel;
    its modules are not known, so the initrd then carries none (build them in,
    or pass an `initrd` that loads them). `initrd` replaces ours entirely.

    Raises:
        ImageError: a tool or package is missing (the message says what to
            install), a download failed, or the cache is not writable.
    """
    return build_image_from(ImageSources.default(kernel, initrd), cache_dir, progress, force)


def build_image_from(
    sources: ImageSources,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> GuestImage:
    """build_image() from explicit sources (a placeholder agent in tests)."""
    say = progress or (lambda _msg: None)
    cache = resolve_cache_dir(cache_dir)
    say("resolving the image inputs")
    inputs, package = image_inputs(sources, cache)
    digest = inputs_digest(inputs)
    final = cache / "images" / digest
    if not force and (final / INPUTS_FILE).is_file():
        say(f"image {digest} is up to date")
        return GuestImage.in_dir(final, digest)
    with cache_lock(cache):
        if not force and (final / INPUTS_FILE).is_file():  # another builder finished it
            return GuestImage.in_dir(final, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final.parent)
        remove_stale_staging(cache / "kernels")
        staged = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{digest}-"))
        try:
            _build_into(
                staged,
                sources=sources,
                package=package,
                cache=cache,
                say=say,
            )
            (staged / INPUTS_FILE).write_text(json.dumps(inputs, indent=2, sort_keys=True))
            os.chmod(staged, 0o755)
            _publish(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    say(f"image {digest} built in {final}")
    return GuestImage.in_dir(final, digest)


def _build_into(
    out: Path,
    *,
    sources: ImageSources,
    package: KernelPackage | None,
    cache: Path,
    say: Progress,
) -> None:
    busybox = busybox_binary()
    modules: tuple[Path, ...] = ()
    on_demand: Path | None = None
    if package is not None:
        prepared = prepare_kernel(package, cache, say)
        _link_or_copy(prepared.vmlinux, out / KERNEL_FILE)
        modules = prepared.modules
        on_demand = prepared.on_demand
    elif sources.kernel is not None:
        say(f"extracting the ELF vmlinux from {sources.kernel}")
        write_vmlinux(sources.kernel, out / KERNEL_FILE, say)
    if sources.initrd is not None:
        if not sources.initrd.is_file():
            raise ImageError(f"initrd {sources.initrd} not found")
        shutil.copyfile(sources.initrd, out / INITRD_FILE)
    else:
        say(f"writing the initrd ({len(modules)} modules)")
        build_initrd(out / INITRD_FILE, busybox, modules)
    root = out / "root"
    root.mkdir()
    stage_root(root, busybox, sources.agent, say)
    if on_demand is not None:
        install_kernel_modules(root, on_demand)
    smoke_test(root)
    say("packing the root filesystem (mksquashfs)")
    make_squashfs(root, out / ROOTFS_FILE)
    shutil.rmtree(root)


def _link_or_copy(source: Path, dest: Path) -> None:
    # The 66 MB vmlinux is the same for every image of one kernel: share it.
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def _publish(staged: Path, final: Path) -> None:
    # rename() is atomic: readers see either no image or a complete one.
    if final.exists():  # force=True: move the old image aside first
        old = final.with_name(f".{final.name}-old-{os.getpid()}")
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, final)
