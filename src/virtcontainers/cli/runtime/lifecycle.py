"""A container's life in vc-runtime's ``--root``: made (its record claimed,
its pod or its place in a sandbox's pod, its pid-file shim, its hooks),
started, and unmade again, whatever step a create was killed at.  The
commands (create.py, control.py, observe.py, exec.py) are made of these.
"""

from __future__ import annotations

import contextlib
import datetime
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from virtcontainers import api
from virtcontainers.cli.runtime import rootdisk
from virtcontainers.cli.runtime.pidshim import ShimRequest
from virtcontainers.cli.runtime.process import check_console, start_shim, write_pid_file
from virtcontainers.cli.runtime.state import (
    Options,
    Record,
    RuntimeCommandError,
    creates_serialised,
    log_event,
    oci_status,
)
from virtcontainers.config import PodConfig
from virtcontainers.errors import ExistsError, NotFoundError, StateError
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cgroup import HostCgroup
from virtcontainers.ids import validate_id
from virtcontainers.states import ContainerState, PodState
from virtcontainers.storage import blockdev
from virtcontainers.storage.blockdev import BlockMount

if TYPE_CHECKING:
    from virtcontainers.oci.bundle import Bundle
    from virtcontainers.oci.namespaces import Peer


def options_of(ctx: click.Context) -> Options:
    options = ctx.obj
    assert isinstance(options, Options)
    return options


def records_of(options: Options, quiet: bool = False) -> list[Record]:
    """Every container of this --root; an unreadable one is reported, not hidden
    (unless ``quiet``)."""
    records = []
    root = options.root
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            records.append(Record.load(root, entry.name))
        except (RuntimeCommandError, ValueError, TypeError) as exc:
            if quiet:
                continue
            message = f"container {entry.name}: unreadable state in {entry}: {exc}"
            log_event(options, "warning", message)
            click.echo(f"vc-runtime: {message} (`delete --force` removes it)", err=True)
    return records


def create_container(
    options: Options,
    container_id: str,
    bundle_dir: Path,
    pid_file: Path | None,
    console_socket: Path | None,
    preserve_fds: int,
) -> tuple[Record, subprocess.Popen[bytes]]:
    from virtcontainers import oci

    validate_id("container", container_id)
    bundle = _load_bundle(options, container_id, bundle_dir, preserve_fds)
    config = bundle.container_config(container_id)
    check_console(config.cmd.terminal, console_socket)
    owns_pod = bundle.role is not oci.PodRole.CONTAINER
    root_disk = rootdisk.block_rootfs_at(bundle.rootfs) if owns_pod else None
    if root_disk is not None:
        config = blockdev.on_the_device(config, root_disk.device, root_disk.fstype)
    pod_id = container_id if bundle.sandbox_id is None else bundle.sandbox_id
    if not owns_pod and api.pod_status(pod_id).state is not PodState.RUNNING:
        raise RuntimeCommandError(f"sandbox {pod_id} of container {container_id} is not running")
    record = _new_record(container_id, pod_id, bundle, owns_pod, root_disk)
    # Claimed first: a create killed from here on leaves a record that state,
    # delete --force and a retried create can see.
    _claim(options, record)
    try:
        pod_config = bundle.pod_config(pod_id) if owns_pod else None
        if root_disk is not None and pod_config is not None:
            rootdisk.move_aside(root_disk)
            pod_config = blockdev.with_a_disk_slot(pod_config)
        if pod_config is not None:
            _create_own_pod(record, pod_config)
        request: ShimRequest = {"pod_id": pod_id, "container": config.to_dict()}
        shim = start_shim(request, console_socket)
        if pod_config is not None and pod_config.cgroup is not None:
            # The engine counts the shim with the pod, as it would runc's process.
            HostCgroup(pod_config.cgroup).enter(shim.pid)
        record.shim_pid = shim.pid
        record.creator = None
        record.save(options.root)
        for stage in ("prestart", "createRuntime", "createContainer"):
            record.run_hooks(stage, "created")
        if pid_file is not None:
            write_pid_file(pid_file, shim.pid)
    except ForeignPodError:
        record.remove(options.root)
        raise
    except BaseException:
        destroy(record, force=True)
        record.remove(options.root)
        raise
    return record, shim


def _load_bundle(
    options: Options, container_id: str, bundle_dir: Path, preserve_fds: int
) -> Bundle:
    """The bundle, its namespace paths resolved; what it cannot give a VM is logged."""
    from virtcontainers import oci

    bundle = oci.load_bundle(bundle_dir.resolve()).resolve_namespaces(_peer_finder(options))
    for warning in bundle.warnings:
        log_event(options, "warning", f"{container_id}: {warning}")
    if preserve_fds:
        log_event(options, "warning", f"{container_id}: --preserve-fds cannot reach a VM; ignored")
    return bundle


