"""What a stopped pod must not leave on the host, released in one place.

The pod's daemon calls :func:`release_run_files` when it tears the pod down;
an API caller calls it too when it finds a pod whose daemon died.
:func:`remove_pod_files` deletes a stopped pod for ``delete_pod``, and for a
daemon whose owner process went away.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from virtcontainers import mounts
from virtcontainers.errors import VcError
from virtcontainers.shareddir import SharedDir
from virtcontainers.store import PodPaths


def release_run_files(paths: PodPaths, keep_socket: bool = False) -> None:
    """Detach the shared directory; remove the VM's sockets and logs and the daemon
    socket (unless the daemon still serves on it: it removes it when it exits).
    The console log is kept beside the pod's record, until it is deleted."""
    SharedDir(paths).detach()
    with contextlib.suppress(FileNotFoundError):
        os.replace(paths.vm / "console.log", paths.console)
    shutil.rmtree(paths.vm, ignore_errors=True)
    if not keep_socket:
        paths.socket.unlink(missing_ok=True)


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
    shutil.rmtree(paths.root)
