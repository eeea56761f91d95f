"""The daemon's launcher: a child Python finds this package without site-packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from virtcontainers.host.pythonenv import package_env


def test_package_env_makes_this_package_importable_without_site() -> None:
    env = package_env()
    first = Path(env["PYTHONPATH"].split(":")[0])
    assert (first / "virtcontainers" / "__init__.py").is_file()
    out = subprocess.run(
        [sys.executable, "-S", "-c", "import virtcontainers.daemon.calls as c; print(c.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith(str(first))
