"""Python children of this package (a pod daemon, a standby, the template
builder, vc-runtime's shim): their environment, this package importable even
without site-packages, and how a background one is started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def package_env() -> dict[str, str]:
    """Our environment, with this package importable by a child Python (the pod
    daemon, vc-runtime's shim) even when that child runs without site-packages."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def spawn_detached(
    module: str, args: list[str], log_fd: int, pass_fds: tuple[int, ...] = ()
) -> None:
    """Start ``python -m module args`` with ``setsid -f``: nobody's child, in a
    session of its own, so it outlives its starter and nobody waits for it;
    its output goes to *log_fd*.  Raises OSError, subprocess.CalledProcessError."""
    subprocess.run(
        ["setsid", "-f", sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        pass_fds=pass_fds,
        env=package_env(),
        check=True,
        timeout=10,
    )
