"""What vc-runtime remembers about each container, and how it reports it.

A container's record lives in ``--root/<id>/state.json`` (which pod, bundle,
shim pid, hooks); its OCI state and hook state documents are made from the
record and the pod's status.  Errors and warnings go to ``--log`` the way
runc writes them (text or JSON lines).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

from virtcontainers import api
from virtcontainers.errors import ConfigError, NotFoundError
from virtcontainers.host import proc as hostproc
from virtcontainers.ids import validate_id
from virtcontainers.records import ProcessRecord, ProcessRef
from virtcontainers.spec import OCI_VERSION
from virtcontainers.storage.blockdev import BlockMountDict
from virtcontainers.store import write_json_atomic

DEFAULT_ROOT = Path("/run/vc-runtime")


class RuntimeCommandError(Exception):
    """An error reported the way runc does (message, exit status 1)."""


@dataclass
class Options:
    root: Path = DEFAULT_ROOT
    log: Path | None = None
    log_format: str = "text"
    debug: bool = False


@dataclass
class Record:
    """What vc-runtime remembers about one container id."""

    id: str
    pod_id: str
    bundle: str
    rootfs: str
    created: str
    owns_pod: bool
    shim_pid: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, object] = field(default_factory=dict)
    """The bundle's hooks, kept so later stages need not read the bundle again
    (checked again by :func:`~virtcontainers.oci.run_hooks` before they run)."""
    creator: ProcessRecord | None = None
    """The ``vc-runtime create`` still creating the container (pid and start
    time), None once it is created: a record whose creator died is a create
    that was killed, which ``delete --force`` or a new create cleans up."""
    moved_mount: BlockMountDict | None = None
    """The caller's mount of a block device at the bundle's rootfs, moved aside
    while the container has the device (see rootdisk.py), put back at delete."""

    def abandoned(self) -> bool:
        """Whether the create that made this record was killed before it finished."""
        if self.creator is None:
            return False
        creator = ProcessRef.from_record(self.creator)
        # A creator that cannot be read is no create under way either.
        return creator is None or not hostproc.alive(creator)

    def run_hooks(self, stage: str, status: str) -> None:
        """Run the hooks of ``stage`` on the host (poststart/poststop only warn)."""
        from virtcontainers import oci

        oci.run_hooks({"hooks": self.hooks}, stage, hook_state(self, status))

    @staticmethod
    def path(root: Path, container_id: str) -> Path:
        return root / validate_id("container", container_id) / "state.json"

    def save(self, root: Path) -> None:
        path = self.path(root, self.id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json_atomic(path, asdict(self))

    def claim(self, root: Path) -> bool:
        """Save the record only if its id has none yet; False if it has.

        The whole record is linked into place, so a reader never sees half of
        it, and of two creators only one link can succeed.
        """
        path = self.path(root, self.id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(asdict(self), out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    @classmethod
    def load(cls, root: Path, container_id: str) -> Record:
        try:
            with open(cls.path(root, container_id)) as source:
                return cls(**json.load(source))
        except (FileNotFoundError, NotADirectoryError, ConfigError):
            raise RuntimeCommandError(f"container {container_id} does not exist") from None
        except (OSError, ValueError, TypeError, RecursionError) as exc:
            raise RuntimeCommandError(
                f"container {container_id}: its state in {root} is unreadable: {exc}"
            ) from None

    def remove(self, root: Path) -> None:
        path = self.path(root, self.id)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()


@contextlib.contextmanager
def creates_serialised(root: Path) -> Iterator[None]:
    """Hold ``root``'s lock: one create at a time checks and claims an id (and
    cleans up after a killed create of it), so two never act on one id."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def log_event(options: Options, level: str, message: str) -> None:
    if options.log is None:
        return
    now = datetime.datetime.now(datetime.UTC).isoformat()
    if options.log_format == "json":
        line = json.dumps({"level": level, "msg": message, "time": now})
    else:
        line = f'time="{now}" level={level} msg="{message}"'
    with contextlib.suppress(OSError), open(options.log, "a") as log:
        log.write(line + "\n")


def oci_status(record: Record) -> str:
    """The OCI status of a container: creating, created, running, paused or stopped."""
    if record.creator is not None:
        return "stopped" if record.abandoned() else "creating"
    try:
        status = api.container_status(record.pod_id, record.id)
    except NotFoundError:
        return "stopped"
    return status.state.value


class HookState(TypedDict):
    """The container's state a hook reads on its stdin (runtime-spec runtime.md)."""

    ociVersion: str
    id: str
    status: str  # creating, created, running or stopped
    pid: int
    bundle: str  # the bundle directory
    annotations: dict[str, str]


class StateDocument(HookState):
    """What ``vc-runtime state`` prints: the runtime-spec state, with the
    fields runc adds to it."""

    rootfs: str
    created: str  # when the container was created, RFC 3339
    owner: str


def state_document(record: Record) -> StateDocument:
    status = oci_status(record)
    return {
        "ociVersion": OCI_VERSION,
        "id": record.id,
        "pid": record.shim_pid if status != "stopped" else 0,
        "status": status,
        "bundle": record.bundle,
        "rootfs": record.rootfs,
        "created": record.created,
        "owner": "",
        "annotations": record.annotations,
    }


def hook_state(record: Record, status: str) -> HookState:
    return {
        "ociVersion": OCI_VERSION,
        "id": record.id,
        "status": status,
        "pid": record.shim_pid,
        "bundle": record.bundle,
        "annotations": record.annotations,
    }