def _new_record(
    container_id: str,
    pod_id: str,
    bundle: Bundle,
    owns_pod: bool,
    root_disk: BlockMount | None,
) -> Record:
    """The container's record as create first claims it (its creator still running)."""
    return Record(
        id=container_id,
        pod_id=pod_id,
        bundle=str(bundle.path),
        rootfs=str(bundle.rootfs),
        created=datetime.datetime.now(datetime.UTC).isoformat(),
        owns_pod=owns_pod,
        annotations=dict(bundle.spec.get("annotations") or {}),
        hooks=dict(bundle.spec.get("hooks") or {}),
        creator=hostproc.current().to_record(),
        moved_mount=root_disk.to_dict() if root_disk is not None else None,
    )


def _peer_finder(options: Options) -> Callable[[int], Peer | None]:
    """Finds the container of this --root whose pid (its shim's, as ``state``
    reports it) a namespace path names, if it still exists."""
    from virtcontainers.oci.namespaces import Peer

    def find(pid: int) -> Peer | None:
        for record in records_of(options, quiet=True):
            if record.shim_pid == pid and oci_status(record) in ("created", "running", "paused"):
                return Peer(container_id=record.id, pod_id=record.pod_id)
        return None

    return find


class ForeignPodError(RuntimeCommandError):
    """The container's own pod exists already: another's, which a failed create
    must leave alone."""


def _claim(options: Options, record: Record) -> None:
    """Make the id ours, atomically; refuse an id in use."""
    with creates_serialised(options.root):
        _reclaim_or_refuse(options, record.id)
        if not record.claim(options.root):
            raise RuntimeCommandError(f"container with id exists: {record.id}")


def _create_own_pod(record: Record, pod_config: PodConfig) -> None:
    """Create and start the container's pod; a pod of that id that someone else
    made is left alone (run_pod's create refuses it before anything starts)."""
    try:
        api.run_pod(pod_config)
    except ExistsError:
        raise ForeignPodError(
            f"container {record.id}: a pod {record.pod_id} exists already, not made by "
            "this create; delete it first (virtc pod delete)"
        ) from None


def _reclaim_or_refuse(options: Options, container_id: str) -> None:
    """Clean up after a create of this id that was killed; refuse an id in use."""
    try:
        record = Record.load(options.root, container_id)
    except RuntimeCommandError:
        return
    if not record.abandoned():
        raise RuntimeCommandError(f"container with id exists: {container_id}")
    log_event(options, "warning", f"{container_id}: cleaning up after a create that was killed")
    destroy(record, force=True)
    record.remove(options.root)


def destroy(record: Record, force: bool) -> None:
    """Remove the container from its pod, and the pod if it is the container's own
    (then put back the caller's mount of its rootfs, if it was moved aside)."""
    if record.owns_pod:
        with contextlib.suppress(NotFoundError):
            api.delete_pod(record.pod_id, force=True)
        if record.moved_mount is not None:
            rootdisk.put_back(BlockMount.from_dict(record.moved_mount))
        return
    with contextlib.suppress(NotFoundError, StateError):
        status = api.container_status(record.pod_id, record.id)
        if status.state in (ContainerState.RUNNING, ContainerState.PAUSED) and force:
            api.kill_container(record.pod_id, record.id, signal.SIGKILL, all_processes=True)
            api.wait_container(record.pod_id, record.id, timeout=30)
        api.delete_container(record.pod_id, record.id)


def clean_up_on_sigterm() -> None:
    """Engines send SIGTERM when a create takes too long: undo it, as on any failure."""

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def start_created(record: Record) -> None:
    status = oci_status(record)
    if status != "created":
        if status == "stopped":
            raise RuntimeCommandError("cannot start a container that has stopped")
        raise RuntimeCommandError(f"cannot start an already {status} container")
    record.run_hooks("startContainer", "created")
    api.start_container(record.pod_id, record.id)
    record.run_hooks("poststart", "running")


def delete_record(options: Options, record: Record, force: bool) -> None:
    status = oci_status(record)
    if status in ("running", "paused") and not force:
        raise RuntimeCommandError(
            f"cannot delete container {record.id} that is not stopped: {status}"
        )
    destroy(record, force=True)
    record.remove(options.root)
    record.run_hooks("poststop", "stopped")
