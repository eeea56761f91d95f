"""The environment of a Python child of this package (a pod daemon, a standby,
vc-runtime's shim): this package importable even without site-packages."""

from __future__ import annotations

import os
from pathlib import Path


def package_env() -> dict[str, str]:
    """Our environment, with this package importable by a child Python (the pod
    daemon, vc-runtime's shim) even when that child runs without site-packages."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env
