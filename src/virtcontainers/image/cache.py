"""The image cache: where builds land, the lock that serialises builders, digests.

Layout under the cache directory::

    debs/                          downloaded kernel packages
    kernels/<pkg>_<ver>-<key>/     vmlinux + modules/NN-name.ko (unpacked once)
    images/<digest>/               vmlinux, initrd.img, rootfs.squashfs, inputs.json
    rootfs/busybox-<digest>/       the default container rootfs
    .lock                          flock()ed by every builder
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from virtcontainers.errors import ImageError

ENV_CACHE_DIR = "VC_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("/var/cache/virtcontainers")


def default_cache_dir() -> Path:
    """$VC_CACHE_DIR, or /var/cache/virtcontainers."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env) if env else DEFAULT_CACHE_DIR


def resolve_cache_dir(cache_dir: Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on cache_dir/.lock: one builder at a time.

    Raises:
        ImageError: the cache directory cannot be created (permissions).
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ImageError(
            f"cannot use the image cache {cache_dir}: {exc}; run as root or set {ENV_CACHE_DIR}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def file_digest(path: Path) -> str:
    """sha256 of a file's content, or "missing" when it cannot be read."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return "missing"


def files_digest(base: Path, files: Iterable[Path]) -> str:
    """sha256 over the names (relative to `base`) and contents of `files`.

    Names count too: adding, removing or renaming a module changes the digest.
    """
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(base)}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def inputs_digest(inputs: Mapping[str, object]) -> str:
    """A short, stable hash of the JSON-serialisable build inputs."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def remove_stale_staging(directory: Path) -> None:
    """Delete dot-named staging leftovers of builders that were killed mid-build.

    Only call this while holding cache_lock(): staging directories are made
    under the lock, so a lock holder knows that none of them is in use.
    """
    if not directory.is_dir():
        return
    for entry in directory.glob(".*"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
