"""What a stopped pod must not leave on the host, released in one place.

The pod's daemon calls :func:`release_run_files` when it tears the pod down;
an API caller calls it too when it finds a pod whose daemon died.
:func:`remove_pod_files` deletes a stopped pod for ``delete_pod``, and for a
daemon whose owner process went away.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from virtcontainers.cgroupconfig import CgroupConfig
from virtcontainers.errors import VcError
from virtcontainers.host.cgroup import HostCgroup
from virtcontainers.storage import mounts
from virtcontainers.storage.removal import remove_tree
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.store import PodPaths


def release_run_files(paths: PodPaths, keep_socket: bool = False) -> None:
    """Release the pod's network; detach the shared directory; remove the VM's
    sockets and logs and the daemon socket (unless the daemon still serves on it:
    it removes it when it exits).  The console log is kept beside the pod's
    record, until it is deleted.

    Everything is tried; a network or host cgroup that cannot be released is
    reported last, as a VcError, and its description kept for a later try.
    """
    network_error: VcError | None = None
    try:
        release_network(paths)
    except VcError as exc:
        network_error = exc
    try:
        release_cgroup(paths)
    except VcError as exc:
        network_error = network_error or exc
    SharedDir(paths).detach()
    with contextlib.suppress(FileNotFoundError):
        os.replace(paths.vm / "console.log", paths.console)
    shutil.rmtree(paths.vm, ignore_errors=True)
    if not keep_socket:
        paths.socket.unlink(missing_ok=True)
    if network_error is not None:
        raise network_error


def release_cgroup(paths: PodPaths) -> None:
    """Remove the pod's host cgroup, once its processes are gone."""
    description = _description(paths, paths.cgroup)
    if description is not None:
        HostCgroup(CgroupConfig.from_dict(description)).remove()
        paths.cgroup.unlink()


def release_network(paths: PodPaths) -> None:
    """Remove the taps and qdiscs that the pod made in its network namespace.

    The description stays when something could not be removed, so that a later
    clean-up (a delete, ``virtc gc``) tries again.
    """
    description = _description(paths, paths.network)
    if description is None:
        return
    # pyroute2 costs ≈0.3 s to import: only pods that have a network pay for it.
    from virtcontainers.network.podnetwork import release

    release(description if isinstance(description, dict) else {})
    paths.network.unlink()


def _description(paths: PodPaths, path: Path) -> object:
    """What a pod wrote of something it made on the host, or None if nothing."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise VcError(f"pod {paths.root.name!r}: cannot read {path}: {exc}") from exc


def remove_pod_files(paths: PodPaths) -> None:
    """Delete everything of a stopped pod, never through a mount that is left."""
    release_run_files(paths)
    SharedDir(paths).remove()
    left = mounts.mounts_under(paths.root)
    if left:
        raise VcError(
            f"pod {paths.root.name!r}: not deleted, {', '.join(map(str, left))} still "
            "mounted under its directory; unmount them and delete again"
        )
    remove_tree(paths.root, f"pod {paths.root.name!r}")
