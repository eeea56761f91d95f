"""Finding and removing what pods left behind (``virtc gc``, ``api.collect_garbage``).

Safe to run at any time beside live pods: a pod that another call holds is
left alone, a live pod's daemon, VM and files are never touched, and a
process is killed only through a pidfd after checking that it is not one
the pod's record names.  What it removes:

- pods whose daemon died: their VM is killed, their mounts and sockets
  released, and they are marked stopped (as any API call would);
- the mounts, sockets and VM files of pods that are not running;
- writable layers of containers that no longer exist;
- pod directories without a record, left by a create that was killed
  (once they are older than :data:`HALF_CREATED_AGE`);
- processes (daemons, QEMU, virtiofsd) started for a pod of this run root
  that is not running, or that its record does not name.

A process that hosts a pod's daemon on its own event loop (containerd's shim,
:mod:`virtcontainers.daemon.hosted`) is known by the record's ProcessRef
alone: its command line names no pod, so it is never taken for a stray (it
serves containerd after its pod has stopped).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from virtcontainers.errors import BusyError, CorruptRecordError, NotFoundError, VcError
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cleanup import release_run_files
from virtcontainers.ids import ID_PATTERN
from virtcontainers.records import PodRecord
from virtcontainers.states import PodState
from virtcontainers.storage import mounts
from virtcontainers.storage.removal import remove_tree
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.store import PodPaths, Store

ACTIVE = (PodState.STARTING, PodState.RUNNING, PodState.PAUSED)
HALF_CREATED_AGE = 60.0
"""A pod directory without a record younger than this may be a create under way."""


@dataclass
class GarbageReport:
    """What a collection did, one line per thing removed, and what it left."""

    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def collect(store: Store) -> GarbageReport:
    """Remove what the pods of ``store`` left behind (see the module docstring)."""
    report = GarbageReport()
    if not store.pods_dir.is_dir():
        return report
    for pod_dir in sorted(store.pods_dir.iterdir()):
        if pod_dir.is_dir():
            _collect_pod(store, pod_dir, report)
    _kill_stray_processes(store, report)
    return report


def _collect_pod(store: Store, pod_dir: Path, report: GarbageReport) -> None:
    pod_id = pod_dir.name
    if not (pod_dir / "state.json").exists():
        _remove_half_created(pod_dir, report)
        return
    try:
        with store.locked(pod_id, "collect the garbage of", timeout=0):
            record = store.load(pod_id)
            if _live(record):
                _remove_stale_layers(store, record, report)
                return
            if record.state in ACTIVE:
                if record.vm is not None and hostproc.kill(record.vm):
                    report.removed.append(f"pod {pod_id}: VM {record.vm.pid} of a dead daemon")
                record.mark_stopped("the pod daemon exited unexpectedly")
                store.save(record)
            _release(store, pod_id, report)
            _remove_stale_layers(store, record, report)
    except BusyError:
        report.left.append(f"pod {pod_id}: another call holds it")
    except (VcError, OSError) as exc:
        report.left.append(f"pod {pod_id}: {exc}")


def reconcile(store: Store, pod_id: str, held: bool = False) -> PodRecord:
    """Load a pod's record; if its daemon died, clean up and mark it stopped.

    ``held``: the caller holds the pod's lock.  Otherwise the clean-up takes
    the lock if it is free, and leaves the pod to the call under way if not.
    """
    record = store.load(pod_id)
    if not orphaned(record):
        return record
    if held:
        return release_orphan(store, record)
    try:
        with store.locked(pod_id, "check", timeout=0):
            record = store.load(pod_id)
            return release_orphan(store, record) if orphaned(record) else record
    except BusyError:
        return record


def cannot_reattach(record: PodRecord) -> str | None:
    """Why a new daemon cannot take over this orphaned pod's VM (None: it can).

    Only a VM that is gone, or a daemon that another process hosted, rules a
    pod out: its NICs and disks a new daemon serves again (the record and
    ``network.json`` say which NIC carries which interface, each disk's id
    follows from its container's config, QEMU says which root ports are taken).
    """
    if record.daemon_hosted:
        return "its daemon was hosted by another process (containerd's shim), whose owner cleans up"
    if record.vm is None or not hostproc.alive(record.vm):
        return "its VM is gone too"
    return None


def orphaned(record: PodRecord) -> bool:
    """A pod that should have a daemon, whose daemon is gone."""
    return record.state in ACTIVE and not _live(record)


def release_orphan(store: Store, record: PodRecord) -> PodRecord:
    why = cannot_reattach(record) or "the call did not ask for it"
    if record.vm is not None:
        hostproc.kill(record.vm)
    release_run_files(store.paths(record.id))
    record.mark_stopped(f"the pod daemon exited unexpectedly; not reattached: {why}")
    store.save(record)
    return record


def _live(record: PodRecord) -> bool:
    """A pod with a daemon that runs: nothing of it is garbage but deleted layers."""
    return record.state in ACTIVE and record.daemon is not None and hostproc.alive(record.daemon)


def _release(store: Store, pod_id: str, report: GarbageReport) -> None:
    """Mounts, sockets, VM files and network devices of a pod that is not running."""
    paths = store.paths(pod_id)
    layers = Path(os.path.realpath(paths.layers))  # mounted until the pod is deleted
    leftovers = [m for m in mounts.mounts_under(paths.root) if m != layers] or [
        path
        for path in (paths.socket, paths.vm, paths.guestfs, paths.network, paths.cgroup)
        if path.exists()
    ]
    if leftovers:
        release_run_files(paths)
        report.removed.append(f"pod {pod_id}: {', '.join(map(str, leftovers))}")


def _remove_stale_layers(store: Store, record: PodRecord, report: GarbageReport) -> None:
    layers = store.paths(record.id).layers
    if not layers.is_dir():
        return
    for layer in sorted(layers.iterdir()):
        if layer.name not in record.containers:
            SharedDir(store.paths(record.id)).remove_layer(layer.name)
            report.removed.append(f"pod {record.id}: the layer of deleted container {layer.name}")


def _remove_half_created(pod_dir: Path, report: GarbageReport) -> None:
    age = time.time() - pod_dir.stat().st_mtime
    if age < HALF_CREATED_AGE:
        report.left.append(f"pod {pod_dir.name}: no record yet (a create may be under way)")
        return
    SharedDir(PodPaths(pod_dir)).remove()  # mounts at the pod's own paths only
    if mounts.mounts_under(pod_dir):
        report.left.append(f"pod {pod_dir.name}: no record, but mounts under {pod_dir}")
        return
    remove_tree(pod_dir, f"pod {pod_dir.name!r}")
    report.removed.append(f"pod {pod_dir.name}: a directory without a record, {pod_dir}")


def _kill_stray_processes(store: Store, report: GarbageReport) -> None:
    """Processes started for a pod of this run root that is not running.

    A pod that another call holds (a boot under way) is left alone, and so
    are the processes of a pod whose daemon runs.
    """
    for pid, argv, pod_id in _pod_processes(store):
        process = hostproc.of(pid)
        if process is not None and _stray(store, pod_id) and hostproc.kill(process):
            name = os.path.basename(argv[0].decode(errors="replace"))
            report.removed.append(f"pod {pod_id}: stray process {pid} ({name})")


def kill_processes_of(store: Store, pod_id: str) -> list[int]:
    """Kill every process whose argv names this pod's files (QEMU, virtiofsd):
    for a forced stop, once its daemon is dead.  QEMU outlives its daemon, and
    a daemon killed between launching QEMU and recording it leaves a VM that
    no record names."""
    killed = []
    for pid, _argv, of_pod in _pod_processes(store):
        if of_pod != pod_id:
            continue
        process = hostproc.of(pid)
        if process is not None and hostproc.kill(process):
            killed.append(pid)
    return killed


def _stray(store: Store, pod_id: str) -> bool:
    """Whether the processes of this pod are garbage: it is gone, or not running."""
    if not store.paths(pod_id).root.is_dir():
        return True
    try:
        with store.locked(pod_id, "collect the garbage of", timeout=0):
            return not _pod_is_live(store, pod_id)
    except (BusyError, NotFoundError):
        return False


def _pod_is_live(store: Store, pod_id: str) -> bool:
    try:
        return _live(store.load(pod_id))
    except (NotFoundError, CorruptRecordError):
        return False


def _pod_processes(store: Store) -> Iterator[tuple[int, list[bytes], str]]:
    """Other processes whose argv names a pod of this run root: pid, argv, pod."""
    for pid, argv in _processes():
        pod_id = _pod_of(argv, store)
        if pod_id is not None and pid != os.getpid():
            yield pid, argv, pod_id


def _processes() -> list[tuple[int, list[bytes]]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        found.append((int(entry), argv))
    return found


def _pod_of(argv: list[bytes], store: Store) -> str | None:
    """The pod of this run root whose files ``argv`` names (QEMU, virtiofsd), or
    whose daemon it is; None for any other process."""
    marker = os.fsencode(f"{store.pods_dir}/")
    found: bytes | None = None
    for arg in argv:
        start = arg.find(marker)
        if start >= 0:
            found = arg[start + len(marker) :].split(b"/", 1)[0]
            break
    else:
        if b"virtcontainers.daemon" in argv and _option(argv, b"--root") == os.fsencode(store.root):
            found = _option(argv, b"--pod")
    pod_id = found.decode(errors="replace") if found else None
    return pod_id if pod_id is not None and ID_PATTERN.match(pod_id) else None


def _option(argv: list[bytes], name: bytes) -> bytes | None:
    if name in argv and argv.index(name) + 1 < len(argv):
        return argv[argv.index(name) + 1]
    return None
