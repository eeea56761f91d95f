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
        layers/<container_id>/   a container's own writable layer, if it has one
        network.json             what the pod made in its network namespace, from
                                 before its VM starts until that is released
        cgroup.json              the host cgroup its VM runs in, the same way

The shared directory is laid out by :mod:`virtcontainers.storage.shareddir`.

Any process on the host can list and read pods; only the pod's daemon
writes the record while the pod's VM runs, and API calls write it otherwise.
The record is a :class:`PodRecord` with a :class:`ContainerRecord` per
container, written and read here only.  Loading parses the JSON and checks its
shape, never the host: a record stays loadable when the host changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from virtcontainers.agent.results import ExitStatus, GuestDetails
from virtcontainers.config import (
    MAX_SOCKET_PATH,
    ContainerConfig,
    ContainerConfigDict,
    ImagePaths,
    ImagePathsDict,
    PodConfig,
    PodConfigDict,
)
from virtcontainers.errors import (
    BusyError,
    ConfigError,
    CorruptRecordError,
    DaemonError,
    NotFoundError,
)
from virtcontainers.host.proc import ProcessRecord, ProcessRef
from virtcontainers.ids import validate_id
from virtcontainers.states import ContainerState, PodState

DEFAULT_RUN_ROOT = Path("/run/virtcontainers")
LOCK_TIMEOUT = 300.0
"""How long a call waits for another call's hold on a pod (a cold start takes ≈10 s)."""
LOCK_POLL = 0.05
STATE_VERSION = 2
KILLED = ExitStatus(128 + signal.SIGKILL, signal.SIGKILL)
"""What a process that went down with its VM (or lost its agent) reports."""


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


def _integer(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    return value


def _number(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise ConfigError(name, f"expected a number, got {value!r}")
    return None if value is None else float(value)


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {value!r}")
    return value


class ContainerRecordJson(TypedDict):
    config: ContainerConfigDict
    state: str
    pid: int | None
    exit_code: int | None
    signal: int | None
    oom_killed: bool


@dataclass
class ContainerRecord:
    """What the store keeps of a container: its config, state and last exit."""

    config: ContainerConfig
    state: ContainerState = ContainerState.CREATED
    pid: int | None = None
    exit: ExitStatus | None = None
    oom_killed: bool = False

    @property
    def id(self) -> str:
        return self.config.id

    def to_json(self) -> ContainerRecordJson:
        return {
            "config": self.config.to_dict(),
            "state": self.state.value,
            "pid": self.pid,
            "exit_code": self.exit.exit_code if self.exit else None,
            "signal": self.exit.signal if self.exit else None,
            "oom_killed": self.oom_killed,
        }

    @classmethod
    def from_json(cls, data: object) -> ContainerRecord:
        """Parse a record (ConfigError naming the field when it is malformed)."""
        if not isinstance(data, dict):
            raise ConfigError("container record", f"expected an object, got {data!r}")
        try:
            state = ContainerState(data.get("state"))
        except ValueError:
            raise ConfigError("container.state", f"unknown state {data.get('state')!r}") from None
        exit_code = _integer(data, "exit_code")
        return cls(
            config=ContainerConfig.from_dict(data.get("config") or {}),
            state=state,
            pid=_integer(data, "pid"),
            exit=ExitStatus(exit_code, _integer(data, "signal")) if exit_code is not None else None,
            oom_killed=bool(data.get("oom_killed")),
        )


def end_with_vm(containers: Iterable[ContainerRecord]) -> None:
    """Containers whose VM went away: the running ones stopped, killed."""
    for container in containers:
        if container.state in (ContainerState.RUNNING, ContainerState.PAUSED):
            container.state = container.state.moved_to(container.id, ContainerState.STOPPED)
            container.exit = container.exit or KILLED


class PodRecordJson(TypedDict):
    """``state.json``."""

    version: int
    config: PodConfigDict
    state: str
    containers: dict[str, ContainerRecordJson]
    image: ImagePathsDict | None
    created_at: float
    started_at: float | None
    daemon: ProcessRecord | None
    vm: ProcessRecord | None
    error: str | None
    guest: dict[str, object] | None  # the fields of GuestDetails
    template: str | None


@dataclass
class PodRecord:
    """What the store keeps of a pod (``state.json``)."""

    config: PodConfig
    state: PodState = PodState.CREATED
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    image: ImagePaths | None = None
    created_at: float = 0.0
    started_at: float | None = None
    daemon: ProcessRef | None = None
    vm: ProcessRef | None = None
    error: str | None = None
    guest: GuestDetails | None = None
    template: str | None = None
    """The key of the VM template that the pod's last VM was cloned from (None: booted cold)."""

    @property
    def id(self) -> str:
        return self.config.id

    def wait_daemon_gone(self, timeout: float) -> None:
        """Wait until the pod's daemon has exited (DaemonError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while self.daemon is not None and self.daemon.alive():
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"pod {self.id!r}: daemon {self.daemon.pid} did not exit in {timeout:.0f}s"
                )
            time.sleep(0.02)

    def mark_stopped(self, error: str | None) -> None:
        """The pod's VM is gone, and with it every process of its containers."""
        if self.state is not PodState.STOPPED:
            self.state = self.state.moved_to(self.id, PodState.STOPPED)
        end_with_vm(self.containers.values())
        self.daemon = self.vm = None
        self.error = self.error or error

    def to_json(self) -> PodRecordJson:
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "state": self.state.value,
            "containers": {cid: c.to_json() for cid, c in self.containers.items()},
            "image": self.image.to_dict() if self.image else None,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "daemon": self.daemon.to_record() if self.daemon else None,
            "vm": self.vm.to_record() if self.vm else None,
            "error": self.error,
            "guest": self.guest.__dict__ if self.guest else None,
            "template": self.template,
        }

    @classmethod
    def from_json(cls, data: object) -> PodRecord:
        """Parse a record (ConfigError naming the field when it is malformed)."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ConfigError("version", f"expected a version {STATE_VERSION} record")
        try:
            state = PodState(data.get("state"))
        except ValueError:
            raise ConfigError("state", f"unknown state {data.get('state')!r}") from None
        containers = data.get("containers")
        if not isinstance(containers, dict):
            raise ConfigError("containers", f"expected an object, got {containers!r}")
        image = data.get("image")
        return cls(
            config=PodConfig.from_dict(data.get("config") or {}),
            state=state,
            containers={cid: ContainerRecord.from_json(c) for cid, c in containers.items()},
            image=ImagePaths.from_dict(image) if isinstance(image, dict) else None,
            created_at=_number(data, "created_at") or 0.0,
            started_at=_number(data, "started_at"),
            daemon=ProcessRef.from_record(data.get("daemon")),
            vm=ProcessRef.from_record(data.get("vm")),
            error=_text(data, "error"),
            guest=_guest_details(data.get("guest")),
            template=_text(data, "template"),
        )


def _guest_details(data: object) -> GuestDetails | None:
    if not isinstance(data, dict):
        return None
    try:
        return GuestDetails(**data)
    except TypeError:
        raise ConfigError("guest", f"malformed guest details {data!r}") from None


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
    shared = _InPodDir("shared")
    console = _InPodDir("console.log")
    """The last console output of the pod's VM, kept after it stops."""
    skel = _InPodDir("skel")
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
