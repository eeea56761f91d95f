"""On-disk state: the run-directory layout, atomic JSON writes and locks.

Every pod has a directory under the run root (``$VC_RUN_DIR``, default
``/run/virtcontainers``)::

    <root>/pods/<pod_id>/        0700
        state.json               the pod record, replaced atomically
        lock                     flock: serialises API calls on this pod
        daemon.sock              the pod daemon's RPC socket (0600)
        daemon.log               the daemon's log
        vm/                      the hypervisor's sockets and console log
        skel/                    tmpfs: the shared directory's skeleton (host only)
        shared/                  its read-only view, exported to the guest
                                 (virtio-9p or virtio-fs), with mounted on it:
            <container_id>/rootfs      the container's rootfs
            <container_id>/mounts/<n>  its volumes
        layers/<container_id>/   a container's own writable layer, if it has one

The shared directory is laid out by :mod:`virtcontainers.shareddir`.

Any process on the host can list and read pods; only the pod's daemon
writes the record while the pod's VM runs, and API calls write it otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtcontainers.config import validate_id
from virtcontainers.errors import NotFoundError, VcError

DEFAULT_RUN_ROOT = Path("/run/virtcontainers")
STATE_VERSION = 1


def run_root() -> Path:
    return Path(os.environ.get("VC_RUN_DIR", str(DEFAULT_RUN_ROOT)))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` so that readers see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    with open(path) as source:
        return json.load(source)


@dataclass(frozen=True)
class PodPaths:
    """Where one pod's files live."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def socket(self) -> Path:
        return self.root / "daemon.sock"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def vm(self) -> Path:
        return self.root / "vm"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def skel(self) -> Path:
        return self.root / "skel"

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    def layer(self, container_id: str) -> Path:
        return self.layers / container_id


class Store:
    """The set of pods under one run root."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else run_root()
        self.pods_dir = self.root / "pods"

    def ensure(self) -> None:
        self.pods_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        os.chmod(self.pods_dir, 0o700)

    def paths(self, pod_id: str) -> PodPaths:
        return PodPaths(self.pods_dir / validate_id("pod", pod_id))

    def pod_ids(self) -> list[str]:
        if not self.pods_dir.is_dir():
            return []
        return sorted(p.name for p in self.pods_dir.iterdir() if (p / "state.json").is_file())

    def exists(self, pod_id: str) -> bool:
        return self.paths(pod_id).state.is_file()

    def create_dir(self, pod_id: str) -> PodPaths:
        """Make the pod's directory; raises FileExistsError if the id is taken."""
        self.ensure()
        paths = self.paths(pod_id)
        paths.root.mkdir(mode=0o700)
        return paths

    def load(self, pod_id: str) -> dict[str, Any]:
        paths = self.paths(pod_id)
        try:
            record = read_json(paths.state)
        except FileNotFoundError:
            raise NotFoundError("pod", pod_id, "`virtc pod list` shows the pods") from None
        except (OSError, ValueError) as exc:
            raise VcError(f"pod {pod_id!r}: state file {paths.state} is unreadable: {exc}") from exc
        if not isinstance(record, dict) or record.get("version") != STATE_VERSION:
            raise VcError(f"pod {pod_id!r}: state file {paths.state} has an unknown format")
        return record

    def save(self, pod_id: str, record: dict[str, Any]) -> None:
        record["version"] = STATE_VERSION
        write_json_atomic(self.paths(pod_id).state, record)

    @contextlib.contextmanager
    def locked(self, pod_id: str) -> Iterator[PodPaths]:
        """Hold the pod's lock: one API call at a time changes a pod."""
        paths = self.paths(pod_id)
        try:
            fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFoundError("pod", pod_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield paths
        finally:
            os.close(fd)
