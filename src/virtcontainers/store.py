"""On-disk state: the run-directory layout, atomic JSON writes and locks.

Every pod has a directory under the run root (``$VC_RUN_DIR``, default
``/run/virtcontainers``)::

    <root>/pods/<pod_id>/        0700
        state.json               the pod record, replaced atomically
        lock                     flock: serialises API calls on this pod
        daemon.sock              the pod daemon's RPC socket (0600)
        daemon.log               the daemon's log
        vm/                      the hypervisor's sockets and console log
        console.log              the console of the VM that ran last, kept after it stops
        skel/                    tmpfs: the shared directory's skeleton (host only)
        shared/                  its read-only view, exported to the guest
                                 (virtio-9p or virtio-fs), with mounted on it:
            <container_id>/rootfs      the container's rootfs
            <container_id>/mounts/<n>  its volumes
        layers/                  tmpfs of Resources.layers_mib, until the pod is deleted:
            <container_id>/      a container's own writable layer, if it has one
        logs/<container_id>.log  its output when it has no fds, rotated to .log.1
        network.json             what the pod made in its network namespace, from
                                 before its VM starts until that is released
        cgroup.json              the host cgroup its VM runs in, the same way

The shared directory is laid out by :mod:`virtcontainers.storage.shareddir`.

Any process on the host can list and read pods; only the pod's daemon
writes the record while the pod's VM runs, and API calls write it otherwise.
The record is a :class:`~virtcontainers.records.PodRecord` with a
:class:`~virtcontainers.records.ContainerRecord` per container
(:mod:`virtcontainers.records`), written and read here only.  Loading parses
the JSON and checks its shape, never the host: a record stays loadable when
the host changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtcontainers.config import MAX_SOCKET_PATH
from virtcontainers.errors import (
    BusyError,
    ConfigError,
    CorruptRecordError,
    NotFoundError,
)
from virtcontainers.ids import validate_id
from virtcontainers.records import PodRecord

DEFAULT_RUN_ROOT = Path("/run/virtcontainers")
LOCK_TIMEOUT = 300.0
"""How long a call waits for another call's hold on a pod (a cold start takes ≈10 s)."""
LOCK_POLL = 0.05


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


class _InPodDir:
    """A path in a pod's directory, by its name there: a :class:`PodPaths` attribute."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, paths: PodPaths, owner: type[PodPaths]) -> Path:
        return paths.root / self.name


@dataclass(frozen=True)
class PodLock:
    """The pod's lock file, open: held once ``try_acquire`` succeeds.

    The lock belongs to the open file, not the process: a daemon that
    inherits ``fd`` holds the lock with its starter, until both close it.
    """

    paths: PodPaths
    fd: int

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@dataclass(frozen=True)
class PodPaths:
    """Where one pod's files live (the layout in this module's docstring)."""

    root: Path
    state = _InPodDir("state.json")
    lock = _InPodDir("lock")
    socket = _InPodDir("daemon.sock")
    log = _InPodDir("daemon.log")
    vm = _InPodDir("vm")
    guestfs = _InPodDir("guestfs")
    """The parent of ``skel`` and ``shared``: one rename moves both mounts (a
    pool's waiting clone becomes a pod so, :mod:`virtcontainers.daemon.standby`)."""
    shared = _InPodDir("guestfs/shared")
    console = _InPodDir("console.log")
    """The last console output of the pod's VM, kept after it stops."""
    skel = _InPodDir("guestfs/skel")
    layers = _InPodDir("layers")
    network = _InPodDir("network.json")
    """What the pod made in its network namespace (taps, qdiscs), until released."""
    cgroup = _InPodDir("cgroup.json")
    """The host cgroup the pod made, until removed."""

    def check_socket_lengths(self) -> None:
        """The pod's unix sockets must fit AF_UNIX's limit: say so before anything starts."""
        for socket in (self.socket, self.vm / "agent.sock", self.vm / "qmp.sock"):
            if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
                raise ConfigError(
                    "VC_RUN_DIR",
                    f"the pod's socket {socket} is longer than AF_UNIX's {MAX_SOCKET_PATH} "
                    "bytes; use a shorter run directory or pod id",
                )

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

    def load(self, pod_id: str) -> PodRecord:
        """The pod's record; NotFoundError, or CorruptRecordError naming the file."""
        paths = self.paths(pod_id)
        try:
            data = read_json(paths.state)
        except FileNotFoundError:
            raise NotFoundError("pod", pod_id, "`virtc pod list` shows the pods") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise CorruptRecordError(pod_id, paths.state, str(exc)) from exc
        try:
            return PodRecord.from_json(data)
        except ConfigError as exc:
            raise CorruptRecordError(pod_id, paths.state, str(exc)) from exc

    def save(self, record: PodRecord) -> None:
        write_json_atomic(self.paths(record.id).state, record.to_json())

    @contextlib.contextmanager
    def locked(
        self, pod_id: str, operation: str, timeout: float = LOCK_TIMEOUT
    ) -> Iterator[PodLock]:
        """Hold the pod's lock: one API call at a time changes a pod.

        Raises BusyError after ``timeout`` seconds of waiting (0: do not wait).
        """
        lock = self._open_lock(pod_id)
        deadline = time.monotonic() + timeout
        try:
            while not lock.try_acquire():
                if time.monotonic() >= deadline:
                    raise BusyError(pod_id, operation, timeout)
                time.sleep(LOCK_POLL)
            yield lock
        finally:
            os.close(lock.fd)

    def _open_lock(self, pod_id: str) -> PodLock:
        paths = self.paths(pod_id)
        try:
            fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFoundError("pod", pod_id) from None
        return PodLock(paths, fd)
