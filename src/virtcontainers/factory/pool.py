"""A pool of waiting clones: VMs restored from a template before any pod asks.

A **standby** (:mod:`virtcontainers.daemon.standby`) is a pod daemon without
a pod yet: it has restored a clone of one template, connected to its agent
and mounted its shared directory, and waits on ``claim.sock`` in its
directory ``<run root>/standby/<key>-<hex>/``.  A pod that starts offers
itself to the ready standbys (:func:`claim`); the first whose template fits
the pod takes it over, renames its VM's directories into the pod's, and
serves the pod from then on, as the daemon :func:`~virtcontainers.daemon.launcher.spawn`
would have started.  The pod's start then skips the daemon's start, the
restore and the mount.

How many standbys to keep per template is the factory's ``pool.json``
(``virtc factory pool --size N``; 0, the default: no pool).  A claimed
standby starts its replacement.  ``$VC_POOL`` off (0, no, false, off) makes
pods neither claim nor refill (the tests' default).

Importing this module is cheap: every pod start asks it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import ConfigError
from virtcontainers.host import proc as hostproc
from virtcontainers.host.pythonenv import spawn_detached
from virtcontainers.records import ProcessRef
from virtcontainers.store import write_json_atomic

ENV_POOL = "VC_POOL"
ENV_FACTORY_DIR = "VC_FACTORY_DIR"
POOL_FILE = "pool.json"
STANDBY_DIR = "standby"
RECORD = "standby.json"
CLAIM_SOCKET = "claim.sock"
LOG = "standby.log"
MAX_POOL_SIZE = 16
CLAIM_TIMEOUT = 5.0
STARTING_GRACE = 120.0
"""A standby directory with no record this long after its creation is a dead start."""
_OFF = {"0", "no", "false", "off"}


def factory_root(store_root: Path) -> Path:
    """The factory directory of pods under *store_root*
    (:func:`~virtcontainers.factory.templates.factory_dir`, without its imports)."""
    env = os.environ.get(ENV_FACTORY_DIR)
    return Path(env) if env else store_root / "factory"


def pool_enabled() -> bool:
    return os.environ.get(ENV_POOL, "1").strip().lower() not in _OFF


def pool_size(factory_root: Path) -> int:
    """Standbys to keep per template (0: none; a missing or unreadable file: 0)."""
    try:
        data = json.loads((factory_root / POOL_FILE).read_text())
    except (OSError, ValueError):
        return 0
    size = data.get("size") if isinstance(data, dict) else None
    return size if isinstance(size, int) and 0 <= size <= MAX_POOL_SIZE else 0


def set_pool_size(factory_root: Path, size: int) -> None:
    if not 0 <= size <= MAX_POOL_SIZE:
        raise ConfigError("pool size", f"{size}: must be 0 to {MAX_POOL_SIZE}")
    factory_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json_atomic(factory_root / POOL_FILE, {"size": size})


def standby_root(store_root: Path) -> Path:
    return store_root / STANDBY_DIR


@dataclass(frozen=True)
class StandbyInfo:
    """One standby, as its directory and record say."""

    path: Path
    key: str
    factory: Path | None
    daemon: ProcessRef | None
    vm: ProcessRef | None
    ready: bool

    @property
    def alive(self) -> bool:
        if self.daemon is not None:
            return hostproc.alive(self.daemon)
        try:  # no record yet: starting, unless that began long ago
            return time.time() - self.path.stat().st_mtime < STARTING_GRACE
        except FileNotFoundError:
            return False


def standbys(store_root: Path) -> list[StandbyInfo]:
    root = standby_root(store_root)
    try:
        entries = sorted(e for e in root.iterdir() if e.is_dir() and not e.is_symlink())
    except FileNotFoundError:
        return []
    return [_info(entry) for entry in entries]


def _info(path: Path) -> StandbyInfo:
    key = path.name.rpartition("-")[0]
    try:
        data = json.loads((path / RECORD).read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        return StandbyInfo(path, key, None, None, None, False)
    factory = data.get("factory")
    return StandbyInfo(
        path,
        key,
        Path(factory) if isinstance(factory, str) else None,
        ProcessRef.from_record(data.get("daemon")),
        ProcessRef.from_record(data.get("vm")),
        data.get("ready") is True,
    )


def write_record(path: Path, factory: Path, vm: ProcessRef | None, ready: bool) -> None:
    write_json_atomic(
        path / RECORD,
        {
            "factory": str(factory),
            "daemon": hostproc.current().to_record(),
            "vm": vm.to_record() if vm is not None else None,
            "ready": ready,
        },
    )


@contextlib.contextmanager
def _pool_lock(store_root: Path) -> Iterator[None]:
    root = standby_root(store_root)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield None
    finally:
        os.close(fd)


def fill(store_root: Path, factory_root: Path, key: str) -> int:
    """Start standbys of template *key* until the pool holds its size; returns
    how many were started (each runs on in the background)."""
    if not pool_enabled():
        return 0
    size = pool_size(factory_root)
    if size == 0:
        return 0
    with _pool_lock(store_root):
        have = [
            s
            for s in standbys(store_root)
            if s.key == key and s.alive and s.factory in (None, factory_root)
        ]
        started = 0
        for _ in range(size - len(have)):
            _start(store_root, factory_root, key)
            started += 1
    return started


def _start(store_root: Path, factory_root: Path, key: str) -> None:
    directory = standby_root(store_root) / f"{key}-{secrets.token_hex(3)}"
    directory.mkdir(mode=0o700)
    log = os.open(directory / LOG, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    args = ["--root", str(store_root), "--factory", str(factory_root), "--dir", str(directory)]
    try:
        spawn_detached("virtcontainers.daemon.standby", args, log)
    except BaseException:
        with contextlib.suppress(OSError):
            (directory / LOG).unlink()
            directory.rmdir()
        raise
    finally:
        os.close(log)


def claim(
    store_root: Path,
    factory_root: Path,
    pod_id: str,
    fds: list[int],
    owner: ProcessRef | None,
    debug: bool,
) -> bool:
    """Offer pod *pod_id* (state starting, its lock held) to the ready standbys;
    True once one has taken it over.  *fds*: the ready pipe, the pod's lock
    and its daemon log, which the standby keeps as a spawned daemon would."""
    if not pool_enabled():
        return False
    message = json.dumps(
        {
            "pod": pod_id,
            "owner": f"{owner.pid}:{owner.start_time}" if owner is not None else None,
            "debug": debug,
        }
    ).encode()
    try:
        waiting = [s for s in standbys(store_root) if s.ready and s.factory == factory_root]
    except OSError:  # an unreadable pool is no pool: the pod's own daemon boots it
        return False
    return any(_offer(standby, message, fds) for standby in waiting)


def _offer(standby: StandbyInfo, message: bytes, fds: list[int]) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLAIM_TIMEOUT)
        try:
            sock.connect(str(standby.path / CLAIM_SOCKET))
            socket.send_fds(sock, [message + b"\n"], fds)
            answer = sock.makefile("rb").readline(4096)
        except OSError:
            return False
    try:
        reply = json.loads(answer)
    except ValueError:
        return False
    return isinstance(reply, dict) and reply.get("ok") is True


def stop(store_root: Path, key: str | None = None, factory: Path | None = None) -> list[str]:
    """Stop the standbys (of one template, or all; of one factory, or any)
    and remove what dead ones left; returns the names of those stopped or
    removed."""
    done = []
    for standby in standbys(store_root):
        if (key is not None and standby.key != key) or (
            factory is not None and standby.factory != factory
        ):
            continue
        if standby.daemon is not None and hostproc.kill(standby.daemon, signal.SIGTERM):
            _wait_gone(standby.daemon)
        remove_dead(standby)
        done.append(standby.path.name)
    _tidy(store_root)
    return done


def collect(store_root: Path) -> list[str]:
    """Remove what dead standbys left (their VM, mounts and directory)."""
    removed = [s.path.name for s in standbys(store_root) if not s.alive and remove_dead(s)]
    _tidy(store_root)
    return removed


def _tidy(store_root: Path) -> None:
    """The pool's directory goes with its last standby."""
    root = standby_root(store_root)
    with contextlib.suppress(OSError), _pool_lock(store_root):
        if not standbys(store_root):
            (root / ".lock").unlink(missing_ok=True)
            root.rmdir()


def remove_dead(standby: StandbyInfo) -> bool:
    """Kill a dead standby's VM, detach its mounts, remove its directory."""
    if standby.daemon is not None and hostproc.alive(standby.daemon):
        return False
    from virtcontainers.host.cleanup import release_run_files
    from virtcontainers.storage.removal import remove_tree
    from virtcontainers.store import PodPaths

    if standby.vm is not None:
        hostproc.kill(standby.vm)
    if standby.path.exists():  # a standby that ended by itself removed it
        release_run_files(PodPaths(standby.path))
        with contextlib.suppress(FileNotFoundError):
            remove_tree(standby.path, f"standby {standby.path.name}")
    return True


def _wait_gone(process: ProcessRef, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while hostproc.alive(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    if hostproc.alive(process):
        hostproc.kill(process)
