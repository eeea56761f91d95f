"""Host tools the image builder runs, with install hints in every error."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from virtcontainers.errors import ImageError

# Debian package that provides each external tool, named in error messages.
TOOL_PACKAGES: dict[str, str] = {
    "apt-cache": "apt",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "dpkg-query": "dpkg",
    "depmod": "kmod",
    "mksquashfs": "squashfs-tools",
    "ldd": "libc-bin",
    "ldconfig": "libc-bin",
    "chroot": "coreutils",
    "zstd": "zstd",
    "lz4": "lz4",
}

# Where Debian installs admin tools; root's PATH may lack them in minimal shells.
_SBIN_DIRS = ("/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """Return the absolute path of tool `name`, or None when it is not installed."""
    # depmod and ldconfig live in sbin, which a non-login root shell may lack.
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))


def require_tool(name: str) -> str:
    """Return the path of tool `name`.

    Raises:
        ImageError: the tool is missing; the message says which package to install.
    """
    found = find_tool(name)
    if found is None:
        package = TOOL_PACKAGES.get(name, name)
        raise ImageError(f"{name} not found: apt-get install {package}")
    return found


def run(argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run a host tool and return its stdout.

    The first element of `argv` is resolved with require_tool().

    Raises:
        ImageError: the tool is missing or exited with an error (its stderr is quoted).
    """
    exe = require_tool(argv[0])
    try:
        done = subprocess.run(
            [exe, *argv[1:]], cwd=cwd, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise ImageError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise ImageError(f"{what}: {argv[0]} exited with {done.returncode}: {detail}")
    return done.stdout
