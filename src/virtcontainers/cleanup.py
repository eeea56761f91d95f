"""What a stopped pod must not leave on the host, released in one place.

The pod's daemon calls :func:`release_run_files` when it tears the pod down;
an API caller calls it too when it finds a pod whose daemon died.
"""

from __future__ import annotations

import shutil

from virtcontainers.shareddir import SharedDir
from virtcontainers.store import PodPaths


def release_run_files(paths: PodPaths) -> None:
    """Detach the shared directory; remove the VM's sockets and logs and the daemon socket."""
    SharedDir(paths).detach()
    shutil.rmtree(paths.vm, ignore_errors=True)
    paths.socket.unlink(missing_ok=True)
